"""Run the tutorial notebooks headless, in order, and keep the executed copies.

Each notebook's first code cell reads its settings from ``SUBTERRA_*`` environment
variables; :func:`run_notebooks` sets them for the kernel, so the same notebooks run
full size in ``make demo`` and small in the tests.

While a notebook runs, the terminal shows what it is doing (:class:`Progress`): a line for
each section it reaches, and a bar over its code cells that carries the notebook's own
progress bars (training steps, conversations, their time left). Those bars are live
widgets, for a person watching; the executed copy keeps what the notebook says, not them
(:func:`drop_progress_bars`). The kernel talks to the runner over local sockets (IPC), not
over unencrypted TCP.
"""

from __future__ import annotations

import html
import json
import os
import re
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Mapping

INLINE_BACKEND = "module://matplotlib_inline.backend_inline"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
PROGRESS_MODELS = ("FloatProgressModel", "IntProgressModel")
HEADING = re.compile(r"^(#{1,3})\s+(.+)$", re.M)
HTML_PROGRESS = re.compile(r"<progress[^>]*>\s*</progress>(.*?)</div>", re.S)   # transformers' notebook bar


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


def bar_widgets(model: str, widgets: dict) -> list[str] | None:
    """The (label, bar, count) widgets of the progress bar shown as widget ``model``, or None when it is another
    widget. A bar is what ``tqdm.auto`` shows in a kernel: a box whose middle widget is a progress widget.
    ``widgets`` is nbclient's widget state by model id."""
    state = widgets.get(model, {})
    parts = [c.removeprefix("IPY_MODEL_") for c in state.get("children", ()) if isinstance(c, str)]
    if state.get("_model_name") == "HBoxModel" and len(parts) == 3 and \
            widgets.get(parts[1], {}).get("_model_name") in PROGRESS_MODELS:
        return parts
    return None


class Progress:
    """What a headless run shows on the terminal while a notebook runs.

    A line on stdout when the run reaches a section (a markdown heading), and on stderr one bar over
    the notebook's code cells whose tail is the progress bar the notebook itself is showing: a tqdm
    widget (:func:`bar_widgets`) or transformers' HTML training bar, with its count and time left.
    ``shown=False`` shows nothing (the tests' runs).
    """

    def __init__(self, notebook: Path, cells: list, shown: bool = True, every: float = 0.5):
        from tqdm import tqdm            # a terminal's bar, also when the runner itself runs in a notebook

        self.name, self.shown, self.every = notebook.stem, shown, every
        self.bars: dict[str, list[str]] = {}      # a progress bar's widget -> its (label, bar, count) widgets
        self.drawn = 0.0
        code = sum(cell.cell_type == "code" for cell in cells)
        self.bar = tqdm(total=code, desc=self.name, unit="cell", leave=False, file=sys.stderr, disable=not shown,
                        bar_format="{desc}: cell {n}/{total}, {elapsed}{postfix}", dynamic_ncols=True)

    def write(self, line: str) -> None:
        if self.shown:
            self.bar.write(line, file=sys.stdout)

    def cell_start(self, cell, cell_index: int, **_) -> None:
        """nbclient's ``on_cell_start`` hook: a heading is written as a line, a code cell moves the bar on."""
        if cell.cell_type == "markdown":
            for hashes, title in HEADING.findall(re.sub(r"```.*?```", "", cell.source, flags=re.S)):
                self.write(("    " if len(hashes) > 1 else "") + title.strip())
        elif cell.cell_type == "code" and cell.source.strip():
            self.bar.set_postfix_str("", refresh=False)
            self.bar.update()

    def message(self, msg: dict, widgets: dict) -> None:
        """A kernel message: relay what a progress bar in the notebook now says (``widgets``: nbclient's state)."""
        kind, content = msg["msg_type"], msg["content"]
        if kind in ("comm_open", "comm_msg"):
            comm = content.get("comm_id")
            parts = bar_widgets(comm, widgets)
            if parts:
                self.bars[comm] = parts
            for parts in self.bars.values():
                if comm in parts:
                    label, count = (widgets.get(parts[i], {}).get("value", "") for i in (0, 2))
                    self.show(f"{label} {count}")
        elif kind in ("display_data", "update_display_data"):
            found = HTML_PROGRESS.search("".join(content.get("data", {}).get("text/html", "")))
            if found:
                self.show(found.group(1))

    def show(self, text: str) -> None:
        text = " ".join(html.unescape(text).replace("\u2007", " ").split())
        self.bar.set_postfix_str(text, refresh=False)
        if time.monotonic() - self.drawn >= self.every:
            self.drawn = time.monotonic()
            self.bar.refresh()

    def close(self, seconds: float) -> None:
        self.bar.close()
        self.write(f"{self.name}: {seconds:.0f} s")


def drop_progress_bars(nb, widgets: dict) -> int:
    """Take the notebook's progress bars (:func:`bar_widgets`) out of its outputs and its saved widget state.

    ``widgets`` is nbclient's state by model id. Without a live kernel a bar's saved form is the
    text it had when first drawn ("Loading weights: 0% 0/272"). Other widgets (a browser, a chat
    box) and their state stay. Returns the outputs taken out."""
    dropped = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        kept = [o for o in cell.outputs
                if not bar_widgets(o.get("data", {}).get(WIDGET_VIEW, {}).get("model_id", ""), widgets)]
        dropped += len(cell.outputs) - len(kept)
        cell.outputs = kept
    saved = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state")
    if saved is not None:
        shown = [o["data"][WIDGET_VIEW]["model_id"] for c in nb.cells if c.cell_type == "code"
                 for o in c.outputs if WIDGET_VIEW in o.get("data", {})]
        keep, todo = set(), list(shown)
        while todo:                                   # the displayed widgets and every model they refer to
            model = todo.pop()
            if model in saved and model not in keep:
                keep.add(model)
                todo += re.findall(r"IPY_MODEL_(\w+)", json.dumps(saved[model]))
        for model in set(saved) - keep:
            del saved[model]
        if not saved:
            del nb.metadata["widgets"]
    return dropped


def _client(nb, progress: Progress, timeout: int, cwd: Path, sockets: str):
    """nbclient's client for one notebook: the kernel on local sockets under ``sockets``, its messages shown."""
    from nbclient import NotebookClient
    from traitlets.config import Config

    class Client(NotebookClient):
        def process_message(self, msg, cell, cell_index):
            try:
                return super().process_message(msg, cell, cell_index)
            finally:
                progress.message(msg, self.widget_state)

    config = Config()
    if os.name == "posix":                 # IPC: no TCP port, and no ipykernel warning about an unencrypted one
        config.KernelManager.transport, config.KernelManager.ip = "ipc", os.path.join(sockets, "kernel")
    return Client(nb, config=config, timeout=timeout, kernel_name="python3",
                  resources={"metadata": {"path": str(cwd)}}, on_cell_start=progress.cell_start)


def run_notebook(notebook: Path, out_dir: Path, settings: Mapping[str, str] | None = None,
                 timeout: int = 1800, progress: bool = False) -> Path:
    """Execute one notebook with ``settings`` in its environment; write the executed copy to ``out_dir``.

    ``progress`` shows its sections and progress bars as it runs (:class:`Progress`).
    A cell that raises stops the notebook: the copy executed so far is written all the same, and
    :class:`NotebookFailed` says which cell and what it raised."""
    import nbformat
    from nbclient.exceptions import CellExecutionError, DeadKernelError

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    nb = nbformat.read(notebook, as_version=4)
    target = out_dir / notebook.name
    # the inline backend, whatever the calling shell set: plt.show() puts each figure into the executed copy
    env = {"SUBTERRA_OUTPUTS": str(out_dir.parent.resolve()), "MPLBACKEND": INLINE_BACKEND, **(settings or {})}
    shown = Progress(notebook, nb.cells, progress)
    start = time.perf_counter()
    # the kernel's own stderr (not a cell's: that reaches the notebook) goes to a log, so its shutdown
    # noise never reaches the reader's terminal; it is shown only if the kernel dies
    with _environment(env), tempfile.TemporaryDirectory(prefix="subterra-kernel-") as sockets, \
            open(os.path.join(sockets, "kernel.log"), "w+") as log:
        client = _client(nb, shown, timeout, notebook.parent, sockets)
        try:
            client.execute(stdout=log, stderr=log)
            error = died = None
        except CellExecutionError as exc:
            error, died = exc, None
        except DeadKernelError as exc:
            log.seek(0)
            error, died = None, (str(exc) or "the kernel died") + "".join(
                f"\n  kernel: {line.rstrip()}" for line in log.read().splitlines()[-5:])
    drop_progress_bars(nb, client.widget_state)
    nbformat.write(nb, target)
    shown.close(time.perf_counter() - start)
    if died is not None:
        raise NotebookFailed(f"{notebook}: {died}\n  the copy executed so far: {target}")
    if error is not None:
        failed = next((i for i, cell in enumerate(nb.cells)
                       if any(o.get("output_type") == "error" for o in cell.get("outputs", []))), None)
        where = f"cell {failed + 1} of {len(nb.cells)}" if failed is not None else "a cell"
        raise NotebookFailed(f"{notebook}: {where} raised {error.ename}: {error.evalue}\n"
                             f"  the executed copy, with the traceback under that cell: {target}") from error
    return target


def run_notebooks(out: str | Path = "outputs", only: Iterable[str] | None = None,
                  settings: Mapping[str, str] | None = None, progress: bool = True) -> list[Path]:
    """Run the tutorial in order; executed notebooks go to ``out/notebooks``, figures and files to ``out``.

    With ``progress``, each notebook's sections and progress bars are shown as it runs (:class:`Progress`)."""
    out = Path(out).resolve()
    done = []
    for notebook in tutorial_notebooks(only):
        done.append(run_notebook(notebook, out / "notebooks", {"SUBTERRA_OUTPUTS": str(out), **(settings or {})},
                                 progress=progress))
    return done
