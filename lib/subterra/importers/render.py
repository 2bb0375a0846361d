"""The workflow file: YAML with a comment on every guess (``# REVIEW``) and ``TODO`` where nothing is known."""

from __future__ import annotations

import json
import re
from pathlib import Path as FilePath
from typing import Any

import yaml

from .draft import Draft


def render(d: Draft, fill: bool = False) -> tuple[str, list[tuple[int, str]]]:
    """The YAML text with its comments; with ``fill`` every TODO is a placeholder (same lines)."""
    lines: list[str] = []
    todos: list[str] = []

    def put(indent: int, text: str, comment: str | None = None):
        if comment:
            lines.append(" " * indent + "# " + comment)
        lines.append(" " * indent + text)

    def value(v: Any, where: str, flow: bool = False) -> str:
        if isinstance(v, str) and v.startswith("TODO"):
            todos.append(where)
            if fill:
                v = "placeholder"
        return scalar(v, flow)

    pools = {**d.pool_values, **d.teacher_pools}
    lines += [f"# Imported from the LangGraph graph in {d.origin} by `subterra import-langgraph`.",
              "# A '# REVIEW' comment marks a guess to check; every TODO must be filled before the file loads",
              "# (`subterra validate FILE` names each TODO line).", "#", "# Inferred:"]
    lines += [f"#   - {n}" for n in dict.fromkeys(d.notes)] or ["#   (nothing)"]
    if d.losses:
        lines += ["#", "# Lost (imported with --allow-lossy: the graph has more than this workflow):"]
        lines += [f"#   - {loss}" for loss in d.losses]
    lines.append("")
    put(0, f"name: {d.name}")
    put(0, f"title: {scalar(d.title_text())}")
    prompt_note = None if d.system_prompt else d.system_note
    put(0, f"system_prompt: {scalar(d.system_text)}", prompt_note)
    description = d.module_doc["text"] or f"Imported from the LangGraph graph in {FilePath(d.origin).name}."
    put(0, f"description: {scalar(description)}")
    if pools:
        put(0, "variables:")
        for var, (values, comment) in pools.items():
            items = ", ".join(value(v, f"variables.{var}[{i}]", flow=True) for i, v in enumerate(values))
            put(2, f"{var}: [{items}]", comment)
    else:
        put(0, "variables: {}")
    if d.tools:
        put(0, "tools:")
        for name, tool in d.tools.items():
            put(2, f"{name}:")
            put(4, f"description: {scalar(tool['description'])}")
            put(4, f"arguments: [{', '.join(tool['arguments'])}]")
            put(4, f"results: [{', '.join(tool['results'])}]",
                "REVIEW: the values the tool returns (variables): its code does not say")
    put(0, f"start: {d.start}")
    lines.append("")
    put(0, "nodes:")
    for i, turn in enumerate(d.turns.values()):
        put(2, f"- id: {turn.id}", turn.notes.get("id"))
        put(4, f"role: {turn.role}")
        if turn.call:
            put(4, f"call: {turn.call}", turn.notes.get("call"))
        put(4, f"label: {scalar(turn.label)}")
        if turn.terminal:
            put(4, f"terminal: {turn.terminal}", turn.notes.get("terminal"))
        speaker = "assistant" if turn.role == "agent" else "customer"
        prompt = turn.prompt or f"TODO: what the {speaker} says at this step"
        put(4, f"prompt: {value(prompt, f'nodes[{i}].prompt')}", turn.notes.get("prompt"))
        examples = turn.examples or [f"TODO: an example of what the {speaker} says here"]
        put(4, "examples:", turn.notes.get("examples"))
        for j, example in enumerate(examples):
            put(6, f"- {value(example, f'nodes[{i}].examples[{j}]')}")
    lines.append("")
    put(0, "edges:" if d.links else "edges: []")
    for link in d.links:
        put(2, f"- from: {link.source}")
        put(4, f"to: {link.target}")
        if link.when:
            put(4, f"when: {scalar(link.when)}", link.notes.get("when"))
        if link.check:
            put(4, f"check: {scalar(link.check)}", link.notes.get("check"))
    at = [i + 1 for i, line in enumerate(lines) if not line.lstrip().startswith("#")
          and re.search(r"(: |- |\[)\"?(TODO|placeholder)", line)]
    return "\n".join(lines) + "\n", list(zip(at, todos))




def scalar(value: Any, flow: bool = False) -> str:
    """One YAML scalar: plain where that reads back the same, else double-quoted (JSON's escaping)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(value)
    text = str(value)
    try:
        plain = (yaml.safe_load(text) == text and text == text.strip() and "\n" not in text
                 and not re.search(r"^[-?:,\[\]{}#&*!|>'\"%@`]|: | #|:$", text)
                 and not (flow and re.search(r"[,\[\]{}]", text)))
    except yaml.YAMLError:
        plain = False
    return text if plain else json.dumps(text, ensure_ascii=False)
