"""Command line: ``python -m subterra COMMAND ...`` (also installed as ``subterra``).

Errors in the user's input print one line to stderr and exit 1 (2 for a usage error: an unknown
option, a count that is not positive); no tracebacks. Arguments are checked where they are read,
before anything is loaded, downloaded or written.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import warnings
from pathlib import Path as FilePath

from .backends import DEFAULT_MODELS, BackendError, ModelRetirementWarning
from .bases import BASES, BaseModelError
from .paths import enumerate_paths, path_stats
from .recipes import DEFAULT_RECIPE
from .scenarios import UnsatisfiablePath
from .workflow import WorkflowError, load_domain, workflow_file


class UsageError(Exception):
    """A command-line argument that cannot be used: one line naming it, what is wrong and what would be right."""

    def __init__(self, arg: str, value, problem: str):
        super().__init__(f"{arg} {value}: {problem}")


def _existing(arg: str, path, hint: str, folder: bool = False) -> FilePath:
    """``path`` if it is an existing file (or folder); else a UsageError saying so and what makes it (``hint``)."""
    found, kind = FilePath(path), "folder" if folder else "file"
    if found.is_dir() if folder else found.is_file():
        return found
    raise UsageError(arg, path, f"{'not a' if found.exists() else 'no such'} {kind}; {hint}")


def _hub_id(value: str) -> bool:
    """Whether ``value`` reads as a Hugging Face id (owner/name), not as a local path (a folder here is its parent)."""
    return bool(re.fullmatch(r"[\w.-]+/[\w.-]+", value)) and not FilePath(value).parent.is_dir()


def _model_arg(arg: str, value: str, hint: str = "") -> str:
    """``value`` once it surely names a model: a folder holding one (config.json), a named base, or a Hub id.

    Checked before any library sees it: a typo in a folder name otherwise reaches the Hub client,
    whose complaint (about the form of repo ids) never says the folder does not exist.
    """
    hint = f"; {hint}" if hint else ""
    path = FilePath(value)
    if value in BASES or (path / "config.json").is_file():
        return value
    if path.is_dir():
        raise UsageError(arg, value, f"holds no model (no config.json: training not finished?){hint}")
    if _hub_id(value):
        return value
    problem = "not a folder" if path.exists() else "no such folder"
    raise UsageError(arg, value, f"{problem}, nor a named base ({', '.join(BASES)}) or a Hugging Face id "
                                 f"(owner/name){hint}")


def _corpus_arg(path: str, domain: str) -> FilePath:
    """The --data folder, once it holds a finished corpus (``datasets`` would only say "not found")."""
    hint = f"`subterra synthesize --domain {domain}` writes it"
    folder = _existing("--data", path, hint, folder=True)
    if not any((folder / sub / "dataset_dict.json").is_file() for sub in ("corpus", ".")):
        raise UsageError("--data", path, f"holds no corpus (a synthesis not finished?); {hint}")
    return folder


def _transcripts(path: str, domain: str) -> dict[str, list[dict]]:
    """The runs in the --transcripts folder, once there is one with at least one condition's transcripts."""
    from .simulation import load_run

    hint = f"`subterra simulate --domain {domain}` writes them"
    runs = load_run(_existing("--transcripts", path, hint, folder=True))
    if not runs:
        raise UsageError("--transcripts", path, f"holds no transcripts; {hint}")
    return runs


def _scores(path: str, domain: str):
    """The --scores file as a frame, once it is a CSV with the columns `subterra judge` writes."""
    import pandas as pd

    from .judge import CRITERIA

    hint = f"`subterra judge --domain {domain}` writes one"
    try:
        scores = pd.read_csv(_existing("--scores", path, hint))
    except ValueError as exc:               # pandas' parser errors and a binary file's UnicodeDecodeError
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UsageError("--scores", path, f"not a CSV file ({reason}); {hint}") from None
    missing = sorted({"condition", "scenario_id", "judge", "error", *CRITERIA} - set(scores.columns))
    if missing:
        raise UsageError("--scores", path, f"not a scores file (no column {', '.join(missing)}); {hint}")
    return scores


def _python_file(spec: str) -> str:
    """import-langgraph's FILE.py[:NAME], once FILE is a .py file: it is imported, and importlib fails obscurely
    on anything else (a missing file is load_graph's to report)."""
    if FilePath(re.sub(r"(?<=\.py):[\w.]+$", "", spec)).suffix != ".py":      # NAME stripped as load_graph does
        raise UsageError("FILE.py", spec, "not a Python file; give the .py file that builds the graph "
                                          "(FILE.py or FILE.py:NAME)")
    return spec


def positive_int(text: str) -> int:
    """argparse type for a count: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def condition_names(text: str) -> list[str]:
    """argparse type for --conditions: comma-separated names, each one of simulation.CONDITIONS."""
    from .simulation import CONDITIONS

    names = [name.strip() for name in text.split(",") if name.strip()]
    for name in names or [text]:
        if name not in CONDITIONS:
            raise argparse.ArgumentTypeError(f"unknown condition {name!r} (choose from {', '.join(CONDITIONS)})")
    return names


def condition_sizes(text: str) -> dict[str, int]:
    """argparse type for --sizes: NAME=N[,NAME=N...], each name a condition, each N a count."""
    sizes = {}
    for item in filter(None, text.split(",")):
        name, equals, count = item.partition("=")
        if not equals:
            raise argparse.ArgumentTypeError(f"expected NAME=N[,NAME=N...], got {text!r}")
        sizes[condition_names(name)[0]] = positive_int(count)
    return sizes


def _validate(args) -> int:
    bad = 0
    for name in args.files:
        try:
            wf = load_domain(name)
        except WorkflowError as exc:
            print(exc, file=sys.stderr)
            bad += 1
        else:
            if not args.quiet:
                print(f"{workflow_file(name)}: ok ({len(wf.nodes)} nodes, {len(wf.edges)} edges)")
    return 1 if bad else 0


def _paths(args) -> int:
    wf = load_domain(args.file)
    paths = enumerate_paths(wf)
    stats = path_stats(wf, paths)
    if args.json:
        summary = stats.as_dict()
        summary.pop("turns")
        if args.list:
            summary["path_list"] = [{"id": p.id, "terminal": p.terminal, "nodes": list(p.nodes)} for p in paths]
        print(json.dumps(summary))
        return 0
    print(f"{wf.title}: {stats.nodes} nodes, {stats.decision_hubs} decision hubs "
          f"({', '.join(wf.decision_hubs)}), {stats.paths} paths, {stats.min_turns}-{stats.max_turns} turns")
    print("ending in: " + ", ".join(f"{k} {v}" for k, v in stats.terminals.items()))
    if args.list:
        for p in paths:
            print(f"{p.id}  {len(p):>2} turns  {p.terminal:<11}  {' > '.join(p.nodes)}")
    return 0


def _graph(args) -> int:
    from .views import save_graph

    wf = load_domain(args.file)
    path = None
    if args.path:
        by_id = {p.id: p for p in enumerate_paths(wf)}
        if args.path not in by_id:
            raise WorkflowError(f"no path '{args.path}' (ids run p0000..p{len(by_id) - 1:04d})",
                                file=str(workflow_file(args.file)))
        path = by_id[args.path]
    out = save_graph(wf, args.out or f"outputs/{wf.name}/graph.html", path)
    print(out)
    return 0


def _model_options(args, name: str | None) -> dict:
    """The thinking settings for a remote backend (the offline stand-in takes none)."""
    if name in (None, "offline"):
        return {}
    return {"thinking": args.thinking, **({"effort": args.effort} if args.effort else {})}


def _synthesize(args) -> int:
    import os

    from .backends import THINKING_ROOM, get_backend, price_of, warn_if_retiring
    from .synthesis import corpus_size, estimate, plan_corpus, synthesize

    wf = load_domain(args.domain)
    n = args.n or corpus_size(wf)
    teacher = args.teacher or ("anthropic" if os.environ.get("ANTHROPIC_API_KEY") else "offline")
    model = args.model or DEFAULT_MODELS[teacher]
    plan = plan_corpus(wf, n, args.seed)
    cost = estimate(plan, model)
    coverage = "every one covered" if n >= len(plan.paths) else f"{n} of them sampled"
    print(f"plan: {cost}; {len(plan.paths)} paths, {coverage}")
    if args.dry_run and teacher == "offline" and not args.teacher:    # no key: what would the paid run cost?
        paid = estimate(plan, DEFAULT_MODELS["anthropic"])
        print(f"with ANTHROPIC_API_KEY set the teacher is {paid.model}: ~${paid.dollars:,.2f} at list prices "
              f"({paid.calls:,} calls; --teacher anthropic for the full estimate)")
    if teacher != "offline" and args.thinking == "adaptive":
        extra = cost.calls * THINKING_ROOM * price_of(model).output / 1e6
        print(f"adaptive thinking: billed as output and not in this estimate; at most {THINKING_ROOM:,} tokens "
              f"a call, up to ${extra:,.2f} more")
    if teacher != "offline" and not args.base_url:
        warn_if_retiring(teacher, model)          # before anything is spent (once per model)
    if args.dry_run:
        return 0
    options = {"base_url": args.base_url} if args.base_url else {}
    backend = get_backend(teacher, args.model, **options, **_model_options(args, teacher))
    out = args.out or f"outputs/{wf.name}/synthesis"
    result = synthesize(wf, n, out, backend, seed=args.seed, budget=args.budget, concurrency=args.concurrency)
    print(f"{result.dialogues}/{result.planned} dialogues in {result.out_dir} "
          f"({result.written_now} new, {result.calls} backend calls, {result.cache_hits} from cache, "
          f"${result.dollars:.4f} spent)")
    if result.stopped:
        print(f"stopped early: {result.stopped}", file=sys.stderr)
        return 2
    return 0


def _train(args) -> int:
    from .training import run_training

    wf = load_domain(args.domain)
    data = _corpus_arg(args.data or f"outputs/{wf.name}/synthesis", args.domain)
    overrides = {"model_name_or_path": _model_arg("--base", args.base)} if args.base else {}
    if args.lora_rank:
        overrides["lora_rank"] = args.lora_rank
    return run_training(data, args.out or f"outputs/{wf.name}/model", args.recipe, args.set, progress=True,
                        resume=not args.no_resume, workflow=wf, **overrides)


def _frontier(name: str | None, model: str | None, args=None):
    """The frontier backend for in-context / LangGraph (or an LLM judge), or None when no key is set."""
    import os

    from .backends import get_backend

    if name is None:
        if os.environ.get("ANTHROPIC_API_KEY"):
            name = "anthropic"
        elif os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL"):
            name = "openai"
        else:
            return None
    return get_backend(name, model, **(_model_options(args, name) if args is not None else {}))


def _simulate(args) -> int:
    from .backends import get_backend
    from .simulation import build_conditions, simulate

    wf = load_domain(args.domain)
    model = args.model and _model_arg("--model", args.model, f"`subterra train --domain {args.domain}` makes one")
    try:
        conditions, skipped = build_conditions(args.conditions, wf, model,
                                               _frontier(args.frontier, args.frontier_model, args), args.seed,
                                               args.orchestrated_speaker, stand_in=not args.no_stand_in)
    except ValueError as exc:               # a speaker the model cannot give (a base of a from-scratch model)
        raise UsageError("--orchestrated-speaker", args.orchestrated_speaker, str(exc)) from None
    for message in skipped:
        print(f"skipped {message}", file=sys.stderr)
    for condition in conditions:
        print(f"{condition.name}: {condition.label}", file=sys.stderr)
    simulator = (None if args.simulator == "offline" else
                 get_backend(args.simulator, args.simulator_model, **_model_options(args, args.simulator)))
    out = args.out or f"outputs/{wf.name}/simulation"
    runs = simulate(wf, conditions, out, n=args.n, seed=args.seed, simulator=simulator, sizes=args.sizes,
                    batch_size=args.batch_size, max_turns=args.max_turns)
    for name, rows in runs.items():
        errors = sum(bool(r["error"]) for r in rows)
        adherent = sum(r["valid_path"] and r["right_ending"] for r in rows)
        print(f"{name}: {len(rows)} conversations, {adherent} followed the procedure to the right end, "
              f"{errors} failed; {out}/{name}")
    return 0 if conditions else 1


def _judge(args) -> int:
    from .judge import LLMJudge, OfflineJudge, judge_transcripts, scores_frame
    from .store import write_atomic

    wf = load_domain(args.domain)
    runs = _transcripts(args.transcripts, args.domain)
    judge = OfflineJudge(wf) if args.judge == "offline" else LLMJudge(wf, _frontier(args.judge, args.model, args))
    scores = scores_frame(judge_transcripts([t for rows in runs.values() for t in rows], judge))
    out = args.out or f"{args.transcripts}/scores-{args.judge}.csv"
    write_atomic(FilePath(out), scores.to_csv(index=False))
    print(f"{len(scores)} conversations scored by {judge.name} ({int(scores['error'].notna().sum())} errors): {out}")
    return 0


def _analyze(args) -> int:
    import pandas as pd

    from .analysis import comparison_table, cost_table, score_table, write_results

    wf = load_domain(args.domain)
    runs = _transcripts(args.transcripts, args.domain)
    scores = _scores(args.scores, args.domain)
    scores["error"] = scores["error"].where(scores["error"].notna(), None)
    out = FilePath(args.out or f"outputs/{wf.name}")
    paths = write_results(out, wf.name, scores, runs, args.compile_dollars)
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(score_table(scores).round(2))
        if scores["condition"].nunique() > 1:
            print(comparison_table(scores).round(3).to_string(index=False))
        print(cost_table(runs, args.compile_dollars).round(4))
    print("wrote", *paths)
    return 0


def _import_langgraph(args) -> int:
    import os

    from .backends import get_backend
    from .importers import import_langgraph

    spec = _python_file(args.file)
    teacher = None
    if args.teacher == "local":
        base_url = args.base_url or os.environ.get("OPENAI_BASE_URL") or "http://localhost:8000/v1"
        if not args.model:
            raise BackendError(f"--teacher local needs --model: the name the server at {base_url} serves")
        teacher = get_backend("openai", args.model, base_url=base_url)
    elif args.teacher:
        teacher = get_backend(args.teacher, args.model, **({"base_url": args.base_url} if args.base_url else {}))
    name = args.name or (FilePath(args.out).stem if args.out else None)
    imported = import_langgraph(spec, name, teacher=teacher, allow_lossy=args.allow_lossy)
    out = imported.write(args.out or workflow_file(imported.name))
    print(f"{out}: {imported.summary()}")
    found = imported.found
    print(f"  graph: {found.spec}" + (f" ({found.how})" if found.how != "named" else ""))
    print(f"  shape: the graph's {imported.shape.summary()}: " +
          ("lost in part, written as --allow-lossy asks" if imported.losses else "all kept"))
    for loss in imported.losses:
        print(f"  lost: {loss}")
    for note in imported.notes:
        print(f"  inferred: {note}")
    if imported.todos:
        print(f"  to fill ({len(imported.todos)} TODO, the loader names each until done): "
              + ", ".join(f"line {line} ({where})" for line, where in imported.todos))
    return 0


def _tutorial(args) -> int:
    from .tutorial import NotebookFailed, notebooks_dir, run_notebooks, tutorial_notebooks

    if not tutorial_notebooks(args.only):
        print(f"no notebook in {notebooks_dir()} starts with {' or '.join(args.only)}", file=sys.stderr)
        return 1
    try:
        for path in run_notebooks(args.out, args.only):
            print(path)
    except NotebookFailed as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


DEFAULTS_HELP = f"default: {DEFAULT_MODELS['anthropic']} / {DEFAULT_MODELS['openai']}"


def _thinking_flags(p: argparse.ArgumentParser) -> None:
    """--thinking and --effort, for every command that builds a remote backend."""
    p.add_argument("--thinking", default="off", choices=["off", "adaptive"],
                   help="thinking before each reply (default off: short template-guided turns gain little from "
                        "it, and thinking is billed as output)")
    p.add_argument("--effort", choices=["low", "medium", "high", "xhigh", "max"],
                   help="Claude's output_config.effort / OpenAI's reasoning effort (default: the model's own)")


class Parser(argparse.ArgumentParser):
    """argparse with a usage error in one line, like every other error here (the usage is one --help away)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="subterra", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("validate", help="check workflow files; one error line per bad file")
    p.add_argument("files", nargs="+", metavar="FILE", help="workflow YAML file or domain name (travel, zoom, ...)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    p.set_defaults(run=_validate)

    p = commands.add_parser("paths", help="count and list every path through a workflow")
    p.add_argument("file", metavar="FILE", help="workflow YAML file or domain name")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument("--list", action="store_true", help="also list every path")
    p.set_defaults(run=_paths)

    p = commands.add_parser("graph", help="write the workflow graph as one offline HTML file")
    p.add_argument("file", metavar="FILE", help="workflow YAML file or domain name")
    p.add_argument("--path", help="highlight this path id (e.g. p0007)")
    p.add_argument("--out", help="output file (default outputs/DOMAIN/graph.html)")
    p.set_defaults(run=_graph)

    p = commands.add_parser("synthesize", help="have a teacher write the dialogue corpus (resumable)")
    p.add_argument("--domain", required=True, help="domain name or workflow file")
    p.add_argument("--teacher", choices=["offline", "anthropic", "openai"],
                   help="backend (default: anthropic if ANTHROPIC_API_KEY is set, else offline)")
    p.add_argument("--model", help=f"model name for the backend ({DEFAULTS_HELP})")
    p.add_argument("--base-url", help="OpenAI-compatible server, e.g. http://localhost:8000/v1 (vLLM, Ollama)")
    p.add_argument("--n", type=positive_int, help="number of dialogues (default: the paper's size for the domain)")
    p.add_argument("--out", help="output folder (default outputs/DOMAIN/synthesis)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--budget", type=float, help="stop cleanly before spending more than this many dollars")
    p.add_argument("--concurrency", type=positive_int, default=16, help="dialogues written at once")
    p.add_argument("--dry-run", action="store_true", help="print calls, tokens and dollars, then stop")
    _thinking_flags(p)
    p.set_defaults(run=_synthesize)

    p = commands.add_parser("train", help="compile the corpus into a small model (full parameters; resumable)")
    p.add_argument("--domain", required=True, help="domain name or workflow file")
    p.add_argument("--data", help="synthesis output folder (default outputs/DOMAIN/synthesis)")
    p.add_argument("--base", help="a named base (smollm2-135m-instruct), Hugging Face id or local model folder "
                                  "(default: the recipe's)")
    p.add_argument("--recipe", default=DEFAULT_RECIPE, help=f"recipe name in recipes/ or a YAML file "
                                                            f"(default {DEFAULT_RECIPE}; tiny-cpu: from scratch)")
    p.add_argument("--out", help="model folder (default outputs/DOMAIN/model)")
    p.add_argument("--lora-rank", type=int, default=0, help="train LoRA adapters of this rank instead")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="override a recipe field")
    p.add_argument("--no-resume", action="store_true", help="start over even if checkpoints exist")
    p.set_defaults(run=_train)

    p = commands.add_parser("simulate", help="a simulated customer talks to each condition (resumable)")
    p.add_argument("--domain", required=True, help="domain name or workflow file")
    p.add_argument("--model", help="compiled model folder (from `subterra train`)")
    p.add_argument("--conditions", type=condition_names,
                   default="subterranean,orchestrated,langgraph,in_context,oracle",
                   help="comma-separated: subterranean, orchestrated, langgraph, in_context, oracle")
    p.add_argument("--n", type=positive_int, default=200, help="evaluation scenarios (the same for every condition)")
    p.add_argument("--out", help="output folder (default outputs/DOMAIN/simulation)")
    p.add_argument("--simulator", default="offline", choices=["offline", "anthropic", "openai"])
    p.add_argument("--simulator-model", help=f"model for an LLM customer ({DEFAULTS_HELP})")
    p.add_argument("--frontier", choices=["anthropic", "openai"], help="backend for in_context and langgraph")
    p.add_argument("--frontier-model", help=f"model for the frontier conditions ({DEFAULTS_HELP})")
    p.add_argument("--orchestrated-speaker", default="auto", choices=["auto", "base", "model", "offline"],
                   help="who speaks under the controller: the compiled model's base (auto; the script for a model "
                        "trained from scratch), the compiled model, or the workflow's own sentences (offline)")
    p.add_argument("--no-stand-in", action="store_true",
                   help="without a key, skip in_context and langgraph instead of running the base model as a "
                        "stand-in for the frontier model")
    p.add_argument("--sizes", type=condition_sizes, default="",
                   help="fewer scenarios for some conditions, e.g. langgraph=20,in_context=40 (the first ones of "
                        "the same list: still paired)")
    p.add_argument("--batch-size", type=positive_int, default=32,
                   help="conversations a small model answers together, one batched generate per round (1: one at "
                        "a time)")
    p.add_argument("--max-turns", type=positive_int, default=60, help="messages per conversation at most")
    p.add_argument("--seed", type=int, default=0)
    _thinking_flags(p)
    p.set_defaults(run=_simulate)

    p = commands.add_parser("judge", help="score every transcript on the five criteria")
    p.add_argument("--domain", required=True, help="domain name or workflow file")
    p.add_argument("--transcripts", required=True, help="a `subterra simulate` output folder")
    p.add_argument("--judge", default="offline", choices=["offline", "anthropic", "openai"])
    p.add_argument("--model", help=f"judge model ({DEFAULTS_HELP})")
    p.add_argument("--out", help="scores file (default TRANSCRIPTS/scores-JUDGE.csv)")
    _thinking_flags(p)
    p.set_defaults(run=_judge)

    p = commands.add_parser("analyze", help="tables, results.json and scores.csv from scores and transcripts")
    p.add_argument("--domain", required=True, help="domain name or workflow file")
    p.add_argument("--transcripts", required=True, help="a `subterra simulate` output folder")
    p.add_argument("--scores", required=True, help="a scores file from `subterra judge`")
    p.add_argument("--compile-dollars", type=float, default=65.0,
                   help="one-time compile cost for the break-even (default: the paper's $50-80 midpoint)")
    p.add_argument("--out", help="folder for results.json and scores.csv (default outputs/DOMAIN)")
    p.set_defaults(run=_analyze)

    p = commands.add_parser("import-langgraph", help="write a workflow from a LangGraph graph (runs the .py file)",
                            description="Import a LangGraph StateGraph, compiled graph or graph factory as a workflow "
                                        "file. Loading FILE.py RUNS it (as an import): use only code you trust. "
                                        "Guesses are marked '# REVIEW' in the file; what the code does not say is "
                                        "left TODO (the loader names each TODO line) unless --teacher writes it. "
                                        "The graph's routers, ways to END and walks are checked against the "
                                        "workflow's decision hubs, endings and paths.")
    p.add_argument("file", metavar="FILE.py[:NAME]", help="the Python file, and the graph or factory in it (without "
                                                          ":NAME: the file's one graph, else its one function of no "
                                                          "arguments that builds one)")
    p.add_argument("--out", help="workflow file to write (default data/workflows/NAME.yaml)")
    p.add_argument("--name", help="the workflow's name (default: the --out file's name, else the .py file's)")
    p.add_argument("--teacher", choices=["anthropic", "openai", "local"],
                   help="a model writes the prompts, examples and values the code does not give (local: an "
                        "OpenAI-compatible server, --base-url; default: none, they are left TODO)")
    p.add_argument("--model", help=f"the teacher's model ({DEFAULTS_HELP}; local: the served name)")
    p.add_argument("--base-url", help="OpenAI-compatible server for --teacher local/openai (default "
                                      "OPENAI_BASE_URL, else http://localhost:8000/v1 for local)")
    p.add_argument("--allow-lossy", action="store_true",
                   help="write the workflow even where it lacks a router's branch, a way to END or a walk of the "
                        "graph (default: refuse, naming what would be lost)")
    p.set_defaults(run=_import_langgraph)

    p = commands.add_parser("tutorial", help="run the notebooks headless, in order (what `make demo` does)")
    p.add_argument("--out", default="outputs", help="where executed notebooks, figures and results go")
    p.add_argument("--only", nargs="+", action="extend", metavar="PREFIX",
                   help="run only these notebooks, e.g. 01 02")
    p.set_defaults(run=_tutorial)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    shown = warnings.showwarning

    def one_line(message, category, filename, lineno, file=None, line=None):
        """A model retirement warning as one line ("warning: ..."); any other warning as before."""
        if issubclass(category, ModelRetirementWarning):
            print(f"warning: {message}", file=sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = one_line
    try:
        return args.run(args)
    except (UsageError, WorkflowError, BackendError, BaseModelError, UnsatisfiablePath) as exc:
        print(exc, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = shown
