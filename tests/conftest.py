from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def recorded_workflow(domain: str):
    """The workflow a record in data/results/<domain> was made on: one written for the tests (tests/workflows),
    else the shipped domain."""
    from subterra import load_domain

    own = ROOT / "tests" / "workflows" / f"{domain}.yaml"
    return load_domain(own if own.exists() else domain)

# A small but complete workflow: a loop, a condition, a catalogue, held-out values, all terminal kinds.
TOY = """\
name: toy
title: Toy bookings
system_prompt: You are a helpful booking assistant.
variables:
  city: [Lisbon, Porto, Faro]
  budget: [100, 900]
  price: [300, 500]
held_out:
  city: [Braga]
catalogue:
  desk:
    - {name: Front desk, hours: 9-17}
    - {name: Night desk, hours: 17-9}
start: greet
nodes:
  - id: greet
    role: agent
    prompt: Greet the customer and ask where they want to go.
    examples: ["Hi! Where would you like to go?", "Hello, which city?"]
  - id: ask
    role: user
    prompt: Ask for a trip to {city} with a budget of {budget}.
    examples: ["A trip to {city}, budget {budget}."]
  - id: offer
    role: agent
    prompt: Offer a trip to {city} at {price}.
    examples: ["I found {city} for {price}."]
  - id: accept
    role: user
    prompt: Accept.
    examples: ["Yes please."]
  - id: change
    role: user
    prompt: Ask for another option.
    examples: ["Anything else?"]
  - id: human
    role: user
    prompt: Ask for a person.
    examples: ["Can I talk to a person?"]
  - id: done
    role: agent
    terminal: success
    prompt: Confirm the booking.
    examples: ["Booked {city}!"]
  - id: handoff
    role: agent
    terminal: escalation
    prompt: Hand over to the {desk.name}.
    examples: ["The {desk.name} ({desk.hours}) will take over."]
  - id: goodbye
    role: agent
    terminal: abandonment
    prompt: Say goodbye.
    examples: ["Goodbye."]
  - id: decline
    role: user
    prompt: Decline, it is too expensive.
    examples: ["Too expensive for me."]
edges:
  - {from: greet, to: ask}
  - {from: ask, to: offer}
  - {from: offer, to: accept, when: The price is within the customer's budget., check: budget >= price}
  - {from: offer, to: decline, when: The price is above the budget., check: budget < price}
  - {from: offer, to: change, when: The customer wants another option.}
  - {from: offer, to: human, when: The customer asks for a person.}
  - {from: change, to: offer}
  - {from: accept, to: done}
  - {from: human, to: handoff}
  - {from: decline, to: goodbye}
"""


@pytest.fixture
def toy_text() -> str:
    return TOY


@pytest.fixture
def toy_file(tmp_path) -> Path:
    path = tmp_path / "toy.yaml"
    path.write_text(TOY)
    return path
