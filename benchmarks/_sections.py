"""The sections of a run (``run.py``): the header, the endpoint's capacity, the side-by-side
table at each latency, the listing, export-RSS and startup tables, the targets and the chart.
Each writes its lines through ``Run.say`` and its figures into ``Run.results``."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

import _clients
import _peers
import _report
import _runner
from bucket import BUCKET

#: The listing table (``--skip list`` leaves it out): workload, label.
LIST_METHODS = (
    ("list-paginator", "aiobotocore paginator (ListObjectsV2, 1000/page)"),
    ("list-ours", "ours: iter_documents (same pages + ObjectInfo)"),
    ("list-parallel", "ours: key ranges listed concurrently (prototype)"),
    ("list-index", "ours: get_dataset_index (one gzip JSON GET)"),
    ("list-obstore", "obstore list"),
)
#: Listing methods run at 0 ms only (time budget): CPU bound, latency adds its round trips.
LIST_0MS_ONLY = ("list-paginator",)
#: The export-RSS table (``--skip rss`` leaves it out): workload -> label; a quick run
#: measures only the first.
RSS_LABELS = {
    "ours-export-1": "documents -> JSONL",
    "ours-export-parquet": "documents -> Parquet",
    "ours-export-pq-jsonl": "parquet stage -> JSONL (tokens)",
}
#: Clients run at the last latency only (time budget).
LAST_LATENCY_ONLY = ("ours-export-parquet", "ours-export-pq-jsonl")


@dataclass
class Run:
    """The settings and the state of one run."""

    a: argparse.Namespace
    n_docs: int
    repeat: int
    latencies: list[float]
    skip: set[str]
    clients: list[str]
    ours: _peers.Ours = field(default_factory=_peers.Ours)
    results: dict[str, Any] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    endpoints: dict[float, _runner.Endpoint] = field(default_factory=dict)

    @property
    def quick(self) -> bool:
        return bool(self.a.quick)

    def say(self, line: str = "") -> None:
        """Print a line of the report and keep it (latest.md, RESULTS.md)."""
        print(line, flush=True)
        self.lines.append(line)

    @property
    def opts(self) -> _clients.RunOptions:
        # a run may take minutes on a loaded machine: the timeout grows with the corpus
        return _clients.RunOptions(concurrency=self.a.concurrency, timeout=180 + 0.03 * self.n_docs)

    @property
    def target_latency(self) -> float:
        """The latency of the targets and the chart: 20 ms if measured, else the last."""
        return 20.0 if 20.0 in self.latencies else self.latencies[-1]


def header(run: Run, facts: dict[str, Any]) -> None:
    m, v, o = run.results["machine"], run.results["versions"], run.ours
    run.say("# kl3m-data-client benchmarks" + (" (quick run)" if run.quick else ""))
    run.say()
    run.say(
        f"run: {run.n_docs:,} docs, latencies {', '.join(f'{x:g}' for x in run.latencies)} ms, "
        f"best of {run.repeat}, clients: {run.a.only or 'default'}"
        + (f", skipped parts: {','.join(sorted(run.skip))}" if run.skip else "")
    )
    run.say(
        f"machine: {m['nproc']} cores, {m['cpu']}, load {m['loadavg_at_start']}; "
        + ", ".join(f"{k} {val}" for k, val in v.items())
    )
    run.say(
        f"ours: kl3m-data-client {o.version} from {o.file}" + (f" ({o.error})" if o.error else "")
    )
    missing = [n for n in ("orjson", "pybase64", "isal") if v.get(n, "-") == "-"]
    if missing:
        run.say(f"note: {', '.join(missing)} missing: decoding takes the slower stdlib paths")
    run.say(
        f"bucket: {facts['documents']} documents-stage objects, mean "
        f"{facts['mean_object_bytes'] / 1000:.1f} KB ({facts['min_object_bytes']}.."
        f"{facts['max_object_bytes']} B), {facts['awkward_keys']} awkward keys "
        f"({facts['keys_with_bracket']} with '['); {run.a.concurrency} in flight"
    )
    run.say()


def section_capacity(run: Run) -> None:
    cap = _runner.capacity(run.endpoints[0.0], BUCKET, 2.0 if run.quick else 4.0)
    run.results["capacity"] = cap
    if "error" in cap:
        run.say(f"endpoint capacity: {cap['error']}")
    else:
        run.say(
            f"endpoint capacity: the aiohttp load generator (own process) drove "
            f"{cap['gets_per_s']:,.0f} GETs/s of {cap['mean_bytes'] / 1000:.1f} KB; "
            f"the endpoint spent {cap['server_cpu_us_per_get']:.0f} us CPU per GET "
            f"(~{cap['server_capacity_gets_per_s_per_core']:,.0f} GETs/s per core)"
        )
    run.say()


def _ref_limit(run: Run, lat: float) -> int:
    """The reference is sequential (20-40x slower): one capped run, docs/s extrapolates."""
    return min(run.n_docs, (60 if run.quick else 150) if lat else (100 if run.quick else 300))


def fetch_runs(run: Run, lat: float) -> dict[str, list[dict[str, Any]]]:
    """Every client at one latency, ``repeat`` times (order reversed on odd rounds)."""
    ep = run.endpoints[lat]
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in run.clients}
    for rep in range(run.repeat):
        order = run.clients if rep % 2 == 0 else list(reversed(run.clients))
        for c in order:
            if c in LAST_LATENCY_ONLY and lat != run.latencies[-1]:
                continue
            if rep and (c in _clients.ONCE or c == "ref" or any("not_run" in r for r in runs[c])):
                continue
            limit = _ref_limit(run, lat) if c == "ref" else None
            r = _clients.run_client(c, ep, run.opts, run.ours, limit=limit)
            if c == "ref" and _report.ok(r):
                r["note_extra"] = f"capped at {limit} docs; docs/s extrapolates"
            runs[c].append(r)
            status = r.get("not_run") or r.get("error")
            print(
                f"  [{lat:g} ms] {c}: "
                + (f"{status}" if status else f"{r['docs']} docs in {r['seconds']:.2f}s"),
                flush=True,
            )
    return runs


def section_fetch(run: Run) -> None:
    run.results["fetch"] = {}
    for lat in run.latencies:
        run.say(
            f"## list + GET + decode, {run.n_docs:,} docs, {lat:g} ms latency, "
            f"{run.a.concurrency} in flight"
        )
        run.say()
        runs = fetch_runs(run, lat)
        best = {c: _report.best_of(rs) for c, rs in runs.items() if rs}
        for line in _report.table(best, run.clients, lat, run.a.concurrency):
            run.say(line)
        run.say()
        run.results["fetch"][str(lat)] = best


def section_list(run: Run) -> None:
    list_n = 10_000 if run.quick else 100_000
    run.say(
        f"## list {list_n:,} keys ({list_n // 1000} pages of 1,000: at 20 ms a serial "
        f"listing waits {list_n // 1000 * 0.02:.1f} s on round trips)"
    )
    run.say()
    run.say("| method | latency ms | keys | seconds | keys/s | CPU s |")
    run.say("|---|---:|---:|---:|---:|---:|")
    run.results["list"] = {}
    for lat, ep in sorted(run.endpoints.items()):
        run.results["list"][str(lat)] = {}
        for c, label in LIST_METHODS:
            if _peers.missing(c) or (lat and c in LIST_0MS_ONLY):
                continue
            args = _clients.workload_args(c, ep, dataset=f"v{list_n}")
            r = _runner.run_child(args, _runner.child_env(), timeout=180)
            run.results["list"][str(lat)][c] = r
            if "error" in r:
                run.say(f"| {label} | {lat:g} | error: {r['error'][:100]} | | | |")
                continue
            if "ranges" in r:
                label += (
                    f" ({r['ranges']} ranges; split {r['split_seconds']:.2f} s, "
                    f"{r['probes']} probes; {r['overshoot']:,} keys past a range's end)"
                )
            run.say(
                f"| {label} | {lat:g} | {r['docs']:,} | {r['seconds']:.2f} | "
                f"{r['docs'] / r['seconds']:,.0f} | {r['cpu']:.2f} |"
            )
    run.say()


def rss_sizes(run: Run) -> list[int]:
    return [run.n_docs, 10_000] if run.quick else [10_000, 100_000]


def section_rss(run: Run) -> None:
    run.say("## export peak RSS vs corpus size (1 worker, 0 ms)")
    run.say()
    run.say("| export | documents | exported | docs/s | peak RSS MB |")
    run.say("|---|---:|---:|---:|---:|")
    run.results["rss"] = {}
    variants = list(RSS_LABELS)[:1] if run.quick else list(RSS_LABELS)
    for c in variants:
        label = RSS_LABELS[c]
        runs = run.results["rss"][c] = {}
        for n in rss_sizes(run):
            ds = "bench" if n == run.n_docs else f"v{n}"
            args = _clients.workload_args(c, run.endpoints[0.0], dataset=ds)
            r = runs[n] = _runner.run_child(args, _runner.child_env(), timeout=400)
            if "error" in r:
                run.say(f"| {label} | {n:,} | error: {r['error'][:100]} | | |")
            else:
                run.say(
                    f"| {label} | {n:,} | {r['docs']:,} | "
                    f"{r['docs'] / r['seconds']:,.0f} | {r['rss_kb'] / 1024:.0f} |"
                )
    run.say()
    sizes = rss_sizes(run)
    for c, growth, mb in _report.rss_growth(run.results["rss"]):
        run.say(
            f"RSS growth {sizes[0]:,} -> {sizes[1]:,} documents, {RSS_LABELS[c]}: "
            f"{100 * growth:+.1f}%, peak {mb:.0f} MB (target < 20%, and < 300 MB)"
        )
    run.say()


def section_startup(run: Run) -> None:
    st = _runner.startup_times(3 if run.quick else 7, _clients.cli_command())
    run.results["startup"] = st
    run.say("## startup (best of N, wall)")
    run.say()
    run.say("| command | seconds |")
    run.say("|---|---:|")
    for k, v in st.items():
        run.say(f"| `{k}` | {v:.3f} |")
    run.say()


def section_targets(run: Run) -> None:
    lat = run.target_latency
    best = run.results["fetch"][str(lat)]
    checks = _report.targets(best, run.n_docs)
    run.results["targets"] = checks
    rss_rows = _report.rss_growth_rows(run.results.get("rss") or {}, RSS_LABELS)
    run.say(f"## targets of issue 16 ({lat:g} ms latency, {run.n_docs:,} docs, ratios of this run)")
    run.say()
    for line in _report.targets_table(checks, rss_rows):
        run.say(line)
    run.say()


def write_chart(run: Run) -> None:
    """The PNG of the targets' table (matplotlib is imported only here)."""
    lat = run.target_latency
    best = run.results["fetch"][str(lat)]
    rows = [
        (c, _clients.label(c), _report.dps(best[c]) or 0.0, _report.cpu_ms(best[c]) or 0.0)
        for c in run.clients
        if c in best and _report.ok(best[c])
    ]
    if not rows:
        run.log.append("chart not written: no client measured")
        return
    import _chart

    m = run.results["machine"]
    title = (
        f"kl3m-data-client benchmarks: list + GET + decode of {run.n_docs:,} documents, "
        f"{lat:g} ms latency, {run.a.concurrency} in flight, {m['nproc']} cores"
    )
    path = _chart.write_chart(rows, run.a.chart, title)
    run.results["chart"] = str(path)
    run.say(f"chart: {path}")
    run.say()


SECTIONS = (
    ("capacity", section_capacity),
    ("fetch", section_fetch),
    ("list", section_list),
    ("rss", section_rss),
    ("startup", section_startup),
)
