"""The run's text: the side-by-side table, the targets of issue 16, RESULTS.md's block.

A client's row: documents, docs/s (documents / the measured window: listing + GETs + decode,
or the whole process for ``kl3m-client export``), CPU ms per document (rusage of its process,
threads and worker processes included), peak RSS, and docs/s as a ratio of obstore's raw
client and of our async stream in the same table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _clients import label

TABLE_HEAD = (
    "| client | docs | docs/s | CPU ms/doc | peak RSS MB | docs/s vs obstore raw "
    "| docs/s vs ours-async | notes |\n"
    "|---|---:|---:|---:|---:|---:|---:|---|"
)
BEGIN, END = "<!-- BEGIN GENERATED (benchmarks/run.py) -->", "<!-- END GENERATED -->"


def ok(r: dict[str, Any] | None) -> bool:
    """A run with a number: documents over a non-zero window."""
    if not r:
        return False
    return "error" not in r and "not_run" not in r and bool(r.get("seconds"))


def dps(r: dict[str, Any] | None) -> float | None:
    """Documents per second of a run (None: not measured)."""
    return r["docs"] / r["seconds"] if r is not None and ok(r) else None


def cpu_ms(r: dict[str, Any] | None) -> float | None:
    """CPU milliseconds per document of a run (None: not measured)."""
    return 1000 * r["cpu"] / r["docs"] if r is not None and ok(r) and r["docs"] else None


def best_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The fastest run, with the lowest CPU per document of all runs (each is a minimum of
    noise); a skip or the last error when nothing was measured."""
    good = [r for r in runs if ok(r) and r["docs"]]
    if not good:
        return runs[-1] if runs else {"error": "not run"}
    b = dict(max(good, key=lambda r: r["docs"] / r["seconds"]))
    b["cpu"] = min(r["cpu"] / r["docs"] for r in good) * b["docs"]
    b["runs_docs_per_s"] = [round(r["docs"] / r["seconds"]) for r in good]
    return b


def _ratio(x: float | None, y: float | None) -> str:
    return f"{x / y:.2f}x" if x is not None and y else "-"


def fmt_row(name: str, r: dict[str, Any], obstore: float | None, ours: float | None) -> str:
    """One table row; a skipped or failed client keeps its row, with the reason."""
    if "not_run" in r:
        return f"| {label(name)} | skipped: {r['not_run']} | | | | | | |"
    if "error" in r:
        return f"| {label(name)} | error: {r['error'][:160]} | | | | | | |"
    rate, cpu = dps(r) or 0.0, cpu_ms(r) or 0.0
    rss = r.get("rss_kb", 0) / 1024
    crss = r.get("rss_children_kb", 0) / 1024
    rss_s = f"{rss:.0f}" + (f" (+{crss:.0f}/worker)" if name.endswith("-2") and crss else "")
    notes = [n for n in (r.get("note_extra"), r.get("note")) if n]
    return (
        f"| {label(name)} | {r['docs']:,} | {rate:,.0f} | {cpu:.2f} | {rss_s} | "
        f"{_ratio(rate, obstore)} | {_ratio(rate, ours)} | {'; '.join(notes)} |"
    )


def table(
    best: dict[str, dict[str, Any]], order: list[str], latency_ms: float, in_flight: int
) -> list[str]:
    """The side-by-side table of one latency (rows in ``order``), closed by the latency
    bound: ``in_flight`` requests each waiting ``latency_ms`` (no client can pass it)."""
    obstore, ours = dps(best.get("obstore")), dps(best.get("ours-async"))
    rows = [TABLE_HEAD, *(fmt_row(c, best[c], obstore, ours) for c in order if c in best)]
    if latency_ms:
        bound = in_flight * 1000 / latency_ms
        rows.append(
            f"| latency bound ({in_flight} in flight x {latency_ms:g} ms) | | {bound:,.0f} | - "
            f"| - | {_ratio(bound, obstore)} | {_ratio(bound, ours)} | |"
        )
    return rows


@dataclass
class Target:
    """One check of issue 16: ``num``'s figure over ``den``'s, against ``goal``."""

    label: str
    num: str
    den: str
    goal: float
    #: "dps": num's docs/s >= goal x den's; "cpu": num's CPU/doc <= goal x den's
    kind: str = "dps"


def _targets_for(n_docs: int, planes: list[str]) -> list[Target]:
    out = [
        Target(f"export, default options (whole CLI), {n_docs:,} docs", "ours-cli", "obstore", 1.0),
        Target("stream_documents", "ours-async", "obstore", 0.9),
        Target("blocking wrapper vs async stream", "ours-sync", "ours-async", 0.9),
        Target("CPU/doc: stream_documents", "ours-async", "obstore", 1.0, "cpu"),
        Target("CPU/doc: export, default options (whole CLI)", "ours-cli", "obstore", 1.0, "cpu"),
    ]
    for p in planes:
        out += [
            Target(f"export --data-plane {p}, {n_docs:,} docs", f"ours-cli@{p}", "obstore", 1.0),
            Target(f"stream_documents, data_plane={p!r}", f"ours-async@{p}", "obstore", 0.9),
        ]
    return out


def targets(best: dict[str, dict[str, Any]], n_docs: int) -> list[dict[str, Any]]:
    """The checks of issue 16 on one table: each with its measured ratio and verdict."""
    planes = sorted({c.split("@", 1)[1] for c in best if "@" in c and ok(best[c])})
    out = []
    for t in _targets_for(n_docs, planes):
        a, b = best.get(t.num), best.get(t.den)
        if t.kind == "cpu":
            x, y = cpu_ms(a), cpu_ms(b)
            ratio = x / y if x is not None and y else None
            met = ratio is not None and ratio <= t.goal
            goal = f"CPU <= {t.goal:g}x {t.den}"
        else:
            x, y = dps(a), dps(b)
            ratio = x / y if x is not None and y else None
            met = ratio is not None and ratio >= t.goal
            goal = f">= {t.goal:g}x {t.den}"
        out.append({"target": t.label, "goal": goal, "ratio": ratio, "met": met})
    return out


def targets_table(checks: list[dict[str, Any]], rss_rows: list[str]) -> list[str]:
    """The checks as a Markdown table (``n/a``: a side of the ratio was not measured)."""
    rows = ["| target | goal | measured | met |", "|---|---|---:|---|"]
    for c in checks:
        if c["ratio"] is None:
            rows.append(f"| {c['target']} | {c['goal']} | n/a | - |")
        else:
            met = "yes" if c["met"] else "NO"
            rows.append(f"| {c['target']} | {c['goal']} | {c['ratio']:.2f}x | {met} |")
    return rows + rss_rows


def rss_growth(rss: dict[str, dict[int, dict[str, Any]]]) -> list[tuple[str, float, float]]:
    """Per export variant measured at both sizes: (variant, RSS growth from the smaller to
    the larger corpus as a fraction, the larger peak in MB)."""
    out = []
    for c, runs in rss.items():
        vals = [r for r in runs.values() if "error" not in r]
        if len(vals) == 2:
            growth = vals[1]["rss_kb"] / vals[0]["rss_kb"] - 1
            out.append((c, growth, max(v["rss_kb"] for v in vals) / 1024))
    return out


def rss_growth_rows(rss: dict[str, dict[int, dict[str, Any]]], labels: dict[str, str]) -> list[str]:
    """Target rows of the export RSS table: flat (< 20%) and under 300 MB."""
    return [
        f"| export RSS growth, {labels.get(c, c)} | < 20%, < 300 MB | "
        f"{100 * g:+.1f}%, {mb:.0f} MB | {'yes' if g < 0.2 and mb < 300 else 'NO'} |"
        for c, g, mb in rss_growth(rss)
    ]


def write_results(lines: list[str], path: Path) -> None:
    """Replace the generated block of RESULTS.md (text around it is kept; appended if the
    file has no block)."""
    block = BEGIN + "\n" + "\n".join(lines) + "\n" + END
    text = path.read_text() if path.exists() else f"# Benchmark results\n\n{BEGIN}\n{END}\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        text = head + block + tail
    else:
        text += "\n" + block + "\n"
    path.write_text(text)
