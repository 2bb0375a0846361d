"""Drive JupyterLab in a Playwright page: open a notebook, run it, look at what it shows.

Cells are run through JupyterLab's own command (``notebook:run-all-cells``); everything a person
touches afterwards (drop-downs, sliders, the chat's text box) is driven through the page.
"""

from __future__ import annotations

import time
from pathlib import Path

SCREENSHOTS = Path(__file__).resolve().parents[2] / "outputs" / "screenshots"
WIDGET_ERRORS = ("Error displaying widget", "Error rendering output", "Failed to load model class",
                 "Could not create a model", "Could not create a view")

_STATE = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  const errors = [], pending = [];
  panel.content.widgets.forEach((cell, i) => {
    if (cell.model.type !== 'code') return;
    for (const out of cell.model.outputs.toJSON())
      if (out.output_type === 'error') errors.push(`cell ${i}: ${out.ename}: ${out.evalue}`);
    const prompt = (cell.node.querySelector('.jp-InputPrompt') || {}).textContent || '';
    if (cell.model.executionCount === null || prompt.includes('*')) pending.push(i);
  });
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  return {errors, pending, kernel: kernel ? kernel.status : 'none'};
}"""


class LabPage:
    def __init__(self, page, base: str, token: str):
        self.page, self.base, self.token = page, base, token
        self.console_errors: list[str] = []
        page.on("console", lambda message: self.console_errors.append(f"console: {message.text}")
                if message.type == "error" else None)
        page.on("pageerror", lambda error: self.console_errors.append(f"page error: {error}"))

    def open(self, notebook: str) -> None:
        """Open ``notebooks/<notebook>.ipynb`` and wait for its kernel to be idle."""
        # a workspace of its own, reset: only this notebook open
        url = f"{self.base}/lab/workspaces/{notebook}/tree/notebooks/{notebook}.ipynb"
        self.page.goto(f"{url}?reset&token={self.token}")
        self.page.wait_for_function(
            """name => { const app = window.jupyterapp; const w = app && app.shell.currentWidget;
                         const kernel = w && w.sessionContext && w.sessionContext.session
                                        && w.sessionContext.session.kernel;
                         return w && w.context.path.endsWith(name) && kernel && kernel.status === 'idle'; }""",
            arg=f"{notebook}.ipynb", timeout=120_000)
        self.page.evaluate("() => window.jupyterapp.shell.collapseLeft()")   # the notebook gets the width

    def run_all(self, timeout: float = 600) -> None:
        """Run every cell as Run ▸ Run All Cells does; fail at the first error output, with its message."""
        self.page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
        deadline = time.monotonic() + timeout
        while True:
            state = self.page.evaluate(_STATE)
            assert not state["errors"], "a cell failed: " + "; ".join(state["errors"])
            if not state["pending"] and state["kernel"] == "idle":
                return
            assert time.monotonic() < deadline, f"cells {state['pending']} still running after {timeout} s"
            time.sleep(1)

    def check(self) -> None:
        """What a person would see as broken: a widget that did not display, or an error in the console."""
        text = self.page.locator("body").inner_text()
        problems = [f"the page shows '{marker}'" for marker in WIDGET_ERRORS if marker in text]
        failed = self.page.locator(".jupyter-widgets-error-widget")    # ipywidgets 8's "Error displaying widget"
        if failed.count():
            failed.first.click()                                        # a click shows its message
            problems.append(f"Error displaying widget: {failed.count()} widget view(s) failed; the first: "
                            + failed.first.inner_text()[:600])
        problems += self.console_errors
        assert not problems, "\n".join(problems)

    def frame(self, iframe_locator, showing: str = ""):
        """The document inside an iframe (a graph) once vis-network has drawn it, with ``showing`` in its legend."""
        from playwright.sync_api import Error as PlaywrightError

        ready = ("text => typeof network !== 'undefined' && document.querySelector('#mynetwork canvas') "
                 "&& document.querySelector('.legend').textContent.includes(text)")
        deadline = time.monotonic() + 30
        while True:     # a widget update replaces the iframe: retry until the current one holds the graph
            try:
                iframe_locator.scroll_into_view_if_needed()
                frame = iframe_locator.element_handle().content_frame()
                if frame is not None:
                    frame.wait_for_function(ready, arg=showing, timeout=2000)
                    return frame
            except PlaywrightError:
                pass
            assert time.monotonic() < deadline, f"no graph showing {showing!r} was drawn in the iframe"
            time.sleep(0.3)

    def screenshot(self, locator, file: Path) -> Path:
        """The element as a person sees it: the window made tall enough to show all of it at once."""
        file.parent.mkdir(parents=True, exist_ok=True)
        size = self.page.viewport_size
        height = locator.bounding_box()["height"]
        if height + 150 > size["height"]:
            self.page.set_viewport_size({"width": size["width"], "height": int(height) + 150})
        locator.scroll_into_view_if_needed()
        self.page.wait_for_timeout(300)
        locator.screenshot(path=str(file))
        self.page.set_viewport_size(size)
        return file
