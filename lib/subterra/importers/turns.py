"""Shaping the turns into a workflow: silent steps, the start and the endings, turns that alternate.

The graph's shape is kept. A silent step merges into its neighbours only where that changes no
branch and no ending: a tool call that returns to the step that made it is that step's inner
work; a look-up in a chain goes away. A silent step that decides between branches right after
agent turns is the customer's turn the decision follows. Any other silent step (the last before
``END``, one that several steps lead to, one whose merging would join or lose a branch) is kept as
an agent turn for a person to describe.
"""

from __future__ import annotations

import re

from .draft import Draft, Link, Turn, ident, label
from .loading import END, START

ESCALATION = re.compile(r"hand_?off|hand_?over|escalat|transfer|human|person|specialist|supervisor|representative"
                        r"|operator|live_agent")
ABANDONMENT = re.compile(r"cancel|abandon|walk_away|leave|quit|give_up|gives_up|declin|hang_?up|drop_?out|churn"
                         r"|not_interested|no_thanks|exit")


# --------------------------------------------------------------------------- silent steps

def resolve_silent(d: Draft) -> None:
    changed = True
    while changed:
        changed = False
        for turn in [t for t in d.turns.values() if t.role == "silent"]:
            ins, outs = d.into(turn.id), d.out(turn.id)
            sources = {link.source for link in ins}
            targets = {link.target for link in outs}
            if any(d.role(s) == "silent" and s != turn.id for s in sources):
                continue
            speakers = [d.turns[t] for t in (targets if turn.code is not None and turn.code.tools else ())
                        if t in d.turns and d.turns[t].role == "agent"]
            if targets and targets <= sources and len(sources) == 1:
                source = next(iter(sources))
                d.take_tools(turn, [d.turns[source]] if source in d.turns else [])
                d.links = [link for link in d.links if turn.id not in (link.source, link.target)]
                del d.turns[turn.id]
                what = "a ToolNode" if turn.code.kind == "ToolNode" else "it says nothing"
                d.gone[turn.origin] = f"an inner step of '{source}' (a silent step that only returns to it)"
                d.note(f"'{turn.id}' ({what}) is an inner step of '{source}': merged into it")
            elif (len(outs) > 1 or len(sources) > 1) and targets != {END} and all(
                    d.role(s) in ("agent", START) for s in sources):
                d.take_tools(turn, speakers)
                turn.role = "user"
                turn.notes["id"] = (f"REVIEW: '{turn.origin}' says nothing and decides what comes next after an "
                                    "agent turn: the customer's turn, which it reacts to")
                d.note(f"'{turn.id}' (silent, after agent turns) becomes the customer's turn it reacts to")
            elif kept_because(d, turn, ins, outs):
                why = kept_because(d, turn, ins, outs)
                turn.role = "agent"
                d.take_tools(turn, [turn])
                turn.notes["id"] = (f"REVIEW: '{turn.origin}' says nothing (no docstring, message or model call) "
                                    f"but is kept: {why}")
                d.note(f"'{turn.id}' says nothing but is kept as an agent turn: {why}")
            else:
                d.take_tools(turn, speakers)
                contract(d, turn, ins, outs)
            changed = True
            break
    for turn in d.turns.values():
        if turn.role == "silent":
            turn.role = "agent"
            d.note(f"'{turn.id}' is in a loop of silent steps: imported as an agent turn")


def kept_because(d: Draft, turn: Turn, ins: list[Link], outs: list[Link]) -> str | None:
    """Why merging the silent ``turn`` into the steps around it would change a branch or an ending; else None."""
    targets = {link.target for link in outs}
    if END in targets:
        return "it is the last step before the end"
    if not ins:
        return None
    if len(ins) > 1:
        return "several steps lead to it"
    before = ins[0].source
    if before in targets:
        return f"merging it would lose the way back to '{before}'"
    others = [link for link in d.out(before) if link is not ins[0]]
    if len(outs) > 1 and others:
        return f"merging it would join its branches with those of '{before}'"
    if targets & {link.target for link in others}:
        return f"merging it would make two branches of '{before}' one"
    return None


def contract(d: Draft, turn: Turn, ins: list[Link], outs: list[Link]) -> None:
    """``turn`` merged away: each way in joined to each way out (a shape :func:`kept_because` found safe)."""
    d.links = [link for link in d.links if turn.id not in (link.source, link.target)]
    del d.turns[turn.id]
    for before in ins:
        for after in outs:
            check = (f"({before.check}) and ({after.check})" if before.check and after.check
                     else before.check or after.check)
            d.links.append(Link(before.source, after.target, key=after.key or before.key,
                                when=after.when or before.when, check=check, notes={**before.notes, **after.notes},
                                router=after.router or before.router, edge_from=before.edge_from))
    d.gone[turn.origin] = "it says nothing: merged into the steps around it"
    d.note(f"'{turn.id}' says nothing: merged into the steps around it")


def dedupe(d: Draft) -> None:
    """One link per (from, to): the `when` sentences joined, the checks or-ed (dropped if one has none)."""
    kept: dict[tuple[str, str], Link] = {}
    for link in d.links:
        first = kept.setdefault((link.source, link.target), link)
        if first is link:
            continue
        if link.when and link.when != first.when:
            first.when = f"{first.when} Or: {link.when}" if first.when else link.when
            first.notes["when"] = "REVIEW: two branches lead here; their `when` sentences are joined"
        first.check = f"({first.check}) or ({link.check})" if first.check and link.check else None
    d.links = list(kept.values())


# --------------------------------------------------------------------------- start and endings

def ends(d: Draft) -> None:
    starts = d.out(START)
    if len(starts) == 1 and starts[0].target != END:
        d.start = starts[0].target
    else:
        opening = d.add("opening", "user", label="The customer's first message")
        opening.notes["id"] = "REVIEW: the graph routes on its input: the customer opens the conversation"
        for link in starts:
            link.source = opening.id
        d.start = opening.id
        d.note("the graph routes on its input: the customer's opening message 'opening' is the start")
    d.links = [link for link in d.links if link.source != START]
    shared: dict[tuple[str, str], str] = {}
    for turn in list(d.turns.values()):
        outs = d.out(turn.id)
        if len(outs) == 1 and outs[0].target == END:
            d.links.remove(outs[0])
            turn.terminal = kind(d, turn, outs[0])
            turn.ends_for.add(outs[0].edge_from)
            continue
        for link in [link for link in outs if link.target == END]:
            role = "user" if turn.role == "agent" else "agent"
            base = ident(link.key or f"{turn.id}_end")
            if (base, role) not in shared or shared[(base, role)] not in d.turns:
                ending = d.add(base, role)
                ending.terminal = kind(d, ending, link)
                ending.notes["id"] = f"REVIEW: the branch '{link.key or 'END'}' of '{turn.id}' ends the conversation"
                shared[(base, role)] = ending.id
            link.target = shared[(base, role)]
            d.turns[link.target].ends_for.add(link.edge_from)
    d.note("endings typed from their names: " + ", ".join(
        f"{t.id} {t.terminal}" for t in d.turns.values() if t.terminal))
    for turn in d.turns.values():
        if turn.terminal:
            turn.notes["terminal"] = (f"REVIEW: typed '{turn.terminal}' from its name and the branches to it" +
                                      (" (it names no hand-off or cancel)" if turn.terminal == "success" else ""))


def kind(d: Draft, turn: Turn, link: Link) -> str:
    """The ending's kind, from its name and the names of the branches that lead to it."""
    keys = [link.key or ""] + [other.key or "" for other in d.into(turn.id)]
    names = " ".join(filter(None, [turn.id, turn.origin or "", *keys])).lower()
    names = re.sub(r"[^a-z0-9]+", "_", names)
    if ESCALATION.search(names):
        return "escalation"
    if ABANDONMENT.search(names):
        return "abandonment"
    return "success"


# --------------------------------------------------------------------------- turns alternate

def alternate(d: Draft) -> None:
    """A proposed customer turn between two agent turns; two customer turns in a row merged (or an agent
    turn proposed between them where they branch)."""
    for link in list(d.links):
        if link not in d.links:
            continue
        source, target = d.turns[link.source], d.turns[link.target]
        if source.role != target.role:
            continue
        if source.role == "agent":
            keyed = link.key and len(d.out(source.id)) > 1
            base = (link.key if keyed and ident(link.key) not in d.turns else
                    f"{source.id}_to_{target.id}" if keyed else f"{source.id}_reply")
            wait = d.add(base, "user", label=label(link.key) if keyed else f"Reply to {source.label.lower()}")
            wait.notes["id"] = (f"REVIEW: proposed: the customer's move that takes the branch '{link.key}' "
                                f"of '{source.id}'" if keyed else
                                f"REVIEW: proposed: '{source.id}' and '{target.id}' are two agent turns in a row; "
                                "the customer speaks between them")
            d.links.append(Link(wait.id, target.id))
            link.target = wait.id
            d.note(f"customer's turn '{wait.id}' proposed between agent turns '{source.id}' and '{target.id}'")
        elif len(d.out(source.id)) == 1 and len(d.into(target.id)) == 1 and target.id != d.start \
                and target.id != source.id:
            merge(d, source, target, link)
        else:
            ack = d.add(f"{source.id}_to_{target.id}", "agent")
            ack.notes["id"] = f"REVIEW: proposed: two customer turns in a row ('{source.id}', '{target.id}')"
            d.links.append(Link(ack.id, target.id))
            link.target = ack.id
            d.note(f"agent turn '{ack.id}' proposed between customer turns '{source.id}' and '{target.id}'")


def merge(d: Draft, first: Turn, second: Turn, link: Link) -> None:
    d.links.remove(link)
    for out in d.out(second.id):
        out.source = first.id
    first.prompt = " ".join(filter(None, [first.prompt, second.prompt])) or None
    if first.examples and second.examples:
        first.examples = [f"{a} {b}" for a, b in zip(first.examples, second.examples)]
    else:
        first.examples = first.examples or second.examples
    first.terminal = second.terminal
    first.ends_for |= second.ends_for
    first.notes.update({k: v for k, v in second.notes.items() if k not in first.notes})
    first.notes["id"] = f"REVIEW: merged with '{second.id}' (two customer turns in a row are one message)"
    del d.turns[second.id]
    if second.origin:
        d.gone[second.origin] = f"merged with the customer turn '{first.id}'"
    d.note(f"customer turns '{first.id}' and '{second.id}' merged (two in a row)")


def order(d: Draft) -> None:
    """Turns in the order a walk from the start meets them; links grouped by their source."""
    seen, queue = [d.start], [d.start]
    while queue:
        for link in d.out(queue.pop(0)):
            if link.target not in seen:
                seen.append(link.target)
                queue.append(link.target)
    seen += [t for t in d.turns if t not in seen]
    d.turns = {t: d.turns[t] for t in seen}
    d.links = [link for t in seen for link in d.out(t)]
