import json
from pathlib import Path


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
