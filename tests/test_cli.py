"""The command line is a contract other tools use: exit codes, one error line per bad file, JSON."""

import json
import subprocess
import sys

import pytest

from subterra.cli import main
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
    assert run("validate", "travel", "zoom", "insurance")[0] == 0


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
