"""Training benchmark: compile a workflow into the default model and measure what it learned.

1. the offline corpus (2,125 travel dialogues by default; reused when already written),
2. the default recipe (``smollm2-135m-auto``: the pretrained SmolLM2-135M-Instruct, full parameters, a step
   budget that follows the workflow and a plateau stop; the wall time is the figure to watch: at most ~30
   minutes of training on 2 CPU cores, evaluations on top), with a
   learning curve: next step and values carried on ``--curve-n`` held-out dialogues at
   ``--curve`` points (their evaluation time is not counted as training time),
3. next-step accuracy and value carrying on ``--eval-n`` held-out scenarios (gold customer turns fed in),
4. with ``--speed``: training tokens/s of what each saving buys (the model's own loss against the
   loss projected at labelled positions only, full parameters against the top layers only),
5. with ``--trl``: our Trainer setup against TRL's SFTTrainer (same model, data and batch).

    python benchmarks/bench_training.py [--domain travel] [--recipe smollm2-135m-cpu] [--set max_steps=100]
    python benchmarks/bench_training.py --recipe tiny-cpu --trl       # the from-scratch lesson
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path



class Counting:
    """Wraps a data collator; remembers the real (non-padding) tokens of every batch it builds."""

    def __init__(self, collate, pad_id: int):
        self.collate, self.pad_id, self.tokens = collate, pad_id, []

    def __call__(self, rows):
        batch = self.collate(rows)
        self.tokens.append(int((batch["input_ids"] != self.pad_id).sum()))
        return batch


def timed_steps(trainer, pad_id: int, steps: int, warmup: int = 1) -> tuple[float, float]:
    """(real tokens per second, seconds per step) over steps ``warmup``..``steps`` (early steps carry one-off costs).

    Each step is timed between the Trainer's step callbacks, after the GPU (if any) has finished its work.
    """
    import torch
    from transformers import TrainerCallback

    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    marks: list[tuple[float, float]] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *args, **kwargs):
            sync()
            self.t = time.perf_counter()

        def on_step_end(self, *args, **kwargs):
            sync()
            marks.append((self.t, time.perf_counter()))

    counting = Counting(trainer.data_collator, pad_id)
    trainer.data_collator = counting
    trainer.add_callback(Clock())
    trainer.train()
    accumulation = trainer.args.gradient_accumulation_steps
    tokens = sum(counting.tokens[accumulation * warmup:accumulation * steps])
    seconds = sum(end - start for start, end in marks[warmup:steps])
    return tokens / seconds, seconds / len(marks[warmup:steps])


class Curve:
    """A Trainer callback: at the given steps, evaluate next steps and values on a few held-out dialogues."""

    def __init__(self, workflow, steps: list[int], n: int, batch: int):
        from transformers import TrainerCallback

        curve = self
        self.workflow, self.steps, self.n, self.batch = workflow, set(steps), n, batch
        self.points: list[tuple[int, object]] = []
        self.seconds = 0.0

        class Callback(TrainerCallback):
            def on_step_end(self, args, state, control, model=None, processing_class=None, **kwargs):
                if state.global_step in curve.steps:
                    curve.measure(state.global_step, model, processing_class)

        self.callback = Callback()

    def measure(self, step, model, tokenizer) -> None:
        from subterra.agent import Agent
        from subterra.next_step import evaluate_next_steps

        start = time.perf_counter()
        report = evaluate_next_steps(Agent.from_model(model, tokenizer), self.workflow, n=self.n)
        self.points.append((step, report))
        self.seconds += time.perf_counter() - start
        print(f"  step {step:4d} ({step * self.batch:5d} dialogue passes): {report}", flush=True)


def speed_table(corpus, recipe, work: Path, steps: int = 5) -> None:
    """Training tokens/s: the model's own loss vs the loss at labelled positions, full vs top layers."""
    import types

    from transformers import AutoConfig, Trainer

    from subterra.bases import resolve_base
    from subterra.training import build_trainer

    variants = [("model's own loss (logits everywhere)", {}, True), ("loss at labelled positions only", {}, False)]
    if not recipe.scratch:
        layers = AutoConfig.from_pretrained(resolve_base(recipe.model_name_or_path)).num_hidden_layers
        variants += [(f"top {k} of {layers} layers trained", {"train_layers": k}, False) for k in (layers // 2, layers // 4)]
    for label, extra, plain in variants:
        shutil.rmtree(work, ignore_errors=True)
        trainer, _, _ = build_trainer(corpus, work, recipe, max_steps=steps, eval_strategy="steps",
                                      eval_steps=10 * steps, logging_steps=steps, stop_on_plateau=False, **extra)
        trainer.args.load_best_model_at_end = False
        trainer.args.save_strategy = "no"
        if plain:
            trainer.compute_loss = types.MethodType(Trainer.compute_loss, trainer)
            trainer.loss_is_scaled_for_ga = None
        tps, sps = timed_steps(trainer, trainer.processing_class.pad_token_id, steps, warmup=2)
        print(f"  {label}: {tps:,.0f} tokens/s ({sps:.1f} s/step)", flush=True)


def throughput_vs_trl(corpus, model_dir: Path, work: Path, recipe, steps: int = 6) -> tuple[float, float]:
    """(ours, TRL) real training tokens per second, same tiny model config, data and batch."""
    from transformers import AutoTokenizer, set_seed
    from trl import SFTConfig, SFTTrainer

    from subterra.training import build_trainer, tiny_model

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    short = dict(max_steps=steps, eval_strategy="steps", eval_steps=10 * steps, logging_steps=steps,
                 stop_on_plateau=False)
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(model_dir, work / "ours", ignore=shutil.ignore_patterns("checkpoint-*", "*.safetensors"))
    trainer, _, _ = build_trainer(corpus, work / "ours", recipe, **short)
    trainer.args.load_best_model_at_end = False
    ours, _ = timed_steps(trainer, tokenizer.pad_token_id, steps)

    set_seed(recipe.seed)
    config = SFTConfig(output_dir=str(work / "trl"), max_steps=steps, packing=recipe.packing, max_length=recipe.max_length,
                       per_device_train_batch_size=recipe.per_device_train_batch_size,
                       gradient_accumulation_steps=recipe.gradient_accumulation_steps,
                       learning_rate=recipe.learning_rate, lr_scheduler_type=recipe.lr_scheduler_type,
                       assistant_only_loss=True, bf16=False, save_strategy="no", report_to="none",
                       logging_steps=steps, disable_tqdm=True, seed=recipe.seed,
                       train_sampling_strategy="random" if recipe.packing else "group_by_length")
    if recipe.scratch:
        model = tiny_model(tokenizer, recipe)
    else:
        from transformers import AutoModelForCausalLM

        from subterra.bases import resolve_base

        model = AutoModelForCausalLM.from_pretrained(resolve_base(recipe.model_name_or_path))
    sft = SFTTrainer(model=model, args=config, processing_class=tokenizer,
                     train_dataset=corpus["train"].select_columns(["messages"]))
    return ours, timed_steps(sft, tokenizer.pad_token_id, steps)[0]


def main() -> None:
    import datasets
    import transformers

    from subterra import load_domain
    from subterra.next_step import evaluate_next_steps
    from subterra.recipes import DEFAULT_RECIPE, load_recipe, parse_overrides
    from subterra.synthesis import DEFAULT_SIZES, load_corpus, synthesize
    from subterra.training import accelerator, train

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domain", default="travel")
    parser.add_argument("--n", type=int, help="dialogues (default: the paper's size)")
    parser.add_argument("--recipe", default=DEFAULT_RECIPE)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--eval-n", type=int, default=100, help="held-out scenarios to evaluate")
    parser.add_argument("--curve", default="", help="steps at which to measure the learning curve, e.g. 20,40,60")
    parser.add_argument("--curve-n", type=int, default=12, help="held-out scenarios per curve point")
    parser.add_argument("--speed", action="store_true", help="tokens/s of each saving, side by side")
    parser.add_argument("--trl", action="store_true", help="our throughput against TRL's SFTTrainer")
    parser.add_argument("--steps", type=int, default=6, help="steps per throughput run")
    parser.add_argument("--out", default="outputs/bench/training")
    parser.add_argument("--reuse", action="store_true", help="evaluate the model already in OUT/model")
    args = parser.parse_args()
    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()

    wf = load_domain(args.domain)
    out = Path(args.out) / wf.name
    n = args.n or DEFAULT_SIZES.get(wf.name, 1000)
    synthesize(wf, n, out / "synthesis", "offline", progress=False)
    corpus = load_corpus(out / "synthesis")
    recipe = load_recipe(args.recipe, **parse_overrides(args.set))
    model = "from scratch" if recipe.scratch else recipe.model_name_or_path
    budget = (f"{recipe.max_steps} steps" if recipe.max_steps == "auto" or recipe.max_steps > 0
              else f"{recipe.num_train_epochs} epochs")
    print(f"{wf.name}: {len(corpus['train'])} train / {len(corpus['eval'])} eval dialogues; recipe {args.recipe} "
          f"({model}, {budget} of {recipe.per_device_train_batch_size}, "
          f"lr {recipe.learning_rate:g}{f', top {recipe.train_layers} layers' if recipe.train_layers else ''}); "
          f"device {accelerator()}", flush=True)
    if args.speed:
        print("speed (training tokens/s, same batches):")
        speed_table(corpus, recipe, out / "speed", args.steps)
    if not args.reuse:
        shutil.rmtree(out / "model", ignore_errors=True)
        curve = Curve(wf, [int(s) for s in args.curve.split(",") if s], args.curve_n,
                      recipe.per_device_train_batch_size * recipe.gradient_accumulation_steps)
        if curve.steps:
            print(f"learning curve ({args.curve_n} held-out dialogues per point):")
        result = train(corpus, out / "model", recipe, callbacks=[curve.callback], workflow=wf)   # for the plateau stop
        seconds = result.train_seconds - curve.seconds
        print(f"training: {seconds / 60:.1f} min, {result.global_step} steps "
              f"({result.global_step * curve.batch} dialogue passes), {result.parameters / 1e6:.1f} M parameters, "
              f"eval loss {result.eval_loss:.4f} (best {Path(result.best_checkpoint).name}), "
              f"{result.train_tokens * result.epochs / seconds:,.0f} tokens/s, padding {100 * result.padding_fraction:.1f}%",
              flush=True)
    report = evaluate_next_steps(out / "model", wf, n=args.eval_n)
    print(f"held-out ({report.seconds:.0f} s): {report}")
    for failure in report.failures[:5]:
        print(f"  {failure['node']}: gold {failure['gold']!r}\n  {'':{len(failure['node'])}}  got  {failure['reply']!r}")
    if args.trl:
        ours, trl = throughput_vs_trl(corpus, out / "model", out / "throughput", recipe, args.steps)
        print(f"throughput: ours {ours:,.0f} tokens/s, TRL SFTTrainer {trl:,.0f} tokens/s, ratio {ours / trl:.2f}x")


if __name__ == "__main__":
    main()
