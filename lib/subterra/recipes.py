"""Training recipes: every setting of a compile in one validated dataclass, one YAML file per model.

Recipes live in ``recipes/`` (alignment-handbook style): ``smollm2-135m-auto`` (the default: the
pretrained SmolLM2-135M-Instruct on a CPU, a step budget sized by the workflow and a plateau stop),
``smollm2-135m-cpu`` (the same base for a fixed 60 steps: what the full settings' records used for
300), ``tiny-cpu`` (a model trained from scratch: the lesson of notebook 04), and the paper's GPU
recipes. :func:`load_recipe` reads a name, a file, a dict or a Recipe; a bad field fails with one
line naming the file and the field.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path as FilePath
from typing import Any, Iterable

RECIPE_DIR = FilePath(__file__).resolve().parents[2] / "recipes"
SCRATCH = "scratch"
DEFAULT_RECIPE = "smollm2-135m-auto"
AUTO = "auto"                            # max_steps: auto -- the budget follows the workflow (training.auto_budget)
MEASURE = "measure"                      # cpu_tokens_per_second: measure -- timed on this machine before training
GPU_RECIPE = "qwen2.5-0.5b-instruct"     # one modest GPU (16-24 GB): what a hosted notebook with a GPU gets
SCRATCH_SHAPE = ("vocab_size", "num_layers", "hidden_size", "num_heads", "intermediate_size")   # the tiny model's
PLATEAU = ("plateau_patience", "plateau_min_delta", "plateau_dialogues")                     # stop_on_plateau's


# --------------------------------------------------------------------------- recipes

class RecipeError(ValueError):
    """A recipe that cannot be used, described in one line naming the file and the field."""

    def __init__(self, message: str, *, file: str | None = None, field: str | None = None):
        self.file, self.field, self.message = file, field, message
        where = (file or "<recipe>") + (f": field '{field}'" if field else "")
        super().__init__(f"{where}: {message}")


@dataclass
class Recipe:
    """Every training setting. The defaults are the ``tiny-cpu`` recipe (from scratch, on CPU).

    The effective batch is ``per_device_train_batch_size * gradient_accumulation_steps * devices``
    sequences: packed blocks of ``max_length`` tokens when ``packing`` is on, dialogues when it is off.
    """

    model_name_or_path: str = SCRATCH     # hub id, local folder, or "scratch"
    # the from-scratch model (ignored for a base model)
    vocab_size: int = 2048
    num_layers: int = 4
    hidden_size: int = 256
    num_heads: int = 4
    intermediate_size: int = 768
    # optimisation
    num_train_epochs: float = 4.0
    max_steps: int | str = -1             # > 0 overrides the epochs; "auto": sized by the corpus (auto_budget)
    max_minutes: float = 30               # auto: the training time a CPU run may take (no cap on CUDA)
    cpu_tokens_per_second: float | str = MEASURE   # auto: the CPU speed for that cap; "measure": timed here
    learning_rate: float = 1e-3
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.05
    weight_decay: float = 0.01
    per_device_train_batch_size: int = 16
    gradient_accumulation_steps: int = 1
    max_length: int = 1024
    packing: bool = False                 # True: pack dialogues into blocks of max_length tokens
    bf16: str | bool = "auto"             # auto: where it is fast (a GPU with bf16, a CPU with native bf16)
    gradient_checkpointing: bool = False
    seed: int = 0
    # evaluation and checkpoints (the best checkpoint by eval loss is loaded at the end)
    eval_strategy: str = "epoch"          # epoch | steps
    eval_steps: int = 100
    train_dialogues: int = 0              # > 0: train on this many dialogues, chosen to cover every path evenly
    max_eval_dialogues: int = 0           # > 0: the eval loss on this many dialogues of the eval split (CPU budgets)
    save_total_limit: int = 2
    logging_steps: int = 10
    # stop when a next-step check on held-out gold dialogues stops improving (training.plateau_stop)
    stop_on_plateau: bool = False
    plateau_patience: int = 2             # evaluations without an improvement before the stop
    plateau_min_delta: float = 0.01       # an improvement: permitted-step accuracy up by more than this
    plateau_dialogues: int = 8            # held-out dialogues checked at each evaluation
    relexicalize: float = 0.5             # share of training dialogues whose customer values are made up
    lora_rank: int = 0                    # > 0: LoRA adapters (peft) instead of full parameters
    train_layers: int = 0                 # > 0: train only the top N decoder layers (the rest frozen)
    source: str | None = field(default=None, repr=False, compare=False)

    @property
    def scratch(self) -> bool:
        return self.model_name_or_path in (SCRATCH, "", None)

    def as_dict(self) -> dict:
        """Every field (what a run records, and what resuming compares)."""
        return {k: v for k, v in asdict(self).items() if k != "source"}

    def applicable(self) -> dict:
        """The fields that take effect in this recipe, for people to read (its repr, the model card).

        Left out: the from-scratch shape for a pretrained base; the epoch count under a step budget
        (and ``max_steps`` when the epochs rule); the auto budget's speed and time cap unless
        ``max_steps: auto``; the plateau stop's settings when it is off; ``eval_steps`` when
        evaluating per epoch.
        """
        unused = set() if self.scratch else set(SCRATCH_SHAPE)
        unused.add("max_steps" if self.max_steps == -1 else "num_train_epochs")
        if self.max_steps != AUTO:
            unused |= {"max_minutes", "cpu_tokens_per_second"}
        if not self.stop_on_plateau:
            unused |= set(PLATEAU)
        if self.eval_strategy != "steps":
            unused.add("eval_steps")
        return {k: v for k, v in self.as_dict().items() if k not in unused}

    def __repr__(self) -> str:
        return f"Recipe({', '.join(f'{k}={v!r}' for k, v in self.applicable().items())})"


_CHOICES = {"lr_scheduler_type": ("cosine", "linear", "constant", "constant_with_warmup", "cosine_with_restarts"),
            "eval_strategy": ("epoch", "steps"), "bf16": (True, False, "auto")}
_POSITIVE = {"vocab_size", "num_layers", "hidden_size", "num_heads", "intermediate_size", "num_train_epochs",
             "learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps", "max_length",
             "eval_steps", "save_total_limit", "logging_steps", "max_minutes", "plateau_patience",
             "plateau_dialogues"}


def _check(recipe: Recipe) -> Recipe:
    fail = lambda name, msg: RecipeError(msg, file=recipe.source, field=name)  # noqa: E731
    types = {f.name: f.type for f in fields(Recipe)}
    for name, kind in types.items():
        if name == "source":
            continue
        value = getattr(recipe, name)
        expect = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,)}.get(kind)
        if name == "bf16":
            expect = (bool, str)
        if name == "cpu_tokens_per_second":
            expect = None                 # a positive speed or "measure": checked below
        if expect and (not isinstance(value, expect) or (isinstance(value, bool) and bool not in expect)):
            raise fail(name, f"expected {kind.split(' ')[0]}, got {value!r}")
        if name in _POSITIVE and value <= 0:
            raise fail(name, f"must be positive, got {value!r}")
        if name in _CHOICES and value not in _CHOICES[name]:
            raise fail(name, f"must be one of {', '.join(map(str, _CHOICES[name]))}; got {value!r}")
    steps = recipe.max_steps
    if steps != AUTO and (not isinstance(steps, int) or isinstance(steps, bool) or not (steps > 0 or steps == -1)):
        raise fail("max_steps", f"must be a positive number of steps, -1 (the epochs) or {AUTO}; got {steps!r}")
    speed = recipe.cpu_tokens_per_second
    if speed != MEASURE and (isinstance(speed, bool) or not isinstance(speed, (int, float)) or speed <= 0):
        raise fail("cpu_tokens_per_second", f"must be a positive speed (tokens/s) or {MEASURE}; got {speed!r}")
    if recipe.plateau_min_delta < 0:
        raise fail("plateau_min_delta", f"must be 0 or positive, got {recipe.plateau_min_delta!r}")
    if not 0 <= recipe.relexicalize <= 1:
        raise fail("relexicalize", f"must be in [0, 1], got {recipe.relexicalize!r}")
    if not 0 <= recipe.warmup_ratio < 1:
        raise fail("warmup_ratio", f"must be in [0, 1), got {recipe.warmup_ratio!r}")
    if recipe.train_dialogues < 0:
        raise fail("train_dialogues", f"must be 0 (the whole training split) or positive, got {recipe.train_dialogues!r}")
    if recipe.max_eval_dialogues < 0:
        raise fail("max_eval_dialogues", f"must be 0 (the whole eval split) or positive, got {recipe.max_eval_dialogues!r}")
    if recipe.train_layers < 0:
        raise fail("train_layers", f"must be 0 (every layer) or positive, got {recipe.train_layers!r}")
    if recipe.lora_rank < 0:
        raise fail("lora_rank", f"must be 0 (full fine-tune) or positive, got {recipe.lora_rank!r}")
    if recipe.scratch and recipe.hidden_size % recipe.num_heads:
        raise fail("hidden_size", f"{recipe.hidden_size} is not divisible by num_heads={recipe.num_heads}")
    return recipe


def load_recipe(source: "str | FilePath | dict | Recipe | None" = None, **overrides: Any) -> Recipe:
    """A validated recipe from a name in ``recipes/`` (``tiny-cpu``), a YAML file, a dict or a Recipe.

    Unknown fields, wrong types and out-of-range values raise :class:`RecipeError`, one line
    naming the file and the field. ``overrides`` replace fields after loading.
    """
    import yaml

    if isinstance(source, Recipe):
        data, file = source.as_dict(), source.source
    elif isinstance(source, dict) or source is None:
        data, file = dict(source or {}), None
    else:
        path = FilePath(source)
        if path.suffix not in (".yaml", ".yml") and not path.exists():
            path = RECIPE_DIR / f"{source}.yaml"
        file = str(path)
        if not path.exists():
            known = ", ".join(sorted(p.stem for p in RECIPE_DIR.glob("*.yaml")))
            raise RecipeError(f"no such recipe (known: {known})", file=file)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise RecipeError(f"YAML syntax error{f' at line {mark.line + 1}' if mark else ''}", file=file) from None
        if not isinstance(data, dict):
            raise RecipeError("a recipe is a mapping of field: value", file=file)
    data.update(overrides)
    known = {f.name for f in fields(Recipe)} - {"source"}
    for name in data:
        if name not in known:
            raise RecipeError(f"unknown field (known: {', '.join(sorted(known))})", file=file, field=name)
    if data.get("model_name_or_path") is None:
        data.pop("model_name_or_path", None)
    for name in ("learning_rate", "warmup_ratio", "weight_decay", "num_train_epochs", "relexicalize", "max_minutes",
                 "cpu_tokens_per_second", "plateau_min_delta"):
        if isinstance(data.get(name), str) and data[name] != MEASURE:   # YAML reads 2e-5 (no dot) as a string
            try:
                data[name] = float(data[name])
            except ValueError:
                if name != "cpu_tokens_per_second":         # its own check names both forms it takes
                    raise RecipeError(f"expected a number, got {data[name]!r}", file=file, field=name) from None
    return _check(Recipe(**data, source=file))


def accelerator() -> str:
    """The device a compile trains on and a model runs on: cuda, mps or cpu."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def choose_recipe(requested: str | None = None, cuda: bool | None = None) -> str:
    """The recipe a notebook uses: ``requested`` when given (``SUBTERRA_RECIPE``), else the GPU recipe
    where CUDA is available, else the CPU default. ``cuda=None`` asks :func:`accelerator`."""
    if requested:
        return requested
    if cuda is None:
        cuda = accelerator() == "cuda"
    return GPU_RECIPE if cuda else DEFAULT_RECIPE


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``["learning_rate=2e-5", "packing=true"]`` -> recipe overrides, each value read as YAML."""
    import yaml

    overrides = {}
    for item in items:
        if "=" not in item:
            raise RecipeError(f"expected FIELD=VALUE, got {item!r}", file="--set")
        key, value = item.split("=", 1)
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides
