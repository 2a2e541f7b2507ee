"""The chart of a run: docs/s and CPU ms per document per client, as a PNG.

matplotlib (the ``bench`` extra) with the Agg backend; ``run.py`` imports this module only
when it writes the chart.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

#: Bar colours: this package's rows, the peers, obstore raw (the target's reference).
OURS, PEER, OBSTORE = "#1f77b4", "#9e9e9e", "#ff7f0e"


def write_chart(rows: list[tuple[str, str, float, float]], path: Path, title: str) -> Path:
    """Two bar panels (docs/s; CPU ms per document) of ``rows``: ``(name, label, docs/s,
    CPU ms/doc)`` in table order. obstore raw's values are drawn as dashed lines."""
    if not rows:
        raise ValueError("no measured client to chart")
    names = [r[0] for r in rows]
    labels = [_wrap(r[1]) for r in rows]
    colours = [OBSTORE if n == "obstore" else OURS if n.startswith("ours") else PEER for n in names]
    height = 1.2 + 0.45 * len(rows)
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(13, height), sharey=True, gridspec_kw={"width_ratios": [1, 1]}
    )
    y = list(range(len(rows)))
    for ax, values, xlabel, fmt in (
        (left, [r[2] for r in rows], "documents per second (higher is better)", "{:,.0f}"),
        (right, [r[3] for r in rows], "CPU ms per document (lower is better)", "{:.2f}"),
    ):
        bars = ax.barh(y, values, color=colours)
        ax.bar_label(bars, labels=[fmt.format(v) for v in values], padding=3, fontsize=8)
        ax.set_xlabel(xlabel)
        ax.margins(x=0.18)
        ax.grid(axis="x", alpha=0.3)
        if "obstore" in names:
            ax.axvline(values[names.index("obstore")], color=OBSTORE, linestyle="--", lw=1)
    left.set_yticks(y, labels, fontsize=8)
    left.invert_yaxis()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _wrap(text: str, width: int = 48) -> str:
    """Break a long label on spaces into lines of at most ``width`` characters."""
    lines: list[str] = []
    for word in text.split(" "):
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return "\n".join(lines)
