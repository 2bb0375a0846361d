import json
import re
from pathlib import Path

# What a progress bar leaves as text when it is saved instead of watched: tqdm's meter ("45%|####  | 9/20 [00:01<"),
# or a line redrawn in place with a carriage return.
PROGRESS_TEXT = re.compile(r"\d+%\|.*\|\s*\d+/\d+ \[|\r(?!\n)")
# Library chatter: what a library logs or warns on stderr (transformers' "[transformers] There were missing keys
# ..."), rather than what the notebook says.
CHATTER = re.compile(r"Warning|^\[[\w.]+\]|missing keys", re.M)
PROGRESS_MODELS = ("FloatProgressModel", "IntProgressModel")


def outputs_of(notebook: Path) -> str:
    """All text a notebook printed or displayed (plain-text and HTML outputs)."""
    parts = []
    for cell in json.loads(Path(notebook).read_text())["cells"]:
        for out in cell.get("outputs", []):
            if "text" in out:
                parts.append("".join(out["text"]))
            for key in ("text/plain", "text/html"):
                if key in out.get("data", {}):
                    parts.append("".join(out["data"][key]))
            if out.get("output_type") == "error":
                parts.append("Traceback " + out.get("ename", "") + ": " + out.get("evalue", ""))
    return "\n".join(parts)


def output_problems(notebook: Path) -> list[str]:
    """What an executed notebook should not hold: a plt.show() cell without its figure, warnings and library
    chatter on stderr, the text a progress bar leaves behind, and the saved state of progress-bar widgets."""
    nb = json.loads(Path(notebook).read_text())
    problems = []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        outputs = cell["outputs"]
        if "plt.show()" in "".join(cell["source"]) and not any("image/png" in o.get("data", {}) for o in outputs):
            problems.append(f"cell {i}: plt.show() left no figure")
        for out in outputs:
            text = "".join(out.get("text", "")) + "".join(out.get("data", {}).get("text/plain", ""))
            if out.get("name") == "stderr" and CHATTER.search(text):
                problems.append(f"cell {i}: chatter on stderr: {text[-400:]}")
            if PROGRESS_TEXT.search(text):
                problems.append(f"cell {i}: a progress bar's text: {text[-200:]!r}")
    state = nb["metadata"].get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    bars = [model for model, saved in state.items() if saved.get("model_name") in PROGRESS_MODELS]
    if bars:
        problems.append(f"the saved state of {len(bars)} progress-bar widget(s)")
    return problems
