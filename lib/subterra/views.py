"""Interactive views of a workflow: an offline pyvis graph, a path browser, path-length plots.

The graph HTML is self-contained: vis-network's script and stylesheet are in-lined and
pyvis's CDN references are removed, so it opens with no network access.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path as FilePath
from typing import Iterable, Mapping

import networkx as nx

from .paths import Path, back_edges, enumerate_paths
from .workflow import Workflow

ROLE_COLOURS = {"agent": "#4C72B0", "user": "#DD8452"}
TERMINAL_COLOURS = {"success": "#55A868", "abandonment": "#8C8C8C", "escalation": "#C44E52"}
FADED = "#F0F0F0"          # nodes off the highlighted path: pale, their labels still readable
FADED_TEXT = "#707070"
HIGHLIGHT = "#F2B701"
# Layout at the scale a person reads it (1 canvas px = 1 screen px): labels wrap at LABEL_WIDTH, levels
# LEVEL_SEPARATION apart, so the 55-node insurance graph is drawn tall instead of shrunk.
FONT_SIZE = 14
LABEL_WIDTH = 140
NODE_SPACING = 160
LEVEL_SEPARATION = 80
LEGEND_HEIGHT = 56         # px above the canvas (room for the legend to wrap onto a second line)

_REMOTE_TAG = re.compile(r"<(?:link|script)\b[^>]*\b(?:href|src)\s*=\s*[\"']https?://[^>]*>(?:\s*</script>)?",
                         re.IGNORECASE | re.DOTALL)
_EMPTY_TITLE = re.compile(r"<center>\s*<h1>\s*</h1>\s*</center>")


def node_colour(workflow: Workflow, node_id: str) -> str:
    node = workflow.nodes[node_id]
    return TERMINAL_COLOURS[node.terminal] if node.terminal else ROLE_COLOURS[node.role]


def _levels(workflow: Workflow) -> dict[str, int]:
    """Depth of each node in the loop-free graph (longest path from the start)."""
    loops = back_edges(workflow)
    dag = nx.DiGraph()
    dag.add_nodes_from(workflow.nodes)
    dag.add_edges_from((e.source, e.target) for e in workflow.edges if (e.source, e.target) not in loops)
    level = {n: 0 for n in workflow.nodes}
    for n in nx.topological_sort(dag):
        for m in dag.successors(n):
            level[m] = max(level[m], level[n] + 1)
    return level


def graph_height(workflow: Workflow) -> int:
    """Canvas pixels that hold every level at full scale (vis-network fits with a 10% margin)."""
    return int(1.1 * (max(_levels(workflow).values()) * LEVEL_SEPARATION + 60)) + 20


def _legend(path: Path | None) -> str:
    def swatch(colour: str, shape: str = "box", border: str | None = None) -> str:
        radius = "8px" if shape == "round" else "3px"
        return (f'<span style="display:inline-block;width:22px;height:13px;border-radius:{radius};'
                f'background:{colour};border:2px solid {border or colour};vertical-align:-2px"></span>')

    def line(style: str) -> str:
        return f'<span style="display:inline-block;width:26px;border-top:{style};vertical-align:4px"></span>'

    items = [(swatch(ROLE_COLOURS["agent"]), "agent turn"), (swatch(ROLE_COLOURS["user"], "round"), "customer turn")]
    items += [(swatch(colour), f"ends: {kind}") for kind, colour in TERMINAL_COLOURS.items()]
    items.append((line("2px dashed #888"), "loop back"))
    if path is not None:
        items += [(line(f"4px solid {HIGHLIGHT}"), f"path {html.escape(path.id)} (numbers: its turns)"),
                  (swatch("#FFFFFF", border=HIGHLIGHT), "current turn")]
    cells = "".join(f'<span style="white-space:nowrap;margin-right:14px">{mark} {text}</span>' for mark, text in items)
    return (f'<div class="legend" style="font:13px/22px sans-serif;color:#333;height:{LEGEND_HEIGHT - 8}px;'
            f'padding:4px 6px;overflow:hidden">{cells}</div>')


def graph_html(workflow: Workflow, path: Path | None = None, current: int | None = None,
               height: str | None = None) -> str:
    """A standalone HTML page drawing the workflow, with ``path`` (and its step ``current``) highlighted.

    Agent turns are square boxes, customer turns round ones, terminals coloured by how they end; a legend says so.
    ``height`` (CSS) defaults to what the workflow needs at full scale, so labels are readable unzoomed.
    """
    from pyvis.network import Network

    height = height or f"{graph_height(workflow)}px"
    net = Network(height=height, width="100%", directed=True, cdn_resources="in_line", notebook=False)
    turns: dict[str, list[int]] = {}
    for i, node_id in enumerate(path.nodes if path else []):
        turns.setdefault(node_id, []).append(i + 1)
    path_edges = set(path.edges) if path else set()
    stepping = path is not None and current is not None and 0 <= current < len(path)
    current_node = path.nodes[current] if stepping else None
    loops = back_edges(workflow)
    for node_id, level in _levels(workflow).items():
        node = workflow.nodes[node_id]
        shown = path is None or node_id in turns
        colour = node_colour(workflow, node_id) if shown else FADED
        label = f"{', '.join(map(str, turns[node_id]))} · {node.label}" if node_id in turns else node.label
        title = f"{node.label} ({node.role}{', ' + node.terminal if node.terminal else ''})\n\n{node.prompt}"
        border = HIGHLIGHT if node_id == current_node else (colour if shown else "#C8C8C8")
        net.add_node(node_id, label=label, title=title, level=level, margin=8,
                     color={"background": colour, "border": border,
                            "highlight": {"background": colour, "border": "#333333"}},
                     borderWidth=6 if node_id == current_node else 1,
                     shape="box", shapeProperties={"borderRadius": 3 if node.role == "agent" else 16},
                     widthConstraint={"maximum": LABEL_WIDTH},
                     font={"color": "#FFFFFF" if shown else FADED_TEXT, "size": FONT_SIZE, "face": "sans-serif"})
    # the path's edges last, so they are drawn over the others
    for edge in sorted(workflow.edges, key=lambda e: (e.source, e.target) in path_edges):
        key = (edge.source, edge.target)
        on = key in path_edges
        net.add_edge(edge.source, edge.target, title=edge.when or "", dashes=key in loops,
                     color=HIGHLIGHT if on else ("#C8C8C8" if path else "#888888"), width=5 if on else 1.5,
                     smooth={"type": "curvedCW", "roundness": 0.3} if key in loops else False)
    net.set_options(json.dumps({
        "layout": {"hierarchical": {"enabled": True, "direction": "UD", "levelSeparation": LEVEL_SEPARATION,
                                    "nodeSpacing": NODE_SPACING, "treeSpacing": NODE_SPACING}},
        "physics": {"enabled": False},
        # no zoom on the mouse wheel: it would take the page's scrolling over; drag to pan, hover for prompts
        "interaction": {"hover": True, "zoomView": False, "dragNodes": False}}))
    page = _EMPTY_TITLE.sub("", _REMOTE_TAG.sub("", net.generate_html(notebook=False)))
    style = "<style>body{margin:0} #mynetwork{border:none !important}</style>"
    return page.replace("</head>", style + "</head>", 1).replace("<body>", "<body>" + _legend(path), 1)


def save_graph(workflow: Workflow, file: str | FilePath, path: Path | None = None) -> FilePath:
    """Write the graph as one offline HTML file and return its path."""
    file = FilePath(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(graph_html(workflow, path), encoding="utf-8")
    return file


class GraphView:
    """What :func:`show_graph` returns: Jupyter displays it as an iframe holding the offline page."""

    def __init__(self, page: str, height: int):
        self.page, self.height = page, height

    def _repr_html_(self) -> str:
        return _iframe(self.page, self.height)


def show_graph(workflow: Workflow, path: Path | None = None, current: int | None = None,
               height: int | None = None) -> GraphView:
    """Display the graph inline in Jupyter, tall enough to read every label without zooming."""
    canvas = (height - LEGEND_HEIGHT) if height else graph_height(workflow)
    return GraphView(graph_html(workflow, path, current, height=f"{canvas}px"), canvas + LEGEND_HEIGHT + 4)


def graph_frame(workflow: Workflow, path: Path | None = None, current: int | None = None) -> str:
    """The graph as an iframe element, for an ipywidgets HTML view."""
    canvas = graph_height(workflow)
    return _iframe(graph_html(workflow, path, current, height=f"{canvas}px"), canvas + LEGEND_HEIGHT + 4)


def _iframe(page: str, height: int) -> str:
    return (f'<iframe srcdoc="{html.escape(page, quote=True)}" style="width:100%;height:{height}px;'
            'border:1px solid #ddd"></iframe>')


def turns_html(workflow: Workflow, path: Path, current: int | None = None) -> str:
    """The path's turns in order, one chip each (agent blue, customer orange), the current one outlined."""
    chips = []
    for i, node_id in enumerate(path.nodes):
        node = workflow.nodes[node_id]
        background = "#E3EBF7" if node.role == "agent" else "#FBE5D6"
        border = f"2px solid {HIGHLIGHT}" if i == current else "1px solid #D0D0D0"
        chips.append(f'<span class="turn" style="display:inline-block;margin:2px;padding:1px 7px;border-radius:9px;'
                     f'background:{background};border:{border}">{i + 1} · {html.escape(node.label)}</span>')
    return f'<div class="turns" style="line-height:1.9">{"".join(chips)}</div>'


class PathBrowser:
    """ipywidgets browser: pick a domain, filter paths, step through one on the graph.

    ``PathBrowser(workflows).widget`` is the box to display; its methods are plain so
    tests can drive it without a front end.
    """

    def __init__(self, workflows: Mapping[str, Workflow] | Iterable[Workflow]):
        import ipywidgets as w

        if not isinstance(workflows, Mapping):
            workflows = {wf.name: wf for wf in workflows}
        self.workflows = dict(workflows)
        self._paths = {name: enumerate_paths(wf) for name, wf in self.workflows.items()}
        self.domain = w.Dropdown(options=list(self.workflows), description="domain")
        self.kind = w.Dropdown(options=["any", "success", "abandonment", "escalation"], description="ends in")
        self.length = w.IntRangeSlider(description="turns", min=1, max=1, value=(1, 1))
        self.path = w.Dropdown(description="path")
        self.step = w.IntSlider(description="step", min=0, max=0)
        self.turns_view = w.HTML()
        self.node_view = w.HTML()
        self.graph_view = w.HTML()
        self.summary = w.HTML()
        self.domain.observe(lambda _: self._on_domain(), "value")
        for control in (self.kind, self.length):
            control.observe(lambda _: self._on_filter(), "value")
        self.path.observe(lambda _: self._on_path(), "value")
        self.step.observe(lambda _: self._render(), "value")
        self.widget = w.VBox([w.HBox([self.domain, self.kind, self.length]), self.summary,
                              w.HBox([self.path, self.step]), self.turns_view, self.node_view, self.graph_view])
        self.widget.add_class("subterra-path-browser")
        self._on_domain()

    @property
    def workflow(self) -> Workflow:
        return self.workflows[self.domain.value]

    def filtered(self) -> list[Path]:
        low, high = self.length.value
        kind = self.kind.value
        return [p for p in self._paths[self.domain.value]
                if low <= len(p) <= high and (kind == "any" or p.terminal == kind)]

    def _on_domain(self) -> None:
        lengths = [len(p) for p in self._paths[self.domain.value]]
        self.length.min, self.length.max = 1, max(lengths)
        self.length.min = min(lengths)
        self.length.value = (min(lengths), max(lengths))
        self._on_filter()

    def _on_filter(self) -> None:
        paths = self.filtered()
        total = len(self._paths[self.domain.value])
        self.summary.value = f"<b>{len(paths)}</b> of {total} paths match"
        self.path.options = [(f"{p.id} · {len(p)} turns · {p.terminal}", p.index) for p in paths]
        if paths and self.path.value is None:      # a filter that emptied the list, then refilled it
            self.path.value = paths[0].index
        self._on_path()

    def _on_path(self) -> None:
        path = self.current_path
        self.step.max = len(path) - 1 if path else 0
        self.step.value = 0
        self._render()

    @property
    def current_path(self) -> Path | None:
        if self.path.value is None:
            return None
        return self._paths[self.domain.value][self.path.value]

    def _render(self) -> None:
        path = self.current_path
        if path is None:
            self.node_view.value = "<i>No path matches these filters.</i>"
            self.turns_view.value = ""
            self.graph_view.value = ""
            return
        node = self.workflow.nodes[path.nodes[self.step.value]]
        way_on = path.nodes[self.step.value + 1] if self.step.value + 1 < len(path) else None
        examples = "".join(f"<li>{html.escape(e)}</li>" for e in self.workflow.sayings(node.id, way_on))
        self.turns_view.value = turns_html(self.workflow, path, self.step.value)
        self.node_view.value = (
            f"<h4>Turn {self.step.value + 1}/{len(path)}: {html.escape(node.label)} "
            f"<small>({node.role}{', ' + node.terminal if node.terminal else ''})</small></h4>"
            f"<p><b>Prompt</b>: {html.escape(node.prompt)}</p><p><b>Examples</b></p><ul>{examples}</ul>")
        self.graph_view.value = graph_frame(self.workflow, path, self.step.value)


def plot_path_lengths(workflows: Iterable[Workflow], ax=None):
    """Seaborn histogram of turns per path, one colour per domain."""
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    rows = [{"domain": wf.name, "turns": len(p)} for wf in workflows for p in enumerate_paths(wf)]
    frame = pd.DataFrame(rows)
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4))
    sns.histplot(frame, x="turns", hue="domain", discrete=True, stat="percent", common_norm=False,
                 element="step", ax=ax)
    ax.set(title="Turns per path", xlabel="turns (messages) in a path", ylabel="% of the domain's paths")
    return ax


def _bubble(role: str, text: str, caption: str | None = None) -> str:
    """One message: the agent's on the left in blue, the customer's on the right in orange; a caption under it."""
    align, colour = ("left", "#EEF3FB") if role == "assistant" else ("right", "#FCEFE6")
    under = f'<br><small style="color:#888">{html.escape(caption)}</small>' if caption else ""
    return (f'<div class="message {role}" style="text-align:{align};margin:4px"><span style="display:inline-block;'
            f'background:{colour};padding:6px 10px;border-radius:8px;max-width:85%;line-height:1.4">{html.escape(text)}</span>'
            f'{under}</div>')


def path_position(path: Path, nodes: list[str | None]) -> int:
    """Where along ``path`` a dialogue is after the turns labelled ``nodes``: a turn off the procedure (None: half
    an answer, a goodbye) or a step asked again does not move it on."""
    at = 0
    for node_id in nodes[1:]:
        if at + 1 < len(path.nodes) and path.nodes[at + 1] == node_id:
            at += 1
    return at


class TranscriptBrowser:
    """ipywidgets browser for dialogues: read one turn by turn, node labels beside, path on the graph.

    ``rows`` are corpus rows (``datasets`` rows or dicts with ``id``, ``messages``, ``nodes``,
    ``path_id``); the metadata supplies the labels, the training text is shown as written.
    """

    def __init__(self, rows, workflow: Workflow):
        import ipywidgets as w

        self.rows = [dict(r) for r in rows]
        self.workflow = workflow
        self._paths = {p.id: p for p in enumerate_paths(workflow)}
        self.dialogue = w.Dropdown(options=[(f"{r['id']} · {r['path_id']} · {len(r['nodes'])} turns", i)
                                            for i, r in enumerate(self.rows)], description="dialogue")
        self.step = w.IntSlider(description="turn", min=1, max=1)
        self.transcript = w.HTML()
        self.graph_view = w.HTML()
        self.dialogue.observe(lambda _: self._on_dialogue(), "value")
        self.step.observe(lambda _: self._render(), "value")
        # side by side where there is room, the graph under the transcript where there is not
        self.transcript.layout = w.Layout(flex="1 1 340px", min_width="300px")
        self.graph_view.layout = w.Layout(flex="1 1 600px", min_width="560px")
        self.widget = w.VBox([w.HBox([self.dialogue, self.step]),
                              w.Box([self.transcript, self.graph_view], layout=w.Layout(flex_flow="row wrap"))])
        self.widget.add_class("subterra-transcript-browser")
        self._on_dialogue()

    @property
    def row(self) -> dict:
        return self.rows[self.dialogue.value or 0]

    def _on_dialogue(self) -> None:
        self.step.max = max(1, len(self.row["nodes"]))
        self.step.value = self.step.max
        self._render()

    def transcript_html(self, upto: int) -> str:
        row = self.row
        turns = [m for m in row["messages"] if m["role"] != "system"]
        parts = [f"<p><i>system:</i> {html.escape(row['messages'][0]['content'])}</p>"]
        for i, (message, node_id) in enumerate(zip(turns[:upto], row["nodes"][:upto])):
            node = self.workflow.nodes.get(node_id)
            label = node.label if node else (node_id or "no node")   # a turn that performed no node
            parts.append(_bubble(message["role"], message["content"], f"turn {i + 1} · {label}"))
        return "".join(parts)

    def _render(self) -> None:
        self.transcript.value = self.transcript_html(self.step.value)
        path = self._paths.get(self.row["path_id"])
        if path is not None:
            self.graph_view.value = graph_frame(self.workflow, path, path_position(path, self.row["nodes"][:self.step.value]))


class ChatBox:
    """ipywidgets chat with an agent that answers from the conversation alone.

    ``agent`` is anything with ``reply(messages) -> str`` (e.g. :class:`subterra.agent.Agent`);
    it gets the one-line ``system_prompt`` and the conversation so far, nothing else.
    """

    def __init__(self, agent, system_prompt: str, greet: bool = True):
        import ipywidgets as w

        self.agent, self.system_prompt = agent, system_prompt
        self.messages: list[dict] = []
        self.log = w.HTML()
        self.entry = w.Text(placeholder="Type as the customer and press Enter", layout=w.Layout(width="70%"))
        self.send = w.Button(description="Send")
        self.reset_button = w.Button(description="Start over")
        self.send.on_click(lambda _: self.say(self.entry.value))
        self.entry.continuous_update = False
        self.entry.observe(lambda change: self.say(change["new"]) if change["new"] else None, "value")
        self.reset_button.on_click(lambda _: self.reset(greet))
        self.widget = w.VBox([self.log, w.HBox([self.entry, self.send, self.reset_button])])
        self.widget.add_class("subterra-chat-box")
        self.reset(greet)

    def reset(self, greet: bool = True) -> None:
        self.messages = []
        if greet:
            self._agent_turn()
        self._render()

    def say(self, text: str) -> str:
        """Send a customer message; return the agent's reply."""
        text = text.strip()
        if not text:
            return ""
        self.messages.append({"role": "user", "content": text})
        self.entry.value = ""
        reply = self._agent_turn()
        self._render()
        return reply

    def _agent_turn(self) -> str:
        reply = self.agent.reply([{"role": "system", "content": self.system_prompt}] + self.messages)
        self.messages.append({"role": "assistant", "content": reply})
        return reply

    def _render(self) -> None:
        bubbles = []
        for m in self.messages:
            bubbles.append(_bubble(m["role"], m["content"]))
        self.log.value = (f"<p><i>system:</i> {html.escape(self.system_prompt)}</p>" + "".join(bubbles))
