"""The command line is a contract other tools use: exit codes, one error line per bad file, JSON."""

import argparse
import json
import subprocess
import sys

import pytest

from subterra.cli import build_parser, main
from test_paths import PAPER_SIZES


def run(*args):
    proc = subprocess.run([sys.executable, "-m", "subterra", *args], capture_output=True, text=True)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.parametrize("command", ["", "validate", "paths", "graph", "synthesize", "train", "simulate", "judge",
                                     "analyze", "tutorial"])
def test_help(command):
    code, out, _ = run(*([command] if command else []), "--help")
    assert code == 0 and "usage: subterra" in out


def test_validate_reports_each_bad_file_on_one_line(tmp_path, toy_file):
    bad = tmp_path / "bad.yaml"
    bad.write_text(toy_file.read_text().replace("to: offer}", "to: nowhere}"))
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    code, out, err = run("validate", str(toy_file), str(bad), str(broken))
    assert code == 1
    assert f"{toy_file}: ok" in out
    lines = err.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in err
    assert lines[0].startswith(f"{bad}:") and "unknown node 'nowhere'" in lines[0]
    assert lines[1].startswith(f"{broken}:") and "YAML syntax error" in lines[1]


def test_validate_shipped_domains_by_name():
    assert run("validate", "travel", "zoom", "insurance", "travel_tools", "insurance_tools")[0] == 0


@pytest.mark.parametrize("domain", PAPER_SIZES)
def test_paths_json_reports_paper_sizes(domain):
    code, out, _ = run("paths", f"data/workflows/{domain}.yaml", "--json")
    assert code == 0
    summary = json.loads(out)
    assert set(summary) == {"nodes", "decision_hubs", "paths", "min_turns", "max_turns", "terminals"}
    assert {k: summary[k] for k in PAPER_SIZES[domain]} == PAPER_SIZES[domain]
    assert sum(summary["terminals"].values()) == summary["paths"]


def test_paths_list_and_graph(toy_file, tmp_path, capsys):
    assert main(["paths", str(toy_file), "--list"]) == 0
    out = capsys.readouterr().out
    assert "6 paths" in out and "p0005" in out and "greet > ask > offer > human > handoff" in out
    html = tmp_path / "g.html"
    assert main(["graph", str(toy_file), "--path", "p0002", "--out", str(html)]) == 0
    assert html.exists() and "vis-network" in html.read_text()
    assert main(["graph", str(toy_file), "--path", "p9999", "--out", str(html)]) == 1
    assert "no path 'p9999'" in capsys.readouterr().err


def test_simulate_judge_analyze_pipeline(toy_file, tmp_path, capsys):
    sim = tmp_path / "sim"
    assert main(["simulate", "--domain", str(toy_file), "--conditions", "orchestrated,langgraph", "--n", "8",
                 "--out", str(sim)]) == 0
    captured = capsys.readouterr()
    assert "skipped langgraph: needs a frontier model" in captured.err
    assert "orchestrated: 8 conversations" in captured.out
    assert main(["judge", "--domain", str(toy_file), "--transcripts", str(sim)]) == 0
    assert (sim / "scores-offline.csv").exists()
    assert main(["analyze", "--domain", str(toy_file), "--transcripts", str(sim), "--scores",
                 str(sim / "scores-offline.csv"), "--out", str(tmp_path / "results")]) == 0
    summary = json.loads((tmp_path / "results" / "results.json").read_text())
    assert list(summary["conditions"]) == ["orchestrated"]
    assert main(["judge", "--domain", str(toy_file), "--transcripts", str(tmp_path / "empty")]) == 1


def test_synthesize_dry_run_without_a_key_prices_the_default_teacher(toy_file, capsys, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    assert main(["synthesize", "--domain", str(toy_file), "--n", "10", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "calls to offline" in out and "the teacher is claude-sonnet-5-5: ~$" in out


def test_thinking_flags_reach_the_remote_backends(toy_file, tmp_path, monkeypatch):
    from subterra.backends import BackendError

    built = []

    def get_backend(name=None, model=None, **options):
        built.append((name, model, options))
        raise BackendError("stop here")

    monkeypatch.setattr("subterra.backends.get_backend", get_backend)
    assert main(["synthesize", "--domain", str(toy_file), "--teacher", "anthropic", "--n", "2", "--thinking",
                 "adaptive", "--effort", "low", "--out", str(tmp_path / "syn")]) == 1
    assert main(["simulate", "--domain", str(toy_file), "--conditions", "in_context", "--frontier", "openai",
                 "--frontier-model", "gpt-5.5", "--n", "1", "--out", str(tmp_path / "sim")]) == 1
    assert built == [("anthropic", None, {"thinking": "adaptive", "effort": "low"}),
                     ("openai", "gpt-5.5", {"thinking": "off"})]


def test_tutorial_names_the_notebook_and_cell_that_failed_and_keeps_what_ran(tmp_path, monkeypatch):
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    nbformat.write(new_notebook(cells=[new_code_cell("print('ran')")]), notebooks / "01_fine.ipynb")
    nbformat.write(new_notebook(cells=[new_markdown_cell("# 02"), new_code_cell("print('before')"),
                                       new_code_cell("raise ValueError('no such value: x')")]),
                   notebooks / "02_broken.ipynb")
    monkeypatch.setenv("SUBTERRA_NOTEBOOKS", str(notebooks))
    out = tmp_path / "out"

    code, stdout, err = run("tutorial", "--out", str(out), "--only", "01", "--only", "02")
    assert code == 1 and "Traceback" not in err
    assert "02_broken.ipynb: cell 3 of 3 raised ValueError: no such value: x" in err
    assert "01_fine: " in stdout and (out / "notebooks" / "01_fine.ipynb").exists()   # the one before it ran
    executed = nbformat.read(out / "notebooks" / "02_broken.ipynb", 4)       # what ran is kept, error and all
    assert executed.cells[1].outputs[0]["text"] == "before\n"
    assert executed.cells[2].outputs[0]["ename"] == "ValueError"

    code, _, err = run("tutorial", "--out", str(out), "--only", "9")
    assert code == 1 and f"no notebook in {notebooks} starts with 9" in err


def test_tutorial_keeps_the_kernels_own_noise_off_the_terminal_unless_it_dies(tmp_path, monkeypatch):
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    say = "import os; os.write(2, b'{}\\n')"            # the kernel process's stderr, not a cell's output
    nbformat.write(new_notebook(cells=[new_code_cell(say.format("zmq noise at shutdown")), new_code_cell("1")]),
                   notebooks / "01_noisy.ipynb")
    nbformat.write(new_notebook(cells=[new_code_cell(say.format("the last words") + "; os._exit(3)")]),
                   notebooks / "02_dies.ipynb")
    monkeypatch.setenv("SUBTERRA_NOTEBOOKS", str(notebooks))
    out = tmp_path / "out"

    code, stdout, err = run("tutorial", "--out", str(out), "--only", "01")
    assert code == 0 and "zmq noise" not in err + stdout and (out / "notebooks" / "01_noisy.ipynb").exists()

    code, _, err = run("tutorial", "--out", str(out), "--only", "02")
    assert code == 1 and "Traceback" not in err
    assert "02_dies.ipynb: " in err and "kernel: the last words" in err
    assert (out / "notebooks" / "02_dies.ipynb").exists()


# Every command-line mistake: (argv, exit status, what its one stderr line says: the argument, and for some the
# command that makes the missing thing or the list to choose from). In argv, {toy} is a workflow file, {out} the
# output folder that must stay unwritten, {tmp} a folder ({tmp}/missing does not exist; graph.py and other.csv
# in it are a Python file and a CSV file of no use), {empty} an empty folder, {corpus} a folder with a (fake)
# finished corpus, {sim} a real simulation of the toy workflow and {scores} its scores.
MISTAKES = [
    pytest.param("bogus", 2, "'bogus'", id="unknown-command"),
    pytest.param("validate nosuch", 1, "nosuch", id="validate-unknown-domain"),
    pytest.param("paths nosuch --json", 1, "nosuch", id="paths-unknown-domain"),
    pytest.param("paths {toy} --bogus", 2, "--bogus", id="paths-unknown-option"),
    pytest.param("graph {toy} --path p9999 --out {out}/g.html", 1, "p9999", id="graph-unknown-path"),
    pytest.param("synthesize --domain nosuch --out {out}", 1, "nosuch", id="synthesize-unknown-domain"),
    pytest.param("synthesize --domain {toy} --n 0 --out {out}", 2, "--n", id="synthesize-n-zero"),
    pytest.param("synthesize --domain {toy} --concurrency -1 --out {out}", 2, "--concurrency",
                 id="synthesize-concurrency-negative"),
    pytest.param("train --domain {toy} --data {tmp}/missing --out {out}",
                 1, ("--data", "subterra synthesize --domain"),
                 id="train-data-missing"),
    pytest.param("train --domain {toy} --data {empty} --out {out}", 1, "--data", id="train-data-without-corpus"),
    pytest.param("train --domain {toy} --data {corpus} --base no-such-base --out {out}", 1, "--base",
                 id="train-base-unknown"),
    pytest.param("train --domain {toy} --data {corpus} --recipe nosuch --out {out}", 1, "no such recipe",
                 id="train-unknown-recipe"),
    pytest.param("train --domain {toy} --data {corpus} --set max_steps=abc --out {out}", 1, "max_steps",
                 id="train-set-wrong-type"),
    pytest.param("train --domain {toy} --data {corpus} --set max_steps --out {out}", 1, "--set",
                 id="train-set-without-value"),
    pytest.param("simulate --domain {toy} --conditions bogus --n 2 --out {out}",
                 2, ("--conditions", "choose from subterranean"),
                 id="simulate-unknown-condition"),
    pytest.param("simulate --domain {toy} --model {tmp}/modle --conditions subterranean --out {out}",
                 1, ("--model", "subterra train --domain"),
                 id="simulate-model-missing"),
    pytest.param("simulate --domain {toy} --model {empty} --conditions subterranean --out {out}",
                 1, ("--model", "holds no model"),
                 id="simulate-model-folder-without-model"),
    pytest.param("simulate --domain {toy} --conditions oracle --n -3 --out {out}", 2, "--n",
                 id="simulate-n-negative"),
    pytest.param("simulate --domain {toy} --conditions oracle --batch-size 0 --out {out}", 2, "--batch-size",
                 id="simulate-batch-size-zero"),
    pytest.param("simulate --domain {toy} --conditions oracle --max-turns 0 --out {out}", 2, "--max-turns",
                 id="simulate-max-turns-zero"),
    pytest.param("simulate --domain {toy} --conditions oracle --sizes oracle=x --out {out}", 2, "--sizes",
                 id="simulate-sizes-not-a-number"),
    pytest.param("simulate --domain {toy} --conditions oracle --sizes bogus=3 --out {out}", 2, "--sizes",
                 id="simulate-sizes-unknown-condition"),
    pytest.param("judge --domain {toy} --transcripts {tmp}/missing --out {out}/s.csv",
                 1, ("--transcripts", "subterra simulate"),
                 id="judge-transcripts-missing"),
    pytest.param("judge --domain {toy} --transcripts {empty} --out {out}/s.csv", 1, "--transcripts",
                 id="judge-transcripts-empty"),
    pytest.param("judge --domain {toy} --transcripts {sim} --judge bogus --out {out}/s.csv", 2, "--judge",
                 id="judge-unknown-judge"),
    pytest.param("analyze --domain {toy} --transcripts {sim} --scores {tmp}/missing.csv --out {out}",
                 1, ("--scores", "subterra judge"),
                 id="analyze-scores-missing"),
    pytest.param("analyze --domain {toy} --transcripts {tmp}/missing --scores {scores} --out {out}", 1,
                 "--transcripts", id="analyze-transcripts-missing"),
    pytest.param("analyze --domain {toy} --transcripts {sim} --scores {toy} --out {out}", 1, "--scores",
                 id="analyze-scores-not-a-scores-file"),
    pytest.param("analyze --domain {toy} --transcripts {sim} --scores {sim} --out {out}", 1, "--scores",
                 id="analyze-scores-a-folder"),
    pytest.param("analyze --domain {toy} --transcripts {sim} --scores {tmp}/other.csv --out {out}",
                 1, ("--scores", "no column condition"),
                 id="analyze-scores-without-its-columns"),
    pytest.param("import-langgraph {tmp}/nosuch.py --out {out}/w.yaml", 1, "nosuch.py",
                 id="import-langgraph-missing-file"),
    pytest.param("import-langgraph {toy} --out {out}/w.yaml", 1, "FILE.py", id="import-langgraph-not-python"),
    pytest.param("import-langgraph {tmp}/graph.py --teacher local --out {out}/w.yaml", 1, "--teacher local",
                 id="import-langgraph-local-without-model"),
    pytest.param("tutorial --out {out} --only 99", 1, "99", id="tutorial-no-such-notebook"),
    pytest.param("tutorial --out {out} --only", 2, "--only", id="tutorial-only-without-prefix"),
]

@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """The things a mistake may point at, made once: a toy workflow, its simulation and scores, a fake corpus."""
    from conftest import TOY

    root = tmp_path_factory.mktemp("made")
    toy = root / "toy.yaml"
    toy.write_text(TOY)
    sim = root / "sim"
    assert main(["simulate", "--domain", str(toy), "--conditions", "oracle", "--n", "2", "--out", str(sim)]) == 0
    assert main(["judge", "--domain", str(toy), "--transcripts", str(sim)]) == 0
    corpus = root / "synthesis" / "corpus"
    corpus.mkdir(parents=True)
    (corpus / "dataset_dict.json").write_text('{"splits": ["train", "eval"]}')
    (root / "empty").mkdir()
    return {"toy": toy, "sim": sim, "scores": sim / "scores-offline.csv", "corpus": corpus.parent,
            "empty": root / "empty"}


def exit_status(argv: list[str]) -> int:
    """main's return value, or the status argparse exits with."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


@pytest.mark.parametrize("argv, status, says", MISTAKES)
def test_every_mistake_gets_one_line_and_writes_nothing(argv, status, says, made, tmp_path, capsys):
    (tmp_path / "graph.py").write_text("graph = None\n")
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    out = tmp_path / "out"
    places = {**{k: str(v) for k, v in made.items()}, "out": str(out), "tmp": str(tmp_path)}
    capsys.readouterr()
    assert exit_status([word.format(**places) for word in argv.split()]) == status
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert all(part in lines[0] for part in ((says,) if isinstance(says, str) else says)), lines[0]
    assert not out.exists()


def test_the_mistakes_cover_every_subcommand():
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert set(commands) <= {case.values[0].split()[0] for case in MISTAKES}


def test_a_model_argument_is_a_model_folder_a_named_base_or_a_hub_id(tmp_path):
    from subterra.cli import UsageError, _model_arg

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    assert _model_arg("--model", str(model)) == str(model)
    assert _model_arg("--base", "smollm2-135m-instruct") == "smollm2-135m-instruct"
    assert _model_arg("--base", "HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    with pytest.raises(UsageError, match="no such folder"):       # its parent is here: a local path, mistyped
        _model_arg("--model", str(tmp_path / "modle"))
