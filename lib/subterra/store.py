"""Files that survive a kill: atomic writes, append-only JSONL logs, datasets saved by rename.

Long runs (synthesis, simulation) append each finished item to a JSONL log, flushed and
synced, and on restart read the log back: a torn last line from a kill mid-write is cut
off, so a resumed run redoes exactly the items that never finished.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Iterable


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def append_jsonl(f: IO[str], row: dict) -> None:
    """Append one row to an open JSONL log and make it durable before returning."""
    f.write(json.dumps(row, ensure_ascii=False) + "\n")
    f.flush()
    os.fsync(f.fileno())


def read_jsonl(path: Path, key: str) -> dict[str, dict]:
    """Rows of a JSONL log by ``row[key]``; a torn last line (a kill mid-write) is cut from the file."""
    path = Path(path)
    rows: dict[str, dict] = {}
    if not path.exists():
        return rows
    good = 0
    with open(path, "rb") as f:
        for raw in f:
            try:
                row = json.loads(raw)
                rows[row[key]] = row
            except (ValueError, KeyError, TypeError):
                break
            good += len(raw)
    if good != path.stat().st_size:
        with open(path, "r+b") as f:
            f.truncate(good)
    return rows


def save_dataset(data, target: Path) -> None:
    """``save_to_disk`` a ``Dataset``/``DatasetDict`` into a temp folder, then rename it into place."""
    import datasets

    datasets.disable_progress_bars()
    target = Path(target)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    data.save_to_disk(str(tmp))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)


def rows_in_order(rows: dict[str, dict], keys: Iterable[str]) -> list[dict]:
    return [rows[k] for k in keys if k in rows]
