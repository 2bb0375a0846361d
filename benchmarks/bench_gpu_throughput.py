"""GPU training throughput: a randomly initialised Qwen2.5-0.5B-shaped model, bf16, our training entry point.

No download: the model is built from Qwen2.5-0.5B's public config (24 layers, hidden 896, 14 heads with
2 key-value heads, MLP 4864, vocabulary 151,936, tied embeddings) with random weights and saved with a
tokenizer fitted to the corpus, so :func:`subterra.training.build_trainer` loads it as a local "base
model", exactly like a hub checkpoint. Training runs packed blocks through ``transformers.Trainer``
(the same path as ``subterra train``); the first steps are excluded from the timing.

MFU = achieved FLOP/s / the chip's peak dense bf16 FLOP/s, with FLOPs per token = 6 N (N = the
parameters that take part in matrix products, the tied embedding counted once as the output layer)
+ 6 L d s (causal attention over the mean dialogue length s, forward and backward).

    python benchmarks/bench_gpu_throughput.py [--steps 30] [--batch 8] [--block 2048]
    python benchmarks/bench_gpu_throughput.py --layers 2 --steps 4 --block 512   # a CPU smoke run
"""

from __future__ import annotations

import argparse
from pathlib import Path

QWEN25_05B = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                  num_key_value_heads=2, vocab_size=151_936, max_position_embeddings=32_768, rope_theta=1e6,
                  rms_norm_eps=1e-6, tie_word_embeddings=True)
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12}   # dense


def peak_flops(name: str) -> float | None:
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def random_base(folder: Path, corpus, layers: int | None) -> Path:
    """A Qwen2.5-0.5B-shaped model with random weights and a corpus-fitted tokenizer, saved in ``folder``."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from subterra.encoding import corpus_texts, fit_tokenizer

    tokenizer = fit_tokenizer(corpus_texts(corpus), 4096)
    shape = dict(QWEN25_05B, **({"num_hidden_layers": layers} if layers else {}))
    config = Qwen2Config(**shape, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=None)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def main() -> None:
    import datasets
    import torch
    import transformers
    from subterra import load_domain
    from subterra.synthesis import load_corpus, synthesize
    from subterra.training import build_trainer

    from bench_training import timed_steps      # this folder is on sys.path when a script runs from it

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domain", default="travel")
    parser.add_argument("--n", type=int, default=2125, help="dialogues in the offline corpus")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5, help="steps left out of the timing")
    parser.add_argument("--batch", type=int, default=8, help="packed blocks per step")
    parser.add_argument("--block", type=int, default=2048, help="tokens per packed block")
    parser.add_argument("--layers", type=int, help="fewer layers (a smoke run)")
    parser.add_argument("--checkpointing", action="store_true", help="gradient checkpointing")
    parser.add_argument("--out", default="outputs/bench/gpu")
    args = parser.parse_args()
    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()

    if not torch.cuda.is_available() and not args.layers:
        print("GPU throughput: no CUDA device here, skipped (a CPU smoke run: --layers 2 --steps 4 --block 512)")
        return
    out = Path(args.out)
    wf = load_domain(args.domain)
    synthesize(wf, args.n, out / "synthesis", "offline", progress=False)
    corpus = load_corpus(out / "synthesis")
    base = random_base(out / "base", corpus, args.layers)
    cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name() if cuda else "cpu"
    trainer, recipe, _ = build_trainer(
        corpus, out / "run", None, model_name_or_path=str(base), packing=True, max_length=args.block,
        per_device_train_batch_size=args.batch, gradient_accumulation_steps=1, bf16=cuda,
        learning_rate=2e-5, max_steps=args.steps, eval_strategy="steps", eval_steps=10 * args.steps,
        logging_steps=args.steps, gradient_checkpointing=args.checkpointing, relexicalize=0.0)
    trainer.args.load_best_model_at_end = False
    trainer.args.save_strategy = "no"

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    rate, step_seconds = timed_steps(trainer, trainer.processing_class.pad_token_id, args.steps, args.warmup)

    model = trainer.model
    cfg = model.config
    params = sum(p.numel() for p in model.parameters())
    matmul = params - cfg.vocab_size * cfg.hidden_size * (0 if cfg.tie_word_embeddings else 1)
    context = trainer.train_tokens / len(corpus["train"])          # mean dialogue length in tokens
    flops_per_token = 6 * matmul + 6 * cfg.num_hidden_layers * cfg.hidden_size * context
    peak = peak_flops(device)
    mfu = f"{100 * rate * flops_per_token / peak:.1f}%" if peak else "n/a (unknown peak)"
    memory = f", peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if cuda else ""
    print(f"device: {device}; torch {torch.__version__}, transformers {transformers.__version__}")
    print(f"model: Qwen2.5-0.5B shape, {cfg.num_hidden_layers} layers, {params / 1e6:.0f} M parameters "
          f"(random init), bf16={recipe.bf16}, attention {cfg._attn_implementation}"
          f"{', gradient checkpointing' if args.checkpointing else ''}")
    print(f"batch: {args.batch} packed blocks x {args.block} tokens; mean dialogue {context:.0f} tokens; "
          f"{args.steps - args.warmup} timed steps of {args.steps}")
    print(f"throughput: {rate:,.0f} tokens/s, {step_seconds:.3f} s/step, "
          f"{rate * flops_per_token / 1e12:.1f} TFLOP/s, MFU {mfu}{memory}")


if __name__ == "__main__":
    main()
