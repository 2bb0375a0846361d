"""Graphs written the way people write them keep their shape when imported: each workflow's decision hubs,
endings and paths are checked against the graph LangGraph itself draws (``get_graph()``), counted with networkx.
Also: finding the graph in a file, and a conversion that would lose part of the shape refused in one line."""

import re
import textwrap
from pathlib import Path
from typing import Literal, TypedDict

import pytest

pytest.importorskip("langgraph")

import networkx as nx  # noqa: E402
from langchain_core.messages import AIMessage  # noqa: E402
from langchain_core.tools import tool  # noqa: E402
from langgraph.graph import END, START, StateGraph  # noqa: E402
from langgraph.prebuilt import ToolNode, tools_condition  # noqa: E402
from langgraph.types import Command, interrupt  # noqa: E402

from subterra import enumerate_paths  # noqa: E402
from subterra.cli import main  # noqa: E402
from subterra.importers import GraphImportError, import_langgraph, load_graph  # noqa: E402
from subterra.workflow import parse_workflow  # noqa: E402

GRAPHS = Path(__file__).parent / "graphs"


class Chat(TypedDict, total=False):
    messages: list
    intent: str
    order_id: str


class ChatModel:
    def invoke(self, messages):
        return AIMessage("Sure, let me help.")


llm = ChatModel()


@tool
def order_status(order: str) -> str:
    """The status of an order."""
    return "shipped"


def own_shape(graph, inner=()):
    """Routers, ways to END and start-to-end walks of the graph LangGraph draws (an acyclic one); ``inner``:
    tool steps called in a loop, the calling step's own work."""
    drawn = nx.DiGraph()
    drawn.add_edges_from((e.source, e.target) for e in graph.get_graph().edges
                         if e.source not in inner and e.target not in inner)
    routers = {n: drawn.out_degree(n) for n in drawn if drawn.out_degree(n) > 1}
    endings = sorted(drawn.predecessors(END))
    return routers, endings, len(list(nx.all_simple_paths(drawn, START, END)))


def filled(text):
    """The imported file with every TODO filled in, as a person would."""
    return re.sub(r'"TODO:[^"]*"', '"Filled in."', text)


# --------------------------------------------------------------------------- the family of shapes

def chat_model_graph():
    """Nodes that call a chat model (no docstrings), a router that compares a state field."""
    def greet(state: Chat):
        return {"messages": [llm.invoke(state["messages"])]}

    def customer(state: Chat):
        return {"messages": [interrupt("waiting")]}

    def route(state: Chat) -> Literal["refund", "question"]:
        return "refund" if state["intent"] == "refund" else "question"

    def refund(state: Chat):
        return {"messages": [llm.invoke(state["messages"])]}

    def answer(state: Chat):
        return {"messages": [llm.invoke(state["messages"])]}

    builder = StateGraph(Chat)
    for node in (greet, customer, refund, answer):
        builder.add_node(node.__name__, node)
    builder.add_edge(START, "greet")
    builder.add_edge("greet", "customer")
    builder.add_conditional_edges("customer", route, {"refund": "refund", "question": "answer"})
    builder.add_edge("refund", END)
    builder.add_edge("answer", END)
    return builder.compile()


def tool_lookup_graph():
    """A ToolNode look-up between the customer's turn and the answer."""
    def greet(state: Chat):
        """Greet the customer and ask for the order number."""
        return {}

    def customer(state: Chat):
        return {"messages": [interrupt("order number")]}

    def answer(state: Chat):
        """Tell the customer where the order is."""
        return {}

    builder = StateGraph(Chat)
    builder.add_node("greet", greet)
    builder.add_node("customer", customer)
    builder.add_node("lookup", ToolNode([order_status]))
    builder.add_node("answer", answer)
    builder.add_edge(START, "greet")
    builder.add_edge("greet", "customer")
    builder.add_edge("customer", "lookup")
    builder.add_edge("lookup", "answer")
    builder.add_edge("answer", END)
    return builder.compile()


def end_branch_graph():
    """A router with a branch straight to END."""
    def greet(state: Chat):
        """Greet the customer."""
        return {}

    def customer(state: Chat):
        return {"messages": [interrupt("request")]}

    def route(state: Chat) -> Literal["help", "leave"]:
        """Whether the customer stays.

        help: The customer asks for help.
        leave: The customer says goodbye and leaves.
        """
        return "leave" if state["intent"] == "bye" else "help"

    def help_out(state: Chat):
        """Help with the request."""
        return {}

    builder = StateGraph(Chat)
    for node in (greet, customer, help_out):
        builder.add_node(node.__name__, node)
    builder.add_edge(START, "greet")
    builder.add_edge("greet", "customer")
    builder.add_conditional_edges("customer", route, {"help": "help_out", "leave": END})
    builder.add_edge("help_out", END)
    return builder.compile()


def mid_interrupt_graph():
    """An interrupt() in the middle of a node's work, then a router without a docstring."""
    def take_order(state: Chat):
        """Ask for the order number and check it."""
        known = state.get("order_id")
        order = interrupt("Which order is it about?")
        return {"order_id": order or known}

    def route(state: Chat) -> Literal["found", "missing"]:
        return "found" if state.get("order_id") else "missing"

    def found(state: Chat):
        """Say the order is on its way."""
        return {"messages": [AIMessage("It is on its way.")]}

    def transfer(state: Chat):
        """Say the order cannot be found and hand the chat to a colleague."""
        return {"messages": [AIMessage("I cannot find it; a colleague will help.")]}

    builder = StateGraph(Chat)
    for node in (take_order, found, transfer):
        builder.add_node(node.__name__, node)
    builder.add_edge(START, "take_order")
    builder.add_conditional_edges("take_order", route, {"found": "found", "missing": "transfer"})
    builder.add_edge("found", END)
    builder.add_edge("transfer", END)
    return builder.compile()


def silent_endings_graph():
    """Endings that say nothing yet (no docstring, no message) after a router without a docstring."""
    def customer(state: Chat):
        return {"messages": [interrupt("request")]}

    def route(state: Chat) -> Literal["done", "escalate"]:
        return "escalate" if state["intent"] == "complaint" else "done"

    def done(state: Chat):
        return {}

    def escalate(state: Chat):
        return {}

    builder = StateGraph(Chat)
    for node in (customer, done, escalate):
        builder.add_node(node.__name__, node)
    builder.add_edge(START, "customer")
    builder.add_conditional_edges("customer", route, {"done": "done", "escalate": "escalate"})
    builder.add_edge("done", END)
    builder.add_edge("escalate", END)
    return builder.compile()


def command_graph():
    """Command(goto=...) routing, its targets in the return type."""
    def customer(state: Chat):
        return {"messages": [interrupt("request")]}

    def triage(state: Chat) -> Command[Literal["billing", "cancel_order"]]:
        """Read the request and pass it on."""
        if state["intent"] == "cancel":
            return Command(goto="cancel_order")
        return Command(goto="billing", update={"messages": [AIMessage("Let me look at your bill.")]})

    def billing(state: Chat):
        """Explain the bill."""
        return {}

    def cancel_order(state: Chat):
        """Cancel the order and say goodbye."""
        return {}

    builder = StateGraph(Chat)
    for node in (customer, triage, billing, cancel_order):
        builder.add_node(node.__name__, node)
    builder.add_edge(START, "customer")
    builder.add_edge("customer", "triage")
    builder.add_edge("billing", END)
    builder.add_edge("cancel_order", END)
    return builder.compile()


def support_graph():
    return load_graph(GRAPHS / "support.py").graph


SHAPES = {   # graph, its tool steps called in a loop, the endings' kinds
    "docstring skeleton": (support_graph, (), {"close_chat": "success", "hand_over": "escalation"}),
    "chat model": (chat_model_graph, (), {"refund": "success", "answer": "success"}),
    "ToolNode look-up": (tool_lookup_graph, (), {"answer": "success"}),
    "branch to END": (end_branch_graph, (), {"help_out": "success", "leave": "abandonment"}),
    "interrupt mid-node": (mid_interrupt_graph, (), {"found": "success", "transfer": "escalation"}),
    "silent endings": (silent_endings_graph, (), {"done": "success", "escalate": "escalation"}),
    "Command routing": (command_graph, (), {"billing": "success", "cancel_order": "abandonment"}),
}


@pytest.mark.parametrize("shape", SHAPES)
def test_each_shape_keeps_its_hubs_endings_and_paths(shape):
    build, inner, kinds = SHAPES[shape]
    graph = build()
    routers, endings, walks = own_shape(graph, inner)
    imported = import_langgraph(graph, "shape")
    workflow = parse_workflow(filled(imported.text))      # valid once its TODOs are filled
    hubs = {h: len(workflow.successors(h)) for h in workflow.decision_hubs}
    assert sorted(hubs.values()) == sorted(routers.values())
    assert len(workflow.terminals) == len(endings) and workflow.terminals == kinds
    assert len(enumerate_paths(workflow)) == walks == imported.paths
    assert imported.losses == [] and imported.shape.walks == walks
    assert sorted(imported.shape.endings) == endings
    assert {node: len(targets) for node, targets in imported.shape.routers.items()} == routers


def test_a_tool_loop_is_the_calling_steps_own_work():
    def assistant(state: Chat):
        """Help the customer with their order."""
        return {"messages": [AIMessage("Your order has shipped.")]}

    builder = StateGraph(Chat)
    builder.add_node("assistant", assistant)
    builder.add_node("tools", ToolNode([order_status]))
    builder.add_edge(START, "assistant")
    builder.add_conditional_edges("assistant", tools_condition)
    builder.add_edge("tools", "assistant")
    graph = builder.compile()
    routers, endings, walks = own_shape(graph, inner=("tools",))
    imported = import_langgraph(graph, "tool_loop")
    assert imported.shape.inner == ["tools"] and routers == {} and walks == imported.paths == 1
    assert imported.decision_hubs == 0 and endings == ["assistant"]
    workflow = parse_workflow(filled(imported.text))      # the ToolNode's tool is the workflow's, the loop's caller calls it
    tool = workflow.tools["order_status"]
    assert (tool.description, tool.arguments, tool.results) == ("The status of an order.", ("order",),
                                                                ("order_status_result",))
    assert workflow.nodes["assistant"].call == "order_status"
    assert "'tools' (a ToolNode) gives the tool order_status, called by 'assistant'" in imported.notes


def test_silent_steps_that_carry_the_shape_are_kept():
    imported = import_langgraph(silent_endings_graph(), "silent")
    assert "'done' says nothing but is kept as an agent turn: it is the last step before the end" in imported.notes
    assert imported.decision_hubs == 1 and imported.paths == 2
    workflow = parse_workflow(filled(imported.text))
    assert {n.id: n.role for n in workflow.nodes.values()}["escalate"] == "agent"


def test_a_look_up_in_a_chain_is_merged():
    imported = import_langgraph(tool_lookup_graph(), "lookup")
    assert "'lookup' says nothing: merged into the steps around it" in imported.notes
    workflow = parse_workflow(filled(imported.text))
    assert "lookup" not in workflow.nodes
    assert list(workflow.tools) == ["order_status"] and workflow.nodes["answer"].call == "order_status"
    # what the tool returns is not in its code: a TODO to fill, named on its line
    assert any(field == "variables.order_status_result[0]" for _, field in imported.todos)


# --------------------------------------------------------------------------- the support graph

def test_a_skeleton_graph_imports_without_a_name(tmp_path, capsys):
    out = tmp_path / "support.yaml"
    assert main(["import-langgraph", str(GRAPHS / "support.py"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"{out}: 9 nodes, 1 decision hub, 2 paths")
    assert f"graph: {GRAPHS / 'support.py'}:build_graph (the one function in the file that builds a graph)" in printed
    assert "shape: the graph's 1 router, 2 ways to END, 2 walks: all kept" in printed
    workflow = parse_workflow(filled(out.read_text()))
    assert workflow.decision_hubs == ["look_up"] and len(enumerate_paths(workflow)) == 2
    assert workflow.terminals == {"close_chat": "success", "hand_over": "escalation"}
    assert workflow.nodes["look_up"].prompt == "Look up the customer's account and the answer to their question."


# --------------------------------------------------------------------------- finding the graph

def write(tmp_path, body):
    source = tmp_path / "graphs.py"
    source.write_text(textwrap.dedent('''
        from typing import TypedDict
        from langgraph.graph import END, START, StateGraph

        class S(TypedDict):
            x: int

        def step(state: S):
            """Say hello."""
            return {}

        def make(name="a"):
            builder = StateGraph(S)
            builder.add_node(name, step)
            builder.add_edge(START, name)
            builder.add_edge(name, END)
            return builder
        ''') + textwrap.dedent(body))
    return source


FINDING = {
    "one module graph": ("graph = make().compile()\n", "graphs.py:graph", "the one graph in the file"),
    "a builder and its graph": ("builder = make()\napp = builder.compile()\n", "graphs.py:app",
                                "the one graph in the file"),
    "a module graph before a factory": ("graph = make().compile()\ndef build():\n    return make().compile()\n",
                                        "graphs.py:graph", "the one graph in the file"),
}


@pytest.mark.parametrize("case", FINDING)
def test_the_files_graph_is_found_and_named(tmp_path, case):
    body, spec, how = FINDING[case]
    found = load_graph(write(tmp_path, body))
    assert found.spec == f"{tmp_path}/{spec}" and found.how == how


def test_a_function_with_arguments_is_no_factory(tmp_path):
    # make(name="a") builds a graph and can be called with no argument: it is the one factory
    assert load_graph(write(tmp_path, "")).spec.endswith("graphs.py:make")
    source = write(tmp_path, "def other(name):\n    return make(name)\n")      # needs an argument
    assert load_graph(source).spec.endswith("graphs.py:make")


REFUSED = {
    "two graphs": ("one = make().compile()\ntwo = make('b').compile()\n", "holds 2 graphs (one, two): name one as"),
    "two factories": ("def build():\n    return make().compile()\n", "holds no graph and 2 functions that build one "
                                                                     "(build(), make()): name one as"),
    "a factory that fails": ("def build():\n    builder = StateGraph(S)\n    raise RuntimeError('no database')\n"
                             "make = None\n",
                             "'build()' failed: RuntimeError: no database"),
    "nothing": ("make = None\n", "holds no graph and no function that builds one"),
}


@pytest.mark.parametrize("case", REFUSED)
def test_no_single_graph_is_refused_in_one_line(tmp_path, capsys, case):
    body, expected = REFUSED[case]
    source = write(tmp_path, body)
    assert main(["import-langgraph", str(source), "--out", str(tmp_path / "w.yaml")]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith(str(source)) and expected in err
    assert not (tmp_path / "w.yaml").exists()


# --------------------------------------------------------------------------- a conversion that would lose a branch

NESTED = '''
from typing import Literal, TypedDict
from langgraph.graph import END, START, StateGraph
from langgraph.types import interrupt

class S(TypedDict, total=False):
    messages: list
    paid: bool

def customer(state: S):
    return {"messages": [interrupt("request")]}

def refund(state: S):
    """Refund the charge."""
    return {}

def explain(state: S):
    """Explain the charge."""
    return {}

def paid(state: S) -> Literal["refund", "explain"]:
    return "refund" if state["paid"] else "explain"

inner = StateGraph(S)
inner.add_node("refund", refund)
inner.add_node("explain", explain)
inner.add_conditional_edges(START, paid, {"refund": "refund", "explain": "explain"})
inner.add_edge("refund", END)
inner.add_edge("explain", END)

def build():
    builder = StateGraph(S)
    builder.add_node("customer", customer)
    builder.add_node("billing", inner.compile())
    builder.add_edge(START, "customer")
    builder.add_edge("customer", "billing")
    builder.add_edge("billing", END)
    return builder.compile()
'''


def test_a_lossy_conversion_exits_non_zero_naming_what_is_lost(tmp_path, capsys):
    source = tmp_path / "nested.py"
    source.write_text(NESTED)
    out = tmp_path / "nested.yaml"
    assert main(["import-langgraph", f"{source}:build", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith(f"{source}:build: ")
    assert "'billing' is a subgraph with 1 router of its own, imported as one step" in err
    assert "--allow-lossy" in err and not out.exists()
    assert main(["import-langgraph", f"{source}:build", "--out", str(out), "--allow-lossy"]) == 0
    printed = capsys.readouterr().out
    assert "lost in part, written as --allow-lossy asks" in printed and "  lost: 'billing' is a subgraph" in printed
    assert "# Lost (imported with --allow-lossy" in out.read_text()
    with pytest.raises(GraphImportError, match="would not keep the graph's shape"):
        import_langgraph(str(source) + ":build")


def test_the_check_names_each_branch_ending_and_walk_a_merge_loses():
    """What importing did before shapes were kept — every silent step merged — is what the check catches."""
    from subterra.importers.building import classify, read_graph
    from subterra.importers.draft import Draft
    from subterra.importers.render import render
    from subterra.importers.shape import graph_shape, lost
    from subterra.importers.turns import contract, dedupe, ends

    graph = silent_endings_graph()
    d = Draft(graph, graph.builder, "silent", None, "You help.", None, "silent.py")
    read_graph(d)
    classify(d)
    shape = graph_shape(graph.builder, d.silent)
    for name in ("done", "escalate"):
        contract(d, d.turns[name], d.into(name), d.out(name))
    dedupe(d)
    ends(d)
    d.system_text = "You help."
    losses = lost(shape, d, parse_workflow(render(d, fill=True)[0]))
    merged = "('done': it says nothing: merged into the steps around it; 'escalate': it says nothing: merged"
    assert losses[0].startswith(f"the router at 'customer' reaches 2 steps (done, escalate), the workflow's decision "
                                f"hub 0 {merged}")
    assert losses[1].startswith("the way to END after 'done' is no ending of the workflow ('done': it says nothing")
    assert losses[2].startswith("the way to END after 'escalate' is no ending of the workflow")
    assert losses[3].startswith("the graph has 2 walks from start to end (each loop once), the workflow 1 paths")
    assert len(losses) == 4
