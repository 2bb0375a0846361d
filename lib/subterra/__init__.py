"""subterra: compile a conversational workflow into a small model's weights.

The public API is flat; notebook N uses the names of stage N.
"""

from .workflow import (DOMAINS, Condition, Edge, Node, Workflow, WorkflowError, data_dir, load_domain,
                       load_workflow, parse_workflow, render, workflow_file)
from .paths import Path, PathStats, back_edges, enumerate_paths, iter_paths, path_stats, to_networkx
from .views import PathBrowser, graph_html, plot_path_lengths, save_graph, show_graph

__version__ = "0.1.0"
