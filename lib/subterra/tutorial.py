"""Run the tutorial notebooks headless, in order, and keep the executed copies.

Each notebook's first code cell reads its settings from ``SUBTERRA_*`` environment
variables; :func:`run_notebooks` sets them for the kernel, so the same notebooks run
full size in ``make demo`` and small in the tests.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Mapping

INLINE_BACKEND = "module://matplotlib_inline.backend_inline"


def notebooks_dir() -> Path:
    return Path(os.environ.get("SUBTERRA_NOTEBOOKS") or Path(__file__).resolve().parents[2] / "notebooks")


def tutorial_notebooks(only: Iterable[str] | None = None) -> list[Path]:
    """The numbered notebooks, in reading order; ``only`` keeps those whose name starts with a prefix."""
    found = sorted(notebooks_dir().glob("[0-9][0-9]_*.ipynb"))
    if only:
        prefixes = tuple(only)
        found = [nb for nb in found if nb.name.startswith(prefixes)]
    return found


@contextmanager
def _environment(values: Mapping[str, str]):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update({k: str(v) for k, v in values.items()})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class NotebookFailed(RuntimeError):
    """A cell of a tutorial notebook raised; the message names the notebook, the cell and the error, and
    where the executed copy (the error under its cell) was written."""


def run_notebook(notebook: Path, out_dir: Path, settings: Mapping[str, str] | None = None,
                 timeout: int = 1800) -> Path:
    """Execute one notebook with ``settings`` in its environment; write the executed copy to ``out_dir``.

    A cell that raises stops the notebook: the copy executed so far is written all the same, and
    :class:`NotebookFailed` says which cell and what it raised."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    nb = nbformat.read(notebook, as_version=4)
    target = out_dir / notebook.name
    # the inline backend, whatever the calling shell set: plt.show() puts each figure into the executed copy
    env = {"SUBTERRA_OUTPUTS": str(out_dir.parent.resolve()), "MPLBACKEND": INLINE_BACKEND, **(settings or {})}
    with _environment(env):
        try:
            NotebookClient(nb, timeout=timeout, kernel_name="python3",
                           resources={"metadata": {"path": str(notebook.parent)}}).execute()
        except CellExecutionError as exc:
            nbformat.write(nb, target)
            failed = next((i for i, cell in enumerate(nb.cells)
                           if any(o.get("output_type") == "error" for o in cell.get("outputs", []))), None)
            where = f"cell {failed + 1} of {len(nb.cells)}" if failed is not None else "a cell"
            raise NotebookFailed(f"{notebook}: {where} raised {exc.ename}: {exc.evalue}\n"
                                 f"  the executed copy, with the traceback under that cell: {target}") from exc
    nbformat.write(nb, target)
    return target


def run_notebooks(out: str | Path = "outputs", only: Iterable[str] | None = None,
                  settings: Mapping[str, str] | None = None) -> list[Path]:
    """Run the tutorial in order; executed notebooks go to ``out/notebooks``, figures and files to ``out``."""
    from tqdm.auto import tqdm

    import time

    out = Path(out).resolve()
    done = []
    for notebook in (bar := tqdm(tutorial_notebooks(only), unit="notebook")):
        bar.set_description(notebook.stem)
        start = time.perf_counter()
        done.append(run_notebook(notebook, out / "notebooks", {"SUBTERRA_OUTPUTS": str(out), **(settings or {})}))
        tqdm.write(f"{notebook.stem}: {time.perf_counter() - start:.0f} s")
    return done
