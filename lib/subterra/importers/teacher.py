"""Filling what the code does not say with a teacher model: a prompt and examples per step, variables' values.

Each answer is marked ``# REVIEW: written by the teacher (...)`` in the file; an answer that cannot
be used leaves its value ``TODO``.
"""

from __future__ import annotations

import json
import re

from .draft import Draft
from .texts import slots

TEACHER_SYSTEM = ("You help turn a LangGraph customer-service graph into a training workflow: for one step you "
                  "write what the speaker is told to say and a few example utterances. Keep to the procedure; "
                  "reply with JSON only.")


def teach(d: Draft, pools: dict) -> None:
    """Ask the teacher for every turn that lacks a prompt or examples, and for values no code gives."""
    from ..backends import Request

    who = f"{d.teacher.name} {d.teacher.model}"
    known = outline(d)
    usable = ", ".join("{" + v + "}" for v in pools) or "none"
    for turn in d.turns.values():
        if turn.prompt and turn.examples:
            continue
        speaker = "assistant" if turn.role == "agent" else "customer"
        ask = (f"{known}\n\nWrite the {speaker}'s turn at step '{turn.id}' ({turn.label}). Reply with JSON "
               f'only: {{"prompt": "one or two sentences telling the {speaker} what to say at this step", '
               f'"examples": ["4 short example utterances the {speaker} could say"]}}. Slots you may use in '
               f"both: {usable}.")
        answer = json_reply(d.teacher.complete(Request(
            system=TEACHER_SYSTEM, messages=[{"role": "user", "content": ask}], max_tokens=600,
            temperature=0.7, tag="import-teacher", sample=turn.id)).text)
        prompt = answer.get("prompt") if isinstance(answer.get("prompt"), str) else None
        examples = [e for e in answer.get("examples", []) if isinstance(e, str) and e.strip()] \
            if isinstance(answer.get("examples"), list) else []
        if not turn.prompt and prompt:
            turn.prompt = slots(d, prompt, set(pools))
            turn.notes["prompt"] = f"REVIEW: written by the teacher ({who})"
        if not turn.examples and examples:
            turn.examples = [slots(d, e, set(pools)) for e in examples]
            turn.notes["examples"] = f"REVIEW: written by the teacher ({who})"
        if not (turn.prompt and turn.examples):
            d.note(f"the teacher's answer for '{turn.id}' could not be used: left TODO")
    missing = [v for v, (values, _) in pools.items() if str(values[0]).startswith("TODO")]
    if missing:
        ask = (f"{known}\n\nGive 6 realistic values for each of these variables of the conversation: "
               f"{', '.join(missing)}. Reply with JSON only: {{\"variable\": [values, ...], ...}}.")
        answer = json_reply(d.teacher.complete(Request(
            system=TEACHER_SYSTEM, messages=[{"role": "user", "content": ask}], max_tokens=600,
            temperature=0.7, tag="import-teacher", sample="variables")).text)
        for var in missing:
            values = answer.get(var)
            if isinstance(values, list) and values and all(
                    isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in values):
                d.teacher_pools[var] = (values, f"REVIEW: written by the teacher ({who})")


def outline(d: Draft) -> str:
    """What the teacher is told of the procedure: its title, steps and transitions."""
    lines = [f"A customer-service procedure imported from a LangGraph graph: {d.title_text()}."]
    if d.module_doc["text"]:
        lines.append(d.module_doc["text"])
    lines.append("Steps (role, id: what is known):")
    for turn in d.turns.values():
        said = turn.prompt or (turn.code.doc["text"] if turn.code else "") or "(nothing known)"
        lines.append(f"- {'assistant' if turn.role == 'agent' else 'customer'}, {turn.id}: {said}")
    lines.append("Transitions:")
    lines += [f"- {link.source} -> {link.target}" + (f" when {link.when}" if link.when else "") for link in d.links]
    return "\n".join(lines)


def json_reply(text: str) -> dict:
    match = re.search(r"\{.*\}", text, re.S)
    try:
        data = json.loads(match.group(0)) if match else {}
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}
