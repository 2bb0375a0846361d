"""Calls in the APIs' own form: the conversation's text-form calls (:mod:`subterra.tools`) as Claude's
``tool_use`` / ``tool_result`` blocks and OpenAI's ``tool_calls`` / ``tool`` messages, and back.

A frontier model is given the workflow's tools natively (``Request.tools``) and calls them as its API does;
its call comes back in the text form every other part of the project reads. A call that is not valid JSON
(a small model's) cannot be a native block: it and its answer go as plain text.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from ..tools import TOOL_ROLE, ToolCall, call_in, call_text


def _parsed(message: dict) -> tuple[str, dict] | None:
    """(name, arguments) of an assistant's text-form call that is valid JSON, else None."""
    call = call_in(message["content"]) if message["role"] == "assistant" else None
    if call is None:
        return None
    try:
        data = json.loads(call)
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str) or not isinstance(
            data.get("arguments", {}), dict):
        return None
    return data["name"], data.get("arguments", {})


def _native(messages: list[dict], call: Callable[[str, str, dict], dict], answer: Callable[[str, str], dict]) -> list[dict]:
    """The messages with each valid call made by ``call(id, name, arguments)`` and its answer by ``answer(id,
    content)``; a call that is not valid JSON, and its answer, stay plain text."""
    out, last = [], None
    for k, m in enumerate(messages):
        parsed = _parsed(m)
        if parsed is not None:
            last = f"call_{k}"
            out.append(call(last, *parsed))
        elif m["role"] == TOOL_ROLE:
            out.append(answer(last, m["content"]) if last else {"role": "user", "content": f"(tool answer) {m['content']}"})
            last = None
        else:
            out.append({"role": m["role"], "content": m["content"]})
    return out


def anthropic_messages(messages: list[dict]) -> list[dict]:
    """The Messages API's form: a call is a ``tool_use`` block, its answer a ``tool_result`` in a user turn."""
    return _native(messages,
                   lambda id_, name, arguments: {"role": "assistant", "content": [
                       {"type": "tool_use", "id": id_, "name": name, "input": arguments}]},
                   lambda id_, content: {"role": "user", "content": [
                       {"type": "tool_result", "tool_use_id": id_, "content": content}]})


def anthropic_tools(tools: tuple[dict, ...]) -> list[dict]:
    return [{"name": t["name"], "description": t["description"], "input_schema": t["parameters"]} for t in tools]


def anthropic_reply(message: Any) -> str | None:
    """The text form of the first ``tool_use`` block of a response, or None when it calls nothing."""
    for block in message.content:
        if getattr(block, "type", None) == "tool_use":
            return call_text(ToolCall(block.name, dict(block.input or {})))
    return None


def openai_messages(messages: list[dict]) -> list[dict]:
    """The chat completions form: a call is an assistant's ``tool_calls``, its answer a ``tool`` message."""
    return _native(messages,
                   lambda id_, name, arguments: {"role": "assistant", "content": None, "tool_calls": [
                       {"id": id_, "type": "function",
                        "function": {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)}}]},
                   lambda id_, content: {"role": "tool", "tool_call_id": id_, "content": content})


def openai_tools(tools: tuple[dict, ...]) -> list[dict]:
    return [{"type": "function", "function": dict(t)} for t in tools]


def openai_reply(response: Any) -> str | None:
    """The text form of the first tool call of a chat completion, or None when it calls nothing."""
    calls = getattr(response.choices[0].message, "tool_calls", None) if response.choices else None
    if not calls:
        return None
    function = calls[0].function
    try:
        arguments = json.loads(function.arguments or "{}")
    except json.JSONDecodeError:             # the text form carries it on; the environment answers the error
        return f"<tool_call>\n{{\"name\": {json.dumps(function.name)}, \"arguments\": {function.arguments}}}\n</tool_call>"
    return call_text(ToolCall(function.name, arguments if isinstance(arguments, dict) else {}))
