"""Draw docs/results.png: the failure rates of the recorded full settings, judged now.

    .venv/bin/python docs/results_figure.py [--out docs/results.png]

Reads the transcripts recorded in data/results/<domain>/ (every domain that has them), judges them with the
offline judge (subterra.analysis.judge_recorded) and draws, per domain, each condition's failure rate (Task
Success <= 3) with its number of conversations, and the paper's published failure rates beside them
(data/paper_results.yaml). Prints the failure rates it draws. No model runs; 43 s of CPU time on one core.
"""

from __future__ import annotations

import argparse
from pathlib import Path

LABELS = {"subterranean": "compiled SmolLM2-135M", "orchestrated": "its base, orchestrated",
          "oracle": "oracle (calibration)"}
COLOURS = {"subterranean": "tab:blue"}
PAPER_LABELS = {"subterranean": "paper: compiled", "orchestrated": "paper: same model, orchestrated",
                "langgraph": "paper: LangGraph"}


def failure_rates(domains=None) -> dict[str, list[tuple[str, float, int]]]:
    """Per domain with a record: (condition, failure rate, conversations), in the tables' order."""
    from subterra.analysis import FULL_SETTING_DOMAINS, full_setting_table

    domains = FULL_SETTING_DOMAINS if domains is None else domains
    table = full_setting_table(domains, n_resamples=200)       # only its failure rates are drawn
    return {domain: [(c, float(row["failure_rate"]), int(row["n"])) for c, row in table.loc[domain].iterrows()]
            for domain in table.index.get_level_values("domain").unique()}


def draw(rates: dict[str, list[tuple[str, float, int]]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from subterra import load_domain
    from subterra.analysis import paper_results

    published = paper_results()
    paper = {domain: published.get(load_domain(domain).family, {}) for domain in rates}   # insurance_tools: insurance's
    heights = [len(rows) + len(paper[domain].get("failure_rate", {})) for domain, rows in rates.items()]
    fig, axes = plt.subplots(len(rates), 1, figsize=(7.5, 0.9 + 0.32 * sum(heights)), sharex=True, squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for ax, (domain, rows) in zip(axes[:, 0], rates.items()):
        ours = [(LABELS.get(c, c), rate, f"{round(rate * n)} of {n}", COLOURS.get(c, "tab:gray"))
                for c, rate, n in rows]
        model = {"langgraph": "frontier model"}            # the paper's LangGraph runs the frontier model
        theirs = [(f"{PAPER_LABELS[c]} ({model.get(c, paper[domain]['model'])})", rate, f"{rate * 100:g}%", "white")
                  for c, rate in paper[domain].get("failure_rate", {}).items() if c in PAPER_LABELS]
        bars = (ours + theirs)[::-1]                        # barh draws bottom up
        ax.barh([b[0] for b in bars], [b[1] * 100 for b in bars], color=[b[3] for b in bars], edgecolor="black",
                linewidth=0.6)
        for y, (_, rate, text, _) in enumerate(bars):
            ax.text(rate * 100 + 1.5, y, text, va="center", fontsize=8)
        ax.set_title({"zoom": "Zoom", "insurance_tools": "insurance, with the policy look-up"}.get(domain, domain),
                     fontsize=9, loc="left")
        ax.set_xlim(0, 115)
        if ax is axes[-1, 0]:
            ax.set_xlabel("failure rate, % of conversations (Task Success ≤ 3)", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.spines[["top", "right"]].set_visible(False)
    fig.suptitle("Failures in the full settings (held-out scenarios, offline judge)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results.png")
    args = parser.parse_args(argv)
    rates = failure_rates()
    for domain, rows in rates.items():
        print(domain, ", ".join(f"{c} {rate:.1%} of {n}" for c, rate, n in rows))
    draw(rates, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
