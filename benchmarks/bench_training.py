"""Training benchmark: compile a workflow into the tiny CPU model and measure what it learned.

1. the offline corpus (2,125 travel dialogues by default; reused when already written),
2. the ``tiny-cpu`` recipe from scratch (the wall time is the figure to watch: ~10 minutes on
   2 CPU cores is the budget),
3. next-step accuracy and value carrying on held-out scenarios (gold customer turns fed in),
4. training throughput of our Trainer setup vs TRL's SFTTrainer: same model, data, batch and
   batching (TRL's own packing when the recipe packs, else its padded batches grouped by length),
   a few steps each, first step excluded.

    python benchmarks/bench_training.py [--domain travel] [--n 2125] [--eval-n 100] [--set num_train_epochs=4]
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


def throughput_vs_trl(corpus, model_dir: Path, work: Path, recipe, steps: int = 6) -> tuple[float, float]:
    """(ours, TRL) real training tokens per second, same tiny model config, data and batch."""
    from transformers import AutoTokenizer, set_seed
    from trl import SFTConfig, SFTTrainer

    from subterra.training import build_trainer, tiny_model

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    short = dict(max_steps=steps, eval_strategy="steps", eval_steps=10 * steps, logging_steps=steps)
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
    sft = SFTTrainer(model=tiny_model(tokenizer, recipe), args=config, processing_class=tokenizer,
                     train_dataset=corpus["train"].select_columns(["messages"]))
    return ours, timed_steps(sft, tokenizer.pad_token_id, steps)[0]


def main() -> None:
    import datasets
    import transformers

    from subterra import load_domain
    from subterra.agent import evaluate_next_steps
    from subterra.synthesis import DEFAULT_SIZES, load_corpus, synthesize
    from subterra.training import load_recipe, parse_overrides, train

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domain", default="travel")
    parser.add_argument("--n", type=int, help="dialogues (default: the paper's size)")
    parser.add_argument("--recipe", default="tiny-cpu")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--eval-n", type=int, default=100, help="held-out scenarios to evaluate")
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
    print(f"{wf.name}: {len(corpus['train'])} train / {len(corpus['eval'])} eval dialogues; recipe {args.recipe} "
          f"({recipe.num_layers} layers x {recipe.hidden_size}, vocab {recipe.vocab_size}, "
          f"{recipe.num_train_epochs:g} epochs, lr {recipe.learning_rate:g})")
    if not args.reuse:
        shutil.rmtree(out / "model", ignore_errors=True)
        result = train(corpus, out / "model", recipe)
        print(f"training: {result.train_seconds / 60:.1f} min, {result.global_step} steps, "
              f"{result.parameters / 1e6:.2f} M parameters, eval loss {result.eval_loss:.4f} "
              f"(best {Path(result.best_checkpoint).name}), {result.tokens_per_second:,.0f} tokens/s, "
              f"padding {100 * result.padding_fraction:.1f}%")
    report = evaluate_next_steps(out / "model", wf, n=args.eval_n)
    print(f"held-out ({report.seconds:.0f} s): {report}")
    for failure in report.failures[:5]:
        print(f"  {failure['node']}: gold {failure['gold']!r}\n  {'':{len(failure['node'])}}  got  {failure['reply']!r}")
    ours, trl = throughput_vs_trl(corpus, out / "model", out / "throughput", recipe, args.steps)
    print(f"throughput: ours {ours:,.0f} tokens/s, TRL SFTTrainer {trl:,.0f} tokens/s, ratio {ours / trl:.2f}x")


if __name__ == "__main__":
    main()
