"""Notebook 02 / subterra.views: offline graph HTML, the path browser, the length plot."""

import re

import pytest

from subterra import DOMAINS, PathBrowser, enumerate_paths, graph_html, load_domain, load_workflow, plot_path_lengths
from subterra.views import HIGHLIGHT

REMOTE = re.compile(r"<(script|link)\b[^>]*(src|href)\s*=\s*[\"']?(https?:)?//", re.IGNORECASE)


@pytest.mark.parametrize("domain", DOMAINS)
def test_graph_html_is_offline(domain):
    page = graph_html(load_domain(domain))
    assert not REMOTE.search(page), REMOTE.search(page).group(0)
    assert "new vis.Network" in page and "vis-network" in page  # the library is in-lined
    assert len(page) > 100_000


def test_highlighted_path_is_drawn(toy_file):
    wf = load_workflow(toy_file)
    path = enumerate_paths(wf)[2]  # greet ask offer change offer accept done
    page = graph_html(wf, path, current=3)
    assert page.count(HIGHLIGHT) >= len(path.edges) - 1
    plain = graph_html(wf)
    assert HIGHLIGHT not in plain


def test_path_browser_filters_and_steps():
    browser = PathBrowser([load_domain("travel"), load_domain("zoom")])
    assert browser.domain.value == "travel"
    total = len(browser.filtered())
    assert total == len(enumerate_paths(load_domain("travel")))
    browser.kind.value = "escalation"
    esc = browser.filtered()
    assert 0 < len(esc) < total and all(p.terminal == "escalation" for p in esc)
    assert f"<b>{len(esc)}</b>" in browser.summary.value
    low, high = browser.length.value
    browser.length.value = (low, low)
    assert all(len(p) == low for p in browser.filtered())
    browser.kind.value = "any"
    browser.length.value = (high, high)
    path = browser.current_path
    assert len(path) == high
    browser.step.value = browser.step.max
    last = load_domain("travel").nodes[path.nodes[-1]]
    assert last.label in browser.node_view.value and "iframe" in browser.graph_view.value
    browser.domain.value = "zoom"
    assert browser.current_path.nodes[0] == load_domain("zoom").start


def test_path_length_plot():
    import matplotlib

    matplotlib.use("Agg")
    ax = plot_path_lengths([load_domain(d) for d in DOMAINS])
    assert ax.get_xlabel().startswith("turns") and len(ax.get_legend().get_texts()) == 3


def test_chat_box_gives_the_agent_the_one_line_prompt_and_the_conversation_only():
    from subterra.views import ChatBox

    class Echo:
        def __init__(self):
            self.seen = []

        def reply(self, messages):
            self.seen.append(messages)
            return f"turn {len(messages)}: {messages[-1]['content'] if len(messages) > 1 else 'hello'}"

    echo = Echo()
    box = ChatBox(echo, "You are a helpful travel booking assistant.")
    assert box.messages == [{"role": "assistant", "content": "turn 1: hello"}]           # it greets first
    box.entry.value = "A trip to <Braga>"                # Enter in the text box sends it
    assert box.messages[-2:] == [{"role": "user", "content": "A trip to <Braga>"},
                                 {"role": "assistant", "content": "turn 3: A trip to <Braga>"}]
    assert box.entry.value == "" and box.say("   ") == "" and len(box.messages) == 3   # blanks are not sent
    assert "&lt;Braga&gt;" in box.log.value and "<Braga>" not in box.log.value          # escaped, never raw HTML
    assert all(m[0] == {"role": "system", "content": "You are a helpful travel booking assistant."}
               and all(x["role"] != "system" for x in m[1:]) for m in echo.seen)
    box.reset()
    assert len(box.messages) == 1


def test_graph_is_drawn_at_full_size_with_a_legend_and_no_warning():
    import warnings

    from subterra import show_graph
    from subterra.views import LEVEL_SEPARATION, graph_height

    wf = load_domain("insurance")
    path = max(enumerate_paths(wf), key=len)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                 # IPython warns about HTML that is only an iframe
        shown = show_graph(wf, path, current=0)._repr_html_()
    assert shown.startswith("<iframe") and graph_height(wf) > 26 * LEVEL_SEPARATION   # 27 levels, unshrunk
    page = graph_html(wf, path)
    for entry in ("agent turn", "customer turn", "ends: success", "ends: abandonment", "ends: escalation",
                  "loop back", f"path {path.id}"):
        assert entry in page
    assert '"label": "1 \\u00b7 Greeting"' in page                # the path's turns numbered (JSON-escaped ·)


def test_path_browser_lists_the_turns_of_the_chosen_path():
    browser = PathBrowser([load_domain("travel")])
    browser.path.value = browser.path.options[5][1]
    path, wf = browser.current_path, load_domain("travel")
    assert browser.turns_view.value.count('class="turn"') == len(path)
    assert f"{len(path)} · {wf.nodes[path.nodes[-1]].label}" in browser.turns_view.value


def test_the_transcript_browser_follows_a_challenged_dialogue_along_its_path():
    from subterra.views import path_position

    travel = load_domain("travel")
    path = next(p for p in enumerate_paths(travel) if p.nodes[:3] == ("greet", "trip_request", "offer_flights"))
    # half an answer (None), the greeting asked again, then the answer
    nodes = ["greet", None, "greet", "trip_request", "offer_flights"]
    assert [path_position(path, nodes[:k]) for k in range(1, 6)] == [0, 0, 0, 1, 2]
    assert path_position(path, list(path.nodes)) == len(path.nodes) - 1
