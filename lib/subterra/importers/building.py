"""The first turns and links: one turn per LangGraph node, one link per edge or branch, and who speaks at each.

A node that waits for a person (it calls ``interrupt(...)``, its name says human / user / customer,
or the graph is compiled with ``interrupt_before`` / ``interrupt_after`` on it) gives a customer
turn; a node that asks a question through ``interrupt("...")`` is split in two: the agent's
question, then the customer's reply. A node with a docstring, or that writes messages or calls a
model, is an agent turn. A node that does none of these (a look-up, a ``ToolNode``) is *silent*:
:mod:`.turns` decides where it goes.
"""

from __future__ import annotations

import re

from .code import NodeCode, paragraph
from .draft import Draft, Link, Turn, sentence
from .loading import END, START
from .routers import RouterChecks

HUMAN = re.compile(r"^(human|user|customer)(_(input|reply|replies|response|request|message|answer|feedback|turn|node"
                   r"|step|says|choice))?$|_input$|_feedback$")


def read_graph(d: Draft) -> None:
    """Turns for the nodes, links for the edges and the routers' branches."""
    if not d.builder.nodes:
        d.fail("has no nodes")
    ids = {START: START, END: END}
    for node_name, spec in d.builder.nodes.items():
        turn = d.add(node_name, "agent", code=NodeCode(spec.runnable), origin=node_name)
        ids[node_name] = turn.id
    plain: dict[str, list[str]] = {}
    for source, target in sorted(d.builder.edges, key=lambda e: list(ids).index(e[0])):
        plain.setdefault(source, []).append(target)
    routed: dict[str, list] = {}
    for source, branches in d.builder.branches.items():
        for router_name, branch in branches.items():
            if branch.ends is None:
                d.fail(f"its router '{router_name}' has no path map and no Literal return type naming its "
                       "targets, so its branches cannot be read (pass path_map= to add_conditional_edges)",
                       node=source if source != START else None)
            routed.setdefault(source, []).append((NodeCode(branch.path), dict(branch.ends)))
    for node_name, spec in d.builder.nodes.items():
        ends = getattr(spec, "ends", None)
        if ends:
            routed.setdefault(node_name, []).append(         # Command(goto=...): the node routes itself
                (d.turns[ids[node_name]].code, dict(ends) if isinstance(ends, dict) else {e: e for e in ends}))
            d.commands.add(ids[node_name])
    if getattr(d.builder, "waiting_edges", None):
        starts, end = next(iter(d.builder.waiting_edges))
        d.fail(f"waits for {', '.join(starts)} to finish together (a join of parallel steps); a workflow "
               "is one conversation, one step at a time", node=end)
    for source in [s for s in ids if s in plain or s in routed]:     # node order: a stable file
        targets = plain.get(source, [])
        if len(targets) + len(routed.get(source, [])) > 1:
            parts = targets + ["a router" for _ in routed.get(source, [])]
            d.fail(f"runs {' and '.join(parts)} in parallel after it; a workflow is one conversation, one "
                   "step at a time (merge them, or route with one add_conditional_edges)",
                   node=source if source != START else "START")
        for target in targets:
            d.links.append(Link(ids[source], ids[target], edge_from=source))
        for router, ends in routed.get(source, []):
            add_branches(d, source, ids, router, ends)
    if not any(link.source == START for link in d.links):
        d.fail("has no entry point (add_edge(START, ...))")


def add_branches(d: Draft, node: str, ids: dict, router: NodeCode, ends: dict) -> None:
    """One link per branch of the router at ``node``, with its ``when`` and, where the code says it, its check."""
    source = ids[node]
    reader = RouterChecks(router, d.types)
    checks = reader.checks(list(ends))
    for var, use in reader.uses.items():
        d.use(var, consts=use["consts"], keys=use["keys"], bool_=use["bool"], order=use["order"])
    keys = {str(k) for k in ends}
    general = None if source in d.commands else paragraph(   # a Command node's docstring is its prompt
        [line for line in router.doc["head"]
         if not any(re.match(rf"^\s*[-*]?\s*[`'\"]?{re.escape(k)}\b", line) for k in keys)])
    where = "START" if source == START else source
    for key, target in ends.items():
        if target not in ids:
            d.fail(f"its router '{router.name}' names '{target}', which is not a node", node=source)
        words = "end" if key == END else str(key).replace("_", " ").strip()
        link = Link(source, ids[target], key=None if key == END else str(key), router=node, edge_from=node)
        if str(key) in router.doc["pairs"]:
            link.when = sentence(router.doc["pairs"][str(key)])
            link.notes["when"] = f"from the docstring of {router.name}()"
        else:
            link.when = sentence(f"{general.rstrip('.')}: {words}" if general else
                                 f"The conversation takes the '{words}' branch")
            link.notes["when"] = (f"REVIEW: guessed from {router.name}()'s "
                                  f"{'docstring' if general else 'name'} and the branch '{key}'")
        if checks.get(key):
            link.check = checks[key]
            link.notes["check"] = f"read from {router.name}(), a plain comparison of state fields"
        d.links.append(link)
    if not any(checks.values()):
        reason = "no source" if not router.readable else "not a plain comparison of state fields"
        d.note(f"router {router.name}() at '{where}' gives no check ({reason}): its branches have a `when` only")
    else:
        d.note(f"router {router.name}() at '{where}': a check read for {sum(map(bool, checks.values()))} of "
               f"its {len(checks)} branches")


def classify(d: Draft) -> None:
    """Who speaks at each turn: the customer, the agent, or nobody (a silent step)."""
    before = interrupt_list(d, "interrupt_before_nodes")
    after = interrupt_list(d, "interrupt_after_nodes")
    for turn in list(d.turns.values()):
        code = turn.code
        if HUMAN.search(turn.id):
            turn.role = "user"
            d.note(f"'{turn.id}' is the customer's turn (its name says so)")
        elif code.interrupts():
            call = code.interrupts()[0]
            payload = code.texts(call.args[0] if call.args else None)
            if payload:
                reply = split(d, turn, payload[0])
                d.note(f"'{turn.id}' asks through interrupt(): the agent's question, then the customer's "
                       f"reply '{reply.id}'")
            else:
                turn.role = "user"
                d.note(f"'{turn.id}' waits for a person (interrupt()): the customer's turn")
        elif code.silent:
            turn.role = "silent"
            d.silent.add(turn.origin)
        elif not code.readable:
            turn.notes["prompt"] = (f"REVIEW: the source of '{turn.origin}' (a {code.kind}) cannot be read: "
                                    "imported as one agent step")
    for turn_id in before:
        if d.role(turn_id) != "user":
            wait = d.add(f"before_{turn_id}", "user")
            for link in d.into(turn_id):
                link.target = wait.id
            d.links.append(Link(wait.id, turn_id))
            wait.notes["id"] = f"the graph is compiled with interrupt_before=['{d.turns[turn_id].origin}']"
            d.note(f"customer's turn '{wait.id}' inserted: interrupt_before on '{turn_id}'")
    for turn_id in after:
        if d.role(turn_id) != "user":
            wait = d.add(f"after_{turn_id}", "user")
            for link in d.out(turn_id):
                link.source = wait.id
            d.links.append(Link(turn_id, wait.id))
            wait.notes["id"] = f"the graph is compiled with interrupt_after=['{d.turns[turn_id].origin}']"
            d.note(f"customer's turn '{wait.id}' inserted: interrupt_after on '{turn_id}'")


def interrupt_list(d: Draft, attribute: str) -> list[str]:
    names = getattr(d.graph, attribute, None) or []
    if names == "*":
        names = list(d.builder.nodes)
    by_origin = {t.origin: t.id for t in d.turns.values()}
    return [by_origin[n] for n in names if n in by_origin]


def split(d: Draft, turn: Turn, question: str) -> Turn:
    """The agent's question (``turn``), then the customer's reply: ``turn``'s next steps move to the reply."""
    reply = d.add(f"{turn.id}_reply", "user", label=f"Reply to {turn.label.lower()}")
    for link in d.out(turn.id):
        link.source = reply.id
    d.links.append(Link(turn.id, reply.id))
    turn.examples.append(question)
    turn.notes["examples"] = f"the question {turn.code.name}() asks through interrupt()"
    reply.prompt = sentence(f"Answer the assistant's question: {question}")
    reply.notes["prompt"] = f"REVIEW: guessed from the question {turn.code.name}() asks"
    reply.examples = list(turn.code.doc["replies"])
    if reply.examples:
        reply.notes["examples"] = f"from the Replies section of {turn.code.name}()'s docstring"
    return reply
