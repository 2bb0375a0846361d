"""The agent and its evaluation: the fair value measure, the loop guard, a perfect and a faulty scripted agent."""

import random

import pytest
import torch

from subterra import load_domain, render
from subterra.agent import Agent, NoRepeatInReply
from subterra.next_step import check_values, evaluate_next_steps, gold_dialogues, template_fills

VALUES = {"name": "Gulnara", "surname": "Halvorsen", "airline": "Icelandair", "flight_number": "1939",
          "origin": "Doha", "destination": "Hobart", "travel_date": "May 11", "departure_time": "4:45 pm",
          "travellers": 6, "cabin": "premium economy", "price": 2700}


@pytest.fixture(scope="module")
def travel():
    return load_domain("travel")


def test_template_fills_reads_each_slot_and_allows_an_opener():
    fills = template_fills("I found {city} for {price}.", "Sure. I found Braga for 300.")
    assert fills == [("city", "Braga"), ("price", "300")]
    assert template_fills("I found {city} for {price}.", "We have nothing for you.") is None


def test_every_template_of_a_node_filled_right_is_precise_and_complete(travel):
    for template in travel.nodes["booking_summary"].examples:
        check = check_values(travel, "booking_summary", "Of course. " + render(template, VALUES), VALUES)
        assert check.precise and check.complete, (template, check)
        assert check.template == template


def test_swapped_and_invented_values_are_wrong(travel):
    template = travel.nodes["booking_summary"].examples[0]
    swapped = render(template, {**VALUES, "origin": "Hobart", "destination": "Doha"})
    check = check_values(travel, "booking_summary", swapped, VALUES)
    assert set(check.wrong) == {"Hobart", "Doha"} and check.filled == check.slots - 2
    invented = render(template, {**VALUES, "name": "Gulnrara"})
    assert check_values(travel, "booking_summary", invented, VALUES).wrong == ("Gulnrara",)


def test_a_paraphrase_naming_another_known_value_is_wrong(travel):
    reply = "Great, Icelandair 1939 from Doha to Lisbon it is. Shall I book it?"
    check = check_values(travel, "booking_summary", reply, VALUES)
    assert "Lisbon" in check.wrong and not check.complete and 0 < check.recall < 1


def test_loop_guard_bans_a_repeat_inside_the_reply_only():
    guard = NoRepeatInReply(3)              # the prompt had 5 6 7: only the reply's own tokens count
    for token in [6, 9, 5, 6]:
        guard.add(token)
    assert guard.banned() == []             # 5 6 never came before inside the reply
    guard = NoRepeatInReply(3)
    for token in [5, 6, 9, 5, 6]:           # 5 6 9 written; 5 6 again: 9 would repeat a 3-token run
        guard.add(token)
    assert guard.banned() == [9]
    guard.add(7)                            # the reply moved on: 6 7 was never followed by anything
    assert guard.banned() == []


class ScriptedAgent(Agent):
    """Replies from the gold dialogue: another template of the gold node (``perfect``), or with two values swapped."""

    def __init__(self, workflow, n, swap=False):
        self.workflow, self.swap = workflow, swap
        self.gold = {d.messages(workflow.system_prompt)[1]["content"] + str(d.scenario.values): d
                     for d in gold_dialogues(workflow, n)}
        self.model, self.tokenizer = None, None

    def reply_batch(self, conversations, batch_size=32, progress=False):
        out = []
        for messages in conversations:
            dialogue = next(d for d in self.gold.values()
                            if d.messages(self.workflow.system_prompt)[:len(messages)] == messages)
            turn = dialogue.turns[len(messages) - 1]
            turns = dialogue.turns[:len(messages)]      # the values in force here: a new date, the other card
            values = self.workflow.values_along([t.node for t in turns], dialogue.scenario.values)[-1]
            if self.swap and "origin" in values:
                values["origin"], values["destination"] = values["destination"], values["origin"]
            examples = self.workflow.nodes[turn.node].examples
            template = random.Random(turn.content).choice(examples)     # often not the gold's template
            out.append(render(template, values))
        return out


def test_a_perfect_agent_scores_full_marks_even_with_other_templates(travel, monkeypatch):
    monkeypatch.setattr("subterra.next_step.copy_token_accuracy", lambda *a, **k: (1.0, 1))
    report = evaluate_next_steps(ScriptedAgent(travel, 12), travel, n=12)
    assert report.copy_turns > 10 and report.value_turns > 10
    assert report.copy_carrying == 1.0 and report.value_precision == 1.0 and report.value_recall == 1.0
    assert report.dialogue_permitted == 1.0


def test_an_agent_that_swaps_values_loses_precision(travel, monkeypatch):
    monkeypatch.setattr("subterra.next_step.copy_token_accuracy", lambda *a, **k: (1.0, 1))
    report = evaluate_next_steps(ScriptedAgent(travel, 12, swap=True), travel, n=12)
    assert report.value_precision < 0.9 and report.copy_carrying < 0.9
    assert any("wrong values" in f and f["wrong values"] for f in report.failures)


def test_values_the_agent_brings_in_first_are_not_judged(travel):
    """The flight a search finds is a lookup the model does not have: only values said before count."""
    template = travel.nodes["booking_summary"].examples[0]
    other_flight = render(template, {**VALUES, "airline": "Iberia", "flight_number": "1811", "price": 2280})
    said = "I'd like to fly from Doha to Hobart on May 11, I'm Gulnara Halvorsen."
    check = check_values(travel, "booking_summary", other_flight, VALUES, said=said)
    assert check.precise and check.complete and check.slots == 4      # name, origin, destination, date: as said
    assert not check_values(travel, "booking_summary", other_flight, VALUES).precise    # all judged: wrong
    swapped = render(template, {**VALUES, "origin": "Hobart", "destination": "Doha"})
    assert set(check_values(travel, "booking_summary", swapped, VALUES, said=said).wrong) == {"Hobart", "Doha"}


# --------------------------------------------------------------------------- the prefix cache

@pytest.fixture(scope="module")
def tiny_chat():
    """(model, tokenizer): a two-layer model in float64 (so a padded batch reads exactly as a lone row), its
    weights drawn wide enough that what it writes depends on what it reads."""
    from subterra.encoding import fit_tokenizer
    from subterra.recipes import Recipe
    from subterra.training import tiny_model

    torch.manual_seed(0)
    tokenizer = fit_tokenizer(["You are a booking assistant. fly from city to Paris next round what 0123456789"] * 20,
                              300)
    recipe = Recipe(num_layers=2, hidden_size=32, num_heads=4, intermediate_size=64, vocab_size=300)
    model = tiny_model(tokenizer, recipe).double().eval()
    with torch.no_grad():
        for weights in model.parameters():
            if weights.dim() > 1:
                weights.normal_(0, 0.3)
    return model, tokenizer


def _agents(tiny_chat, cache_gib=1.0):
    """(cached, plain) agents on the same model; a token it often writes also ends a reply, so rows of one
    batch stop at different lengths."""
    from collections import Counter

    model, tokenizer = tiny_chat
    cached = Agent.from_model(model, tokenizer, max_new_tokens=10, cache_gib=cache_gib)
    plain = Agent.from_model(model, tokenizer, max_new_tokens=10)
    written = Counter()
    for i in range(5):
        prompt = plain.tokenizer.apply_chat_template([{"role": "user", "content": f"fly from city {i} to Paris"}],
                                                     add_generation_prompt=True, return_tensors="pt")
        out = model.generate(**prompt, max_new_tokens=8, do_sample=False)
        written.update(out[0, prompt["input_ids"].shape[1] + 1:].tolist())
    for agent in (cached, plain):
        agent.stop_ids = sorted({*agent.stop_ids, written.most_common(1)[0][0]})
    return cached, plain


def _rounds(agents, n=5, rounds=3, system="You are a booking assistant. " * 4):
    chats = [[{"role": "system", "content": system}, {"role": "user", "content": f"fly from city {i} to Paris"}]
             for i in range(n)]
    for r in range(rounds):
        replies = [agent.reply_batch(chats, batch_size=3) for agent in agents]
        yield chats, replies
        chats = [c + [{"role": "assistant", "content": a}, {"role": "user", "content": f"next round {r}{i}"}]
                 for i, (c, a) in enumerate(zip(chats, replies[-1]))]


def test_the_prefix_cache_gives_the_replies_of_reading_everything_again(tiny_chat):
    cached, plain = _agents(tiny_chat)
    lengths = set()
    for round_, (chats, (with_cache, without)) in enumerate(_rounds([cached, plain])):
        assert with_cache == without
        lengths |= {len(reply) for reply in without}
        if round_:   # each prompt continued from the entry its previous turn left: only the new part was read
            prompts = [cached.tokenizer.apply_chat_template(c, add_generation_prompt=True)["input_ids"]
                       for c in chats]
            shared = [cached.prefix_cache.longest(p)[1] for p in prompts]
            assert all(len(p) - n < 30 for p, n in zip(prompts, shared)), (shared, [len(p) for p in prompts])
    assert len(lengths) > 1                       # rows stopped at different lengths inside one batch
    assert len(cached.prefix_cache.entries) == 5  # one entry per conversation: each turn replaced its last one


def test_a_new_conversation_reuses_another_ones_system_prompt(tiny_chat):
    cached, _ = _agents(tiny_chat)
    system = "You are a booking assistant. " * 6
    cached.reply([{"role": "system", "content": system}, {"role": "user", "content": "fly from city 1"}])
    other = cached.tokenizer.apply_chat_template(
        [{"role": "system", "content": system}, {"role": "user", "content": "to Paris"}],
        add_generation_prompt=True)["input_ids"]
    system_only = cached.tokenizer.apply_chat_template([{"role": "system", "content": system}])["input_ids"]
    assert cached.prefix_cache.longest(other)[1] >= len(system_only) - 2


def test_the_prefix_cache_stays_within_its_budget_and_still_answers_the_same(tiny_chat):
    cached, plain = _agents(tiny_chat, cache_gib=1e-4)
    budget = cached.prefix_cache.max_tokens
    for _, (with_cache, without) in _rounds([cached, plain], n=6):
        assert with_cache == without
        assert cached.prefix_cache.tokens <= budget or len(cached.prefix_cache.entries) == 1


def test_a_model_in_training_is_never_served_from_the_cache(tiny_chat):
    cached, _ = _agents(tiny_chat)
    cached.model.train()
    try:
        cached.reply([{"role": "user", "content": "fly from city 2"}])
    finally:
        cached.model.eval()
    assert not cached.prefix_cache.entries
    assert Agent.from_model(*tiny_chat).prefix_cache is None   # a model in memory may still change: off by default


def test_the_batch_decodes_as_transformers_generate_does_each_row_alone(tiny_chat):
    """Rows leave the batch at their stop token; what each writes is what ``generate`` writes for it alone."""
    model, tokenizer = tiny_chat
    cached, _ = _agents(tiny_chat)
    agent = Agent.from_model(model, tokenizer, max_new_tokens=10, no_repeat=0)
    agent.stop_ids = cached.stop_ids
    chats = [[{"role": "user", "content": f"fly from city {i} to Paris" + " next" * i}] for i in range(6)]
    replies = agent.reply_batch(chats, batch_size=6)
    alone = []
    for chat in chats:
        prompt = agent.tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt")
        out = model.generate(**prompt, max_new_tokens=10, do_sample=False, eos_token_id=agent.stop_ids,
                             pad_token_id=agent.tokenizer.pad_token_id)
        written = out[0, prompt["input_ids"].shape[1]:].tolist()
        written = written[:min([written.index(t) for t in agent.stop_ids if t in written] or [len(written)])]
        alone.append(agent.tokenizer.decode(written, skip_special_tokens=True).strip())      # up to its stop token
    assert replies == alone
    assert len({len(r) for r in replies}) > 1          # rows stopped at different lengths


def test_a_reserved_layer_holds_what_concatenation_would_and_writes_in_place():
    from transformers.cache_utils import DynamicLayer

    from subterra.agent import _reserved_layer

    torch.manual_seed(0)
    chunks = [(torch.randn(3, 2, n, 4), torch.randn(3, 2, n, 4)) for n in (5, 1, 1, 4)]
    reserved, plain = _reserved_layer()(room=8), DynamicLayer()
    for step, (k, v) in enumerate(chunks):
        if step == 2:
            before = reserved.keys.data_ptr()
        keys, values = reserved.update(k, v)
        want_keys, want_values = plain.update(k, v)
        assert torch.equal(keys, want_keys) and torch.equal(values, want_values)
        assert reserved.get_seq_length() == plain.get_seq_length()
        if step == 2:
            assert keys.data_ptr() == before              # within its room: the same buffer, written in place
    assert reserved.get_seq_length() == 11                # past its room of 8: it grew, nothing lost
    index = torch.tensor([2, 0])
    reserved.batch_select_indices(index)
    plain.batch_select_indices(index)
    assert torch.equal(reserved.keys, plain.keys) and torch.equal(reserved.values, plain.values)
    k, v = torch.randn(2, 2, 1, 4), torch.randn(2, 2, 1, 4)
    assert torch.equal(reserved.update(k, v)[0], plain.update(k, v)[0])   # rows dropped, still writing on


def test_generation_runs_on_reserved_layers_and_the_prefix_cache_still_keeps_them(tiny_chat):
    from subterra.agent import _reserved_layer, reserve
    from transformers import DynamicCache

    model, _ = tiny_chat
    past = DynamicCache(config=model.config)
    reserve(past, 16)
    assert all(type(layer) is _reserved_layer() for layer in past.layers)
    cached, _ = _agents(tiny_chat)
    cached.reply([{"role": "user", "content": "fly from city 3"}])
    assert len(cached.prefix_cache.entries) == 1          # a reserved cache's rows are kept for the next turn


def test_on_linux_large_tensors_reuse_freed_memory_instead_of_faulting_in_fresh_pages():
    import platform
    import resource

    import torch

    from subterra.agent import keep_freed_memory

    if platform.libc_ver()[0] != "glibc":
        assert keep_freed_memory() is False                 # elsewhere: nothing changed, and it says so
        return
    assert keep_freed_memory() is True

    def faults_of_a_fresh_100_mb_tensor() -> int:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        x = torch.ones(25_000_000)                          # 100 MB, every page written
        after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        del x
        return after - before

    # without it, every one faults in all its 24,000 pages; with it, once the heap has grown to hold one
    # (a call or two), the next ones reuse it
    faults = [faults_of_a_fresh_100_mb_tensor() for _ in range(4)]
    assert faults[-1] < 25_000_000 * 4 // 4096 // 10, faults
