"""LangGraph graphs built in code, imported as workflows; the compiled model as a LangGraph node."""

import json
import re
import textwrap
from typing import Literal, TypedDict

import pytest

pytest.importorskip("langgraph")

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage  # noqa: E402
from langgraph.graph import END, START, MessagesState, StateGraph  # noqa: E402
from langgraph.types import Command, interrupt  # noqa: E402

from subterra import enumerate_paths, load_domain, load_workflow, path_stats  # noqa: E402
from subterra.backends import Backend, Completion, Usage  # noqa: E402
from subterra.cli import main  # noqa: E402
from subterra.importers import GraphImportError, import_langgraph  # noqa: E402
from subterra.scenarios import sample_scenario  # noqa: E402
from subterra.workflow import WorkflowError, parse_workflow  # noqa: E402


class State(TypedDict, total=False):
    messages: list
    amount: int
    wants_cancel: bool
    order_id: Literal["A-1001", "B-2002"]
    city: str
    attempts: int
    solved: bool


class FakeTeacher(Backend):
    """Answers like a teacher model: a prompt and examples for a step, values for variables."""

    name = "fake"

    def __init__(self):
        super().__init__("fake-1")
        self.asked = []

    async def acomplete(self, request):
        ask = request.messages[0]["content"]
        self.asked.append(ask)
        if "realistic values" in ask:
            names = re.search(r"variables of the conversation: ([\w, ]+)\.", ask).group(1).split(", ")
            answer = {name: [f"{name} {i}" for i in range(3)] for name in names}
        else:
            step = re.search(r"at step '(\w+)'", ask).group(1)
            answer = {"prompt": f"Speak for the step {step}.", "examples": [f"This is {step}.", "Okay {unknown}."]}
        return Completion(text=json.dumps(answer), usage=Usage(), model=self.model, backend=self.name)


def roles(workflow):
    return {n.id: n.role for n in workflow.nodes.values()}


# --------------------------------------------------------------------------- linear

def greet(state: State):
    """Greet the customer and ask how you can help."""
    return {"messages": [AIMessage("Hello! How can I help you today?")]}


def customer(state: State):
    """Say what you need help with.

    Examples:
        My order never arrived.
        I'd like some help with a refund, please.
    """
    return {"messages": [HumanMessage(interrupt({"waiting": "customer"}))]}


def answer(state: State):
    """Answer the request and close."""
    return {"messages": [AIMessage(f"Order {state['order_id']} is on its way. Anything else?")]}


def linear_graph():
    builder = StateGraph(State)
    for node in (greet, customer, answer):
        builder.add_node(node.__name__, node)
    builder.add_edge(START, "greet")
    builder.add_edge("greet", "customer")
    builder.add_edge("customer", "answer")
    builder.add_edge("answer", END)
    return builder


def test_linear_graph_imports_whole_with_its_prompts_and_examples():
    imported = import_langgraph(linear_graph(), "linear")
    workflow = imported.workflow()
    assert list(workflow.nodes) == ["greet", "customer", "answer"]
    assert roles(workflow) == {"greet": "agent", "customer": "user", "answer": "agent"}
    assert workflow.nodes["greet"].prompt == "Greet the customer and ask how you can help."
    assert workflow.nodes["customer"].examples == ("My order never arrived.", "I'd like some help with a refund, please.")
    assert workflow.nodes["answer"].examples == ("Order {order_id} is on its way. Anything else?",)
    assert workflow.terminals == {"answer": "success"} and workflow.decision_hubs == []
    assert len(enumerate_paths(workflow)) == 1 and imported.todos == []
    assert workflow.variables == {"order_id": ("A-1001", "B-2002")}       # the slot's values, from its Literal type


# --------------------------------------------------------------------------- two agent turns in a row

def welcome(state: State):
    """Welcome the customer to the {city} store."""
    return {"messages": [AIMessage("Welcome!")]}


def collect(state: State):
    """Ask for the order number."""
    return {"messages": [AIMessage("What is your order number?")]}


def confirm(state: State):
    """Confirm the order {order_id} was found."""
    return {"messages": [AIMessage(f"Found order {state['order_id']}.")]}


def agents_only():
    builder = StateGraph(State)
    for node in (welcome, collect, confirm):
        builder.add_node(node.__name__, node)
    builder.add_edge(START, "welcome")
    builder.add_edge("welcome", "collect")
    builder.add_edge("collect", "confirm")
    builder.add_edge("confirm", END)
    return builder


def test_agent_turns_in_a_row_get_a_customer_turn_and_todos_are_named_by_line(tmp_path):
    imported = import_langgraph(agents_only(), "agents_only")
    assert imported.nodes == 5 and imported.paths == 1
    text = imported.text.splitlines()
    todo_lines = [line for line, _ in imported.todos]
    # the two proposed customer turns (prompt and example each) and the values of city
    assert len(todo_lines) == 5 and all("TODO" in text[line - 1] for line in todo_lines)
    assert {where for _, where in imported.todos} == {"nodes[1].prompt", "nodes[1].examples[0]", "nodes[3].prompt",
                                                      "nodes[3].examples[0]", "variables.city[0]"}
    assert "# REVIEW: proposed: 'welcome' and 'collect' are two agent turns in a row" in imported.text
    path = imported.write(tmp_path / "agents_only.yaml")
    with pytest.raises(WorkflowError) as error:
        load_workflow(path)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{path}:{todo_lines[0]}:")
    assert f"at lines {', '.join(map(str, todo_lines))}" in message


def test_a_teacher_writes_what_the_code_does_not_say():
    teacher = FakeTeacher()
    imported = import_langgraph(agents_only(), "agents_only", teacher=teacher)
    workflow = imported.workflow()
    assert imported.todos == [] and roles(workflow) == {"welcome": "agent", "welcome_reply": "user", "collect": "agent",
                                                        "collect_reply": "user", "confirm": "agent"}
    assert workflow.nodes["welcome_reply"].prompt == "Speak for the step welcome_reply."
    assert workflow.nodes["welcome_reply"].examples == ("This is welcome_reply.", "Okay unknown.")  # no such slot
    assert workflow.variables["city"] == ("city 0", "city 1", "city 2")
    assert "REVIEW: written by the teacher (fake fake-1)" in imported.text
    assert any("Ask for the order number." in ask for ask in teacher.asked)   # it sees what the code says


# --------------------------------------------------------------------------- a router that compares state fields

def front_desk(state: State):
    """Greet the customer and ask about the refund."""
    return {"messages": [AIMessage("Hi! Which order would you like refunded?")]}


def customer_request(state: State):
    """Ask for a refund of your order.

    Examples:
        I want my money back for order {order_id}.
    """
    return {"messages": [HumanMessage(interrupt("request"))]}


def route_request(state: State) -> Literal["refund", "handoff", "cancel"]:
    """Where the request goes.

    refund: The refund is within what the assistant may approve.
    handoff: The amount is above what the assistant may approve.
    cancel: The customer changes their mind.
    """
    if state["amount"] > 500:
        return "handoff"
    if state["wants_cancel"]:
        return "cancel"
    return "refund"


def issue_refund(state: State):
    """Issue the refund of {amount} dollars and close."""
    return {"messages": [AIMessage(f"Done: {state['amount']} dollars are on their way back.")]}


def human_agent(state: State):
    """Transfer the customer to a person."""
    return {"messages": [AIMessage("A colleague will take it from here.")]}


def goodbye(state: State):
    """Say goodbye."""
    return {"messages": [AIMessage("No problem, goodbye!")]}


def refund_graph():
    builder = StateGraph(State)
    for node in (front_desk, customer_request, issue_refund, human_agent, goodbye):
        builder.add_node(node.__name__, node)
    builder.add_edge(START, "front_desk")
    builder.add_edge("front_desk", "customer_request")
    builder.add_conditional_edges("customer_request", route_request,
                                  {"refund": "issue_refund", "handoff": "human_agent", "cancel": "goodbye"})
    for node in ("issue_refund", "human_agent", "goodbye"):
        builder.add_edge(node, END)
    return builder.compile()


def test_a_plain_router_gives_a_hub_with_when_and_check():
    workflow = import_langgraph(refund_graph(), "refunds").workflow()
    assert workflow.decision_hubs == ["customer_request"]
    edges = {e.target: e for e in workflow.successors("customer_request")}
    assert edges["human_agent"].check.source == "amount > 500"
    assert edges["goodbye"].check.source == "amount <= 500 and wants_cancel == 'yes'"
    assert edges["issue_refund"].check.source == "amount <= 500 and wants_cancel != 'yes'"
    assert edges["goodbye"].when == "The customer changes their mind."
    assert workflow.terminals == {"issue_refund": "success", "human_agent": "escalation", "goodbye": "abandonment"}
    assert workflow.variables["amount"] == (250, 500, 1000) and workflow.variables["wants_cancel"] == ("yes", "no")
    paths = enumerate_paths(workflow)
    assert len(paths) == 3
    for path in paths:                          # every branch can be taken by some scenario
        values = sample_scenario(workflow, path, 0, path.id).values
        assert all(e.check.evaluate(values) for e in workflow.edges if e.check and (e.source, e.target) in path.edges)


# --------------------------------------------------------------------------- interrupts

def ask_order(state: State):
    """Ask for the order number.

    Replies:
        It's {order_id}.
    """
    return {"order_id": interrupt("What is your order number?")}


def lookup(state: State):
    return {"solved": True}


def report(state: State):
    """Tell the customer where the order is."""
    return {"messages": [AIMessage(f"Order {state['order_id']} ships tomorrow.")]}


def close(state: State):
    """Thank the customer and close."""
    return {"messages": [AIMessage("Thanks for waiting, bye!")]}


def interrupt_graph(**compile_options):
    builder = StateGraph(State)
    for node in (ask_order, lookup, report, close):
        builder.add_node(node.__name__, node)
    builder.add_edge(START, "ask_order")
    builder.add_edge("ask_order", "lookup")
    builder.add_edge("lookup", "report")
    builder.add_edge("report", "close")
    builder.add_edge("close", END)
    return builder.compile(**(compile_options or {"interrupt_before": ["close"]}))


def test_interrupts_become_customer_turns():
    imported = import_langgraph(interrupt_graph(), "orders", teacher=FakeTeacher())
    workflow = imported.workflow()
    assert list(workflow.nodes) == ["ask_order", "ask_order_reply", "report", "before_close", "close"]
    assert roles(workflow) == {"ask_order": "agent", "ask_order_reply": "user", "report": "agent",
                               "before_close": "user", "close": "agent"}
    assert workflow.nodes["ask_order"].examples == ("What is your order number?",)     # the question it asks
    assert workflow.nodes["ask_order_reply"].examples == ("It's {order_id}.",)         # its docstring's Replies
    assert "lookup" not in workflow.nodes                                              # a silent step, merged
    assert workflow.terminals == {"close": "success"} and len(enumerate_paths(workflow)) == 1
    offline = import_langgraph(interrupt_graph(), "orders")
    # offline, only the turn the compile option inserts is left to fill
    assert {where for _, where in offline.todos} == {"nodes[3].prompt", "nodes[3].examples[0]"}
    assert "interrupt_before=['close']" in offline.text
    after = import_langgraph(interrupt_graph(interrupt_after=["report"]), "orders", teacher=FakeTeacher()).workflow()
    assert list(after.nodes) == ["ask_order", "ask_order_reply", "report", "after_report", "close"]
    assert roles(after)["after_report"] == "user"


SUPPORT_PROMPT = "Answer billing questions politely and briefly."


class ChatModel:
    def invoke(self, messages):
        return AIMessage("Your invoice is in your account.")


chat_model = ChatModel()


def billing_answer(state: State):
    return {"messages": [chat_model.invoke([SystemMessage(SUPPORT_PROMPT), *state["messages"]])]}


def test_a_prompt_from_the_system_prompt_a_node_passes_to_its_model():
    builder = StateGraph(State)
    builder.add_node("greet", greet)
    builder.add_node("customer", customer)
    builder.add_node("billing_answer", billing_answer)
    builder.add_edge(START, "greet")
    builder.add_edge("greet", "customer")
    builder.add_edge("customer", "billing_answer")
    builder.add_edge("billing_answer", END)
    imported = import_langgraph(builder, "billing")
    assert "# from the system prompt billing_answer() passes to its model" in imported.text
    assert "prompt: Answer billing questions politely and briefly." in imported.text
    # no literal text to learn from: its examples are left to fill
    assert [where for _, where in imported.todos] == ["nodes[2].examples[0]"]


# --------------------------------------------------------------------------- a loop

def ask_question(state: State):
    """Ask what the problem is."""
    return {"messages": [AIMessage("What seems to be the problem?")]}


def user_input(state: State):
    """Describe the problem.

    Examples:
        The app crashes when I log in.
    """
    return {}


def after_answer(state: State) -> Literal["retry", "solved"]:
    """Whether the fix worked.

    retry: The fix did not work, so the assistant asks again.
    solved: The fix worked.
    """
    return "solved" if state["solved"] else "retry"


def wrap_up(state: State):
    """Say the problem is solved."""
    return {"messages": [AIMessage("Great, glad it works now!")]}


def loop_graph():
    builder = StateGraph(State)
    for node in (ask_question, user_input, wrap_up):
        builder.add_node(node.__name__, node)
    builder.add_edge(START, "ask_question")
    builder.add_edge("ask_question", "user_input")
    builder.add_conditional_edges("user_input", after_answer, {"retry": "ask_question", "solved": "wrap_up"})
    builder.add_edge("wrap_up", END)
    return builder


def test_a_loop_is_taken_at_most_once_per_path():
    imported = import_langgraph(loop_graph(), "support_loop")
    workflow = imported.workflow()
    assert roles(workflow) == {"ask_question": "agent", "user_input": "user", "wrap_up": "agent"}
    assert workflow.decision_hubs == ["user_input"]
    paths = enumerate_paths(workflow)
    assert [p.nodes for p in paths] == [
        ("ask_question", "user_input", "ask_question", "user_input", "wrap_up"),
        ("ask_question", "user_input", "wrap_up")]
    # the loop needs `solved` false then true: a scenario's values are fixed, so that check is dropped
    checks = {e.target: e.check.source if e.check else None for e in workflow.edges if e.source == "user_input"}
    assert checks == {"ask_question": None, "wrap_up": "solved == 'yes'"}
    assert "dropped" in imported.text


# --------------------------------------------------------------------------- a router that is not plain

class Classifier:
    def invoke(self, text):
        return "billing"


classifier = Classifier()


def triage(state: State) -> Literal["billing", "technical"]:
    """What the customer's message is about.

    billing: The customer asks about a charge or an invoice.
    technical: The customer reports something that does not work.
    """
    return classifier.invoke(state["messages"][-1].content)


def billing(state: State):
    """Explain the charge."""
    return {"messages": [AIMessage("That charge is your monthly plan.")]}


def technical(state: State):
    """Walk the customer through a restart."""
    return {"messages": [AIMessage("Please restart the app and try again.")]}


def triage_graph():
    builder = StateGraph(State)
    for node in (greet, customer, billing, technical):
        builder.add_node(node.__name__, node)
    builder.add_edge(START, "greet")
    builder.add_edge("greet", "customer")
    builder.add_conditional_edges("customer", triage)        # targets from the Literal return type
    builder.add_edge("billing", END)
    builder.add_edge("technical", END)
    return builder


def test_a_router_that_is_not_plain_gives_when_but_no_check():
    imported = import_langgraph(triage_graph(), "triage")
    workflow = imported.workflow()
    hub = workflow.successors("customer")
    assert [e.target for e in hub] == ["billing", "technical"] and all(e.check is None for e in hub)
    assert hub[0].when == "The customer asks about a charge or an invoice."
    assert "router triage() at 'customer' gives no check" in imported.text
    assert len(enumerate_paths(workflow)) == 2 and set(workflow.terminals.values()) == {"success"}


# --------------------------------------------------------------------------- the travel workflow, as LangGraph code

class Trip(TypedDict, total=False):
    messages: list
    destination: str
    price: int
    budget: int
    special_request: str
    intent: str


NO_REQUESTS = ["No special requests.", "Nothing special needed.", "No special requests, thanks."]


def classify(state):
    return state["intent"]


def charge(state):
    return True


def t_greet(state: Trip):
    """Greet the customer and ask where and when they want to fly."""
    return {"messages": [AIMessage("Hello! Where would you like to fly, and when?")]}


def t_offer_flights(state: Trip):
    """Offer the best flight for the request and ask which they would like."""
    return {"messages": [AIMessage(f"I found a flight to {state['destination']} for {state['price']} dollars.")]}


def after_offer(state: Trip):
    """Where the customer goes after the offer.

    choose_flight: The customer takes the offered flight.
    change_search: The customer wants to search again for a different date.
    walk_away: The price is above the customer's budget and they give up on the booking.
    """
    if state["price"] > state["budget"]:
        return "walk_away"
    return classify(state)


def t_booking_summary(state: Trip):
    """Summarise the booking and ask the customer to confirm and name a card."""
    return {"messages": [AIMessage("Here is your booking. Shall I go ahead?")]}


def after_summary(state: Trip):
    """What the customer does with the summary.

    confirm_booking: The details are right and the total fits the budget, so they confirm.
    compare_options: The customer hesitates and wants to see the options again.
    correct_details: A passenger detail needs fixing before booking.
    ask_for_agent: The customer would rather deal with a person.
    walk_away: Seeing the total, the customer decides it is more than their budget allows.
    """
    return classify(state)


def t_take_payment(state: Trip):
    return {"paid": charge(state)}


def payment_outcome(state: Trip):
    """How the payment goes.

    handoff: The customer mentions a special request that the specialist team has to arrange.
    paid: The payment goes through.
    declined: The bank declines the card.
    """
    if state["special_request"] not in NO_REQUESTS:
        return "handoff"
    if state.get("paid"):
        return "paid"
    return "declined"


def t_payment_declined(state: Trip):
    """Say the card was declined and ask for another one."""
    return {"messages": [AIMessage("I'm sorry, the card was declined. Do you have another card?")]}


def t_booking_confirmed(state: Trip):
    """Confirm the booking and close warmly."""
    return {"messages": [AIMessage("You're all set! Have a great trip.")]}


def t_handoff(state: Trip):
    """Hand the chat to a human travel consultant."""
    return {"messages": [AIMessage("I'm transferring you to one of our travel consultants now.")]}


def travel_graph():
    """The travel workflow as a LangGraph app would have it: agent nodes, routers, a payment step."""
    builder = StateGraph(Trip)
    for node in (t_greet, t_offer_flights, t_booking_summary, t_take_payment, t_payment_declined,
                 t_booking_confirmed, t_handoff):
        builder.add_node(node.__name__[2:], node)
    builder.add_edge(START, "greet")
    builder.add_edge("greet", "offer_flights")
    builder.add_conditional_edges("offer_flights", after_offer, {
        "choose_flight": "booking_summary", "change_search": "offer_flights", "walk_away": END})
    builder.add_conditional_edges("booking_summary", after_summary, {
        "confirm_booking": "take_payment", "compare_options": "offer_flights", "correct_details": "booking_summary",
        "ask_for_agent": "handoff", "walk_away": END})
    builder.add_conditional_edges("take_payment", payment_outcome, {
        "paid": "booking_confirmed", "declined": "payment_declined", "handoff": "handoff"})
    builder.add_edge("payment_declined", "take_payment")
    builder.add_edge("booking_confirmed", END)
    builder.add_edge("handoff", END)
    return builder.compile()


def test_travel_as_a_langgraph_graph_has_the_paths_of_the_yaml_original():
    imported = import_langgraph(travel_graph(), "travel_langgraph", teacher=FakeTeacher())
    workflow = imported.workflow()
    original = load_domain("travel")
    ours, theirs = path_stats(workflow), path_stats(original)
    assert len(enumerate_paths(workflow)) == len(enumerate_paths(original)) == 86
    assert imported.shape.walks == 86 and len(imported.shape.routers) == 3 and imported.losses == []
    assert (ours.nodes, ours.decision_hubs, ours.min_turns, ours.max_turns) == (14, 3, 4, 17)
    assert ours.terminals == theirs.terminals and ours.turns == theirs.turns
    assert workflow.decision_hubs == ["offer_flights", "booking_summary", "take_payment"]
    assert roles(workflow)["take_payment"] == "user"      # the silent payment step decides after the customer speaks
    assert workflow.terminals == {"walk_away": "abandonment", "booking_confirmed": "success", "handoff": "escalation"}
    edges = {(e.source, e.target): e for e in workflow.edges}
    assert edges[("take_payment", "handoff")].check.source.startswith("special_request not in [")
    assert edges[("offer_flights", "walk_away")].when.startswith("The price is above the customer's budget")
    for path in enumerate_paths(workflow):               # checks never rule a path out
        sample_scenario(workflow, path, 0, path.id)


# --------------------------------------------------------------------------- the command line

GRAPH_FILE = '''
"""Order help desk."""
from typing import TypedDict
from langchain_core.messages import AIMessage
from langgraph.graph import END, START, StateGraph
from langgraph.types import interrupt

SYSTEM_PROMPT = "You are the order help desk."

class S(TypedDict, total=False):
    messages: list

def hello(state: S):
    """Say hello and ask for the order."""
    return {"messages": [AIMessage("Hello, which order?")]}

def customer(state: S):
    """Name the order.

    Examples:
        Order 12, please.
    """
    return {"messages": [interrupt("order?")]}

def done(state: S):
    """Say it is sorted."""
    return {"messages": [AIMessage("Sorted!")]}

def build():
    builder = StateGraph(S)
    for node in (hello, customer, done):
        builder.add_node(node.__name__, node)
    builder.add_edge(START, "hello")
    builder.add_edge("hello", "customer")
    builder.add_edge("customer", "done")
    builder.add_edge("done", END)
    return builder

graph = build().compile()
'''


def test_command_line_imports_a_factory_and_writes_a_valid_file(tmp_path, capsys):
    source = tmp_path / "desk.py"
    source.write_text(GRAPH_FILE)
    out = tmp_path / "desk.yaml"
    assert main(["import-langgraph", f"{source}:build", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"{out}: 3 nodes, 0 decision hubs, 1 path, nothing left TODO\n  graph: {source}:build\n")
    assert "  shape: the graph's 0 routers, 1 way to END, 1 walk: all kept" in printed
    workflow = load_workflow(out)
    assert workflow.name == "desk" and workflow.system_prompt == "You are the order help desk."
    assert workflow.title == "Order help desk"
    assert main(["import-langgraph", str(source), "--out", str(out)]) == 0    # the one graph in the file
    assert f"  graph: {source}:graph (the one graph in the file)" in capsys.readouterr().out


BROKEN = {
    "no path map": ("builder.add_conditional_edges('a', lambda state: 'b')", "has no path map"),
    "in parallel": ("builder.add_edge('a', 'b')\nbuilder.add_edge('a', 'c')", "in parallel"),
    "raises": ("raise RuntimeError('no database')", "running it failed: RuntimeError: no database"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_a_graph_that_cannot_be_converted_gives_one_line(tmp_path, capsys, case):
    body, expected = BROKEN[case]
    source = tmp_path / "broken.py"
    source.write_text(textwrap.dedent('''
        from typing import TypedDict
        from langgraph.graph import END, START, StateGraph

        class S(TypedDict):
            x: int

        def step(state: S):
            return {"x": 1}

        builder = StateGraph(S)
        for name in "abc":
            builder.add_node(name, step)
        builder.add_edge(START, "a")
        ''') + body + "\n")
    assert main(["import-langgraph", str(source), "--out", str(tmp_path / "broken.yaml")]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith(str(source)) and expected in err
    assert not (tmp_path / "broken.yaml").exists()


def test_not_a_graph_is_refused_in_one_line():
    with pytest.raises(GraphImportError, match="not a LangGraph StateGraph"):
        import_langgraph(object())


# --------------------------------------------------------------------------- the other way: the compiled model as a node

@pytest.fixture(scope="module")
def tiny_agent():
    from subterra.agent import Agent
    from subterra.encoding import fit_tokenizer
    from subterra.recipes import load_recipe
    from subterra.training import tiny_model

    tokenizer = fit_tokenizer(["Hello, which city?", "A trip to Braga, budget 900.", "I found Braga for 300."] * 20,
                              300)
    recipe = load_recipe(None, num_layers=1, hidden_size=32, num_heads=2, intermediate_size=64, vocab_size=300,
                         max_length=256)
    return Agent.from_model(tiny_model(tokenizer, recipe).eval(), tokenizer, max_new_tokens=6)


def test_the_compiled_model_is_a_langgraph_node(tiny_agent):
    from subterra.langgraph_agent import agent_node

    prompt = "You are a helpful booking assistant."
    builder = StateGraph(MessagesState)
    builder.add_node("agent", agent_node(tiny_agent, prompt))
    builder.add_edge(START, "agent")
    builder.add_edge("agent", END)
    app = builder.compile()
    said = [AIMessage("Hello, which city?"), HumanMessage("A trip to Braga, budget 900.")]
    state = app.invoke({"messages": said})
    assert len(state["messages"]) == 3 and isinstance(state["messages"][-1], AIMessage)
    expected = tiny_agent.reply([{"role": "system", "content": prompt},
                                 {"role": "assistant", "content": "Hello, which city?"},
                                 {"role": "user", "content": "A trip to Braga, budget 900."}])
    assert state["messages"][-1].content == expected
    plain = agent_node(tiny_agent, prompt)({"messages": [{"role": "user", "content": "A trip to Braga."}]})
    assert plain["messages"][0]["role"] == "assistant"


# --------------------------------------------------------------------------- more LangGraph shapes

def test_a_tool_loop_is_one_agent_turn():
    from langchain_core.tools import tool
    from langgraph.prebuilt import ToolNode, tools_condition

    @tool
    def order_status(order: str) -> str:
        """The status of an order."""
        return "shipped"

    def assistant(state: MessagesState):
        """Help the customer with their order."""
        return {"messages": [AIMessage("Your order has shipped.")]}

    builder = StateGraph(MessagesState)
    builder.add_node("assistant", assistant)
    builder.add_node("tools", ToolNode([order_status]))
    builder.add_edge(START, "assistant")
    builder.add_conditional_edges("assistant", tools_condition)
    builder.add_edge("tools", "assistant")
    imported = import_langgraph(builder, "tool_loop")
    # the ToolNode's tool is the workflow's: what the customer gives it and what it returns are left TODO
    assert [field for _, field in imported.todos] == ["variables.order[0]", "variables.order_status_result[0]"]
    with pytest.raises(WorkflowError, match="2 TODOs left to fill"):
        imported.workflow()
    workflow = parse_workflow(re.sub(r'"TODO:[^"]*"', '"A1"', imported.text))
    assert list(workflow.nodes) == ["assistant"] and workflow.terminals == {"assistant": "success"}
    assert workflow.nodes["assistant"].call == "order_status"
    assert "'tools' (a ToolNode) is an inner step of 'assistant': merged into it" in imported.notes


class Tier(TypedDict, total=False):
    messages: list
    tier: Literal["gold", "basic"]


def by_tier(state: Tier) -> Literal["gold", "basic"]:
    """Route by the customer's tier.

    gold: A gold customer.
    basic: Everyone else.
    """
    return "gold" if state["tier"] == "gold" else "basic"


def gold_desk(state: Tier):
    """Welcome the gold member."""
    if state["tier"] == "basic":          # never true here: by_tier sent only gold customers
        return Command(goto="goodbye")
    return Command(goto=END, update={"messages": [AIMessage("Welcome back, gold member!")]})


def basic_desk(state: Tier):
    """Offer the basic service."""
    return {"messages": [AIMessage("How can I help?")]}


def test_a_router_at_start_and_command_routing():
    builder = StateGraph(Tier)
    builder.add_node("gold_desk", gold_desk, destinations=("goodbye", END))
    builder.add_node("basic_desk", basic_desk)
    builder.add_node("goodbye", goodbye)
    builder.add_conditional_edges(START, by_tier, {"gold": "gold_desk", "basic": "basic_desk"})
    builder.add_edge("basic_desk", END)
    builder.add_edge("goodbye", END)
    imported = import_langgraph(builder, "tiers", teacher=FakeTeacher())
    workflow = imported.workflow()
    # routing on the input: the customer opens; the Command node is a hub of its own
    assert workflow.start == "opening" and roles(workflow)["opening"] == "user"
    assert workflow.decision_hubs == ["opening", "gold_desk"]
    checks = {(e.source, e.target): e.check.source if e.check else None for e in workflow.edges}
    assert checks[("opening", "gold_desk")] == "tier == 'gold'" and checks[("opening", "basic_desk")] == "tier != 'gold'"
    # gold_desk -> goodbye needs tier == 'basic' after tier == 'gold': a branch the code never takes, kept
    # in the graph but without its check, so that every path can be synthesised
    assert checks[("gold_desk", "gold_desk_to_goodbye")] is None
    assert any("the code never takes this branch" in note for note in imported.notes)
    for path in enumerate_paths(workflow):
        sample_scenario(workflow, path, 0, path.id)


def test_help_says_that_the_file_is_run(capsys):
    with pytest.raises(SystemExit) as done:
        main(["import-langgraph", "--help"])
    assert done.value.code == 0 and "RUNS it" in capsys.readouterr().out
