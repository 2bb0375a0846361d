"""The widgets and the graph where people use them: notebooks 02, 04 and 05 run in JupyterLab, in Chromium.

Each test runs a notebook through JupyterLab, then does what a person does with its views and
checks what they show; every test fails on a widget that did not display or on any browser console
error. Screenshots land in outputs/screenshots/. ``make test`` runs these when Chromium is
installed and says why it skipped them otherwise (see conftest.py).
"""

import json
import re
import time

import nbformat
import pytest

from .lab_driver import SCREENSHOTS
from subterra import enumerate_paths, load_domain
from subterra.views import HIGHLIGHT

pytestmark = pytest.mark.browser

HIGHLIGHTED = f"() => edges.get().filter(e => e.color === '{HIGHLIGHT}').map(e => e.from + '>' + e.to).sort()"
SCALE = "() => network.getScale()"
READABLE = 0.75      # vis-network's scale: 14 px labels drawn at 10.5 px or more


def dropdown(box, description: str):
    return box.locator(".widget-dropdown", has=box.page.locator("label", has_text=description)).locator("select")


def graph_of(lab_page, box, showing: str = ""):
    return lab_page.frame(box.locator("iframe").last, showing)


def test_path_browser_draws_and_follows_the_chosen_path(lab_page):
    lab_page.open("02_visualize_paths")
    lab_page.run_all(timeout=180)
    browser = lab_page.page.locator(".subterra-path-browser")
    browser.wait_for()
    turns = browser.locator(".turns .turn")
    graph = graph_of(lab_page, browser)
    first = {"edges": graph.evaluate(HIGHLIGHTED), "turns": turns.all_inner_texts()}
    assert first["edges"] and first["turns"][0] == "1 · Greet the customer"
    assert graph.evaluate(SCALE) >= READABLE, "the travel graph is drawn too small to read"
    assert "agent turn" in graph.locator(".legend").inner_text()
    lab_page.screenshot(browser, SCREENSHOTS / "path_browser.png")

    # another path: the highlighted edges, the legend and the listed turns follow it
    paths = {p.id: p for p in enumerate_paths(load_domain("travel"))}
    select = dropdown(browser, "path")
    choice = select.locator("option").nth(5).inner_text()
    select.select_option(label=choice)
    path = paths[choice.split()[0]]
    browser.locator(".turns").filter(has_text=f"{len(path)} · ").wait_for()
    labels = [load_domain("travel").nodes[n].label for n in path.nodes]
    lab_page.page.wait_for_function(
        "n => document.querySelectorAll('.subterra-path-browser .turns .turn').length === n", arg=len(path))
    assert turns.all_inner_texts() == [f"{i + 1} · {label}" for i, label in enumerate(labels)]
    graph = graph_of(lab_page, browser, showing=f"path {path.id}")
    edges = graph.evaluate(HIGHLIGHTED)
    assert edges != first["edges"] and edges == sorted({f"{a}>{b}" for a, b in path.edges})

    # the 55-node insurance graph, at the size the notebook gives it, on its longest path: still readable
    dropdown(browser, "domain").select_option("insurance")
    browser.get_by_text("2381 of 2381 paths match").wait_for()      # the filters have followed the domain
    options = dropdown(browser, "path").locator("option").all_inner_texts()
    longest = max(options, key=lambda option: int(option.split()[2]))
    dropdown(browser, "path").select_option(label=longest)
    graph = graph_of(lab_page, browser, showing=f"path {longest.split()[0]}")
    assert graph.evaluate("() => nodes.length") == 55 and len(options) == 2381
    assert len(graph.evaluate(HIGHLIGHTED)) > 25                   # 39 turns, 29 distinct edges
    assert graph.evaluate(SCALE) >= READABLE, "the insurance graph is drawn too small to read"
    lab_page.screenshot(browser.locator("iframe").last, SCREENSHOTS / "insurance_graph.png")
    lab_page.check()


def test_chat_box_answers_with_the_compiled_model(lab_page):
    lab_page.open("04_fine_tune")
    lab_page.run_all(timeout=600)
    chat = lab_page.page.locator(".subterra-chat-box")
    chat.wait_for()
    assistant = chat.locator(".message.assistant")
    assert assistant.count() == 1                                  # it greets first
    entry = chat.locator("input[type=text]")
    entry.fill("Hi, I need a flight from Lisbon to Kyoto in May")
    entry.press("Enter")
    chat.locator(".message.user").filter(has_text="Lisbon to Kyoto").wait_for()
    lab_page.page.wait_for_function(
        "() => document.querySelectorAll('.subterra-chat-box .message.assistant').length === 2", timeout=120_000)
    assert assistant.last.inner_text().strip(), "the compiled model's reply is empty"
    assert entry.input_value() == ""
    lab_page.screenshot(chat, SCREENSHOTS / "chat_box.png")
    lab_page.check()


def test_transcript_browser_pages_through_conversations(lab_page, lab):
    lab_page.open("05_simulate")
    lab_page.run_all(timeout=600)
    viewer = lab_page.page.locator(".subterra-transcript-browser")
    viewer.wait_for()
    messages = viewer.locator(".message")
    workflow = load_domain("travel")

    def turns() -> list[tuple[str, str]]:
        """(message, the node label beside it) for each turn shown."""
        shown = []
        for text in messages.all_inner_texts():
            said, _, caption = text.rpartition("\n")
            match = re.fullmatch(r"turn (\d+) · (.+)", caption.strip())
            assert match, f"a turn without its node label: {text!r}"
            shown.append((" ".join(said.split()), match.group(2)))
        return shown

    def traced(shown, scenario: str) -> list[str]:
        """The node labels of the conformance trace the simulation recorded for the conversation shown."""
        for file in (lab["root"] / "outputs" / "travel" / "simulation").glob("*/transcripts.jsonl"):
            for line in file.read_text().splitlines():
                transcript = json.loads(line)
                said = [" ".join(m["content"].split()) for m in transcript["messages"][:len(shown)]]
                if transcript["scenario_id"] == scenario and said == [text for text, _ in shown]:
                    return [workflow.nodes[n].label if n else "no node" for n in transcript["trace_nodes"][:len(shown)]]
        return None

    def shows(scenario: str, n: int) -> list[tuple[str, str]]:
        """The turns shown, once they are the ``n`` turns the simulation wrote for ``scenario``."""
        deadline = time.monotonic() + 30
        while (traced(shown := turns(), scenario) is None or len(shown) != n) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert traced(shown, scenario) is not None, f"not the conversation the simulation wrote for {scenario}: {shown}"
        assert len(shown) == n
        return shown

    def choice(option: str) -> tuple[str, str, int]:
        """The scenario, the path and the number of turns a dialogue's label names."""
        scenario, path_id, turns_ = (part.strip() for part in option.split("·"))
        return scenario, path_id, int(turns_.split()[0])

    select = dropdown(viewer, "dialogue")
    options = select.locator("option").all_inner_texts()
    assert len(options) >= 2
    scenario, path_id, n = choice(options[0])
    first = shows(scenario, n)
    assert n > 2 and all(said for said, _ in first)
    assert [label for _, label in first] == traced(first, scenario)
    graph = graph_of(lab_page, viewer, showing=f"path {path_id}")
    assert graph.evaluate(HIGHLIGHTED) and graph.evaluate(SCALE) >= READABLE
    lab_page.screenshot(viewer, SCREENSHOTS / "transcript_browser.png")

    # page to the next conversation: its turns, labels and path
    select.select_option(index=1)
    scenario, path_id, n = choice(options[1])
    second = shows(scenario, n)
    assert [label for _, label in second] == traced(second, scenario)
    graph_of(lab_page, viewer, showing=f"path {path_id}")

    # step back through it with the keyboard on the turn slider: fewer turns shown
    handle = viewer.locator(".widget-slider .noUi-handle").first
    handle.focus()
    handle.press("ArrowLeft")
    handle.press("ArrowLeft")
    lab_page.page.wait_for_function(
        "n => document.querySelectorAll('.subterra-transcript-browser .message').length === n", arg=len(second) - 2)
    assert turns() == second[:-2]
    lab_page.check()


# Two faults, as a version mismatch between ipywidgets and JupyterLab gives them: views the front end lacks
# inside a box that displays (the browser's text and graph), and a box from a front end it does not have.
BROKEN_VIEWS = """\
import ipywidgets, traitlets
from subterra import PathBrowser, load_domain

class BrokenHTML(ipywidgets.HTML):
    _view_name = traitlets.Unicode("NoSuchHTMLView").tag(sync=True)

ipywidgets.HTML = BrokenHTML
PathBrowser([load_domain("travel")]).widget
"""
BROKEN_BOX = """\
class BrokenVBox(ipywidgets.VBox):
    _view_module_version = traitlets.Unicode("99.0.0").tag(sync=True)

ipywidgets.HTML, ipywidgets.VBox = BrokenHTML.__base__, BrokenVBox
PathBrowser([load_domain("travel")]).widget
"""


def test_a_broken_widget_fails_the_checks(lab_page, lab):
    """The fault these tests exist for: the path browser cannot display. The same checks must say so."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(BROKEN_VIEWS), nbformat.v4.new_code_cell(BROKEN_BOX)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, lab["root"] / "notebooks" / "broken_widget.ipynb")
    lab_page.open("broken_widget")
    lab_page.run_all(timeout=120)
    lab_page.page.wait_for_function("() => document.querySelectorAll('.jupyter-widgets-error-widget').length >= 5")
    with pytest.raises(AssertionError) as failure:
        lab_page.check()
    message = str(failure.value)
    assert "Error displaying widget: 5 widget view(s) failed" in message, message
    assert "console: Error: Class NoSuchHTMLView not found" in message, message
