"""Support desk: answer the customer's question, or hand the chat over to a person."""

from typing import Literal, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import interrupt


class Support(TypedDict, total=False):
    messages: list
    question: str
    account: str


def greet(state: Support):
    """Greet the customer and say you are the support assistant."""
    return {}


def ask_question(state: Support):
    """Ask the customer what they need help with."""
    interrupt("What can I help you with today?")
    return {}


def look_up(state: Support):
    """Look up the customer's account and the answer to their question."""
    return {}


def route(state: Support) -> Literal["answered", "needs_person"]:
    """Whether the assistant can answer.

    answered: The account holds the answer to the question.
    needs_person: The question needs a person.
    """
    return "answered"


def close_chat(state: Support):
    """Give the answer and close the chat."""
    return {}


def hand_over(state: Support):
    """Tell the customer a colleague will take over, and hand the chat to a person."""
    return {}


def build_graph():
    builder = StateGraph(Support)
    for node in (greet, ask_question, look_up, close_chat, hand_over):
        builder.add_node(node.__name__, node)
    builder.add_edge(START, "greet")
    builder.add_edge("greet", "ask_question")
    builder.add_edge("ask_question", "look_up")
    builder.add_conditional_edges("look_up", route, {"answered": "close_chat", "needs_person": "hand_over"})
    builder.add_edge("close_chat", END)
    builder.add_edge("hand_over", END)
    return builder.compile()
