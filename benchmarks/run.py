"""Benchmarks side by side (``nox -s bench`` runs this file). See benchmarks/README.md.

    python benchmarks/run.py                 # full run: the table at 20 ms, listing, RSS
    python benchmarks/run.py --quick         # ~1-2 minutes
    python benchmarks/run.py --docs 10000 --skip list,rss,startup,capacity
    python benchmarks/run.py --write-results # also refresh the generated block of RESULTS.md

Every client runs in its own process against the same local S3 endpoint (its own process);
absolute numbers are noise on shared machines, the ratios in one run are the result. The
jobs live in ``_runner`` (processes, rusage), ``_peers`` (what is installed), ``_clients``
(the table's clients), ``_report`` (tables, targets, RESULTS.md) and ``_chart`` (the PNG).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _clients  # noqa: E402
import _peers  # noqa: E402
import _report  # noqa: E402
import _runner  # noqa: E402
from bucket import BUCKET  # noqa: E402

RESULTS_DIR = HERE / ".results"
RESULTS_MD = HERE / "RESULTS.md"
CHART = HERE / "results.png"
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
PARTS = ("capacity", "fetch", "list", "rss", "startup", "chart")
#: Clients run at the last latency only (time budget).
LAST_LATENCY_ONLY = ("ours-export-parquet", "ours-export-pq-jsonl")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="kl3m-data-client benchmarks (benchmarks/README.md)")
    ap.add_argument("--quick", action="store_true", help="small corpus, ~1-2 minutes")
    ap.add_argument("--docs", type=int, help="documents in the bench dataset (default 2000)")
    ap.add_argument("--latencies", default="20", help="ms added per request, e.g. 0,20")
    ap.add_argument("--concurrency", type=int, default=64, help="requests in flight")
    ap.add_argument("--repeat", type=int, help="runs per client, best kept (default 2; quick 1)")
    ap.add_argument("--only", help="comma-separated clients of the table (README: clients)")
    ap.add_argument("--skip", default="", help=f"parts to skip: {','.join(PARTS)}")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--write-results",
        nargs="?",
        const=RESULTS_MD,
        type=Path,
        help="replace the generated block of RESULTS.md (or of the file given)",
    )
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    ap.add_argument("--chart", type=Path, default=CHART, help=f"the PNG (default {CHART.name})")
    ap.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="latest.{md,json}")
    ap.add_argument("--cache-dir", type=Path, help="bucket cache (default benchmarks/.cache)")
    a = ap.parse_args(argv)
    skip = set(filter(None, a.skip.split(",")))
    if skip - set(PARTS):
        ap.error(f"--skip: unknown part(s) {sorted(skip - set(PARTS))}; parts: {PARTS}")
    if a.only:
        bad = [c for c in a.only.split(",") if not _clients.known(c)]
        if bad:
            names = [*_clients.DEFAULT, *_clients.OPTIONAL]
            ap.error(f"--only: unknown client(s) {bad}; known: {', '.join(names)}")
    return a


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


def make_run(a: argparse.Namespace) -> Run:
    latencies = [float(x) for x in a.latencies.split(",") if x.strip()] or [20.0]
    return Run(
        a=a,
        n_docs=a.docs or (400 if a.quick else 2000),
        repeat=a.repeat or (1 if a.quick else 2),
        latencies=latencies,
        skip=set(filter(None, a.skip.split(","))),
        clients=a.only.split(",") if a.only else list(_clients.DEFAULT),
    )


def header(run: Run, facts: dict[str, Any]) -> None:
    m, v, o = run.results["machine"], run.results["versions"], run.ours
    run.say(f"# kl3m-data-client benchmarks ({'quick' if run.quick else 'full'} run)")
    run.say()
    run.say(
        f"machine: {m['nproc']} cores, {m['cpu']}, load {m['loadavg_at_start']}; "
        + ", ".join(f"{k} {val}" for k, val in v.items())
    )
    run.say(
        f"ours: kl3m-data-client {o.version} from {o.file}" + (f" ({o.error})" if o.error else "")
    )
    if v.get("orjson", "-") != "-":
        run.say("note: orjson is installed: exports use its fast path (a default install has none)")
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
    return (60 if run.quick else 150) if lat else (100 if run.quick else 300)


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
        for line in _report.table(best, run.clients):
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


def start(run: Run) -> None:
    """Versions, the package the workloads import, the bucket, the endpoints."""
    if "ref" in run.clients and "fetch" not in run.skip:
        _peers.ensure_reference(run.log)
    cli_planes = any(c.startswith("ours-cli@") for c in run.clients)
    run.ours = _peers.probe_ours(_clients.cli_command(), cli_planes=cli_planes)
    run.results.update(
        machine=_peers.machine(),
        versions=_peers.versions(),
        ours={"file": run.ours.file, "version": run.ours.version, "error": run.ours.error},
        settings={
            "docs": run.n_docs,
            "concurrency": run.a.concurrency,
            "repeat": run.repeat,
            "quick": run.quick,
            "latencies_ms": run.latencies,
            "clients": run.clients,
        },
        log=run.log,
    )
    virtual = [] if {"list", "rss"} <= run.skip else [10_000, 100_000]
    print(f"building the bench bucket ({run.n_docs} docs; cached) ...", flush=True)
    spec, facts = _runner.build_bucket(run.n_docs, run.a.seed, virtual, run.a.cache_dir)
    run.results["bucket"] = facts
    # capacity, listing and RSS run at 0 ms (the listing at every latency too)
    zero = {0.0} if {"capacity", "list", "rss"} - run.skip else set()
    for lat in sorted({*run.latencies, *zero}):
        run.endpoints[lat] = _runner.Endpoint(spec, lat, max_seconds=1200)
    header(run, facts)


def finish(run: Run, started: float) -> int:
    """Notes, latest.{md,json}, --json, --write-results; 1 if a child outlived the run."""
    total = time.perf_counter() - started
    run.say(f"total benchmark time: {total:.0f} s")
    for line in run.log:
        run.say(f"note: {line}")
    run.results["total_seconds"] = total
    out = run.a.results_dir
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(run.results, indent=1, default=str))
    (out / "latest.md").write_text("\n".join(run.lines) + "\n")
    if run.a.json:
        run.a.json.write_text(json.dumps(run.results, indent=1, default=str))
    if run.a.write_results:
        _report.write_results(run.lines, run.a.write_results)
    leftover = [p.pid for p in _runner.CHILDREN if p.poll() is None]
    if leftover:
        print(f"warning: processes still running: {leftover}", file=sys.stderr)
        return 1
    return 0


SECTIONS = (
    ("capacity", section_capacity),
    ("fetch", section_fetch),
    ("list", section_list),
    ("rss", section_rss),
    ("startup", section_startup),
)


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    run = make_run(parse_args(argv))
    try:
        start(run)
        for part, section in SECTIONS:
            if part not in run.skip:
                section(run)
        if "fetch" in run.results:
            section_targets(run)
            if "chart" not in run.skip:
                write_chart(run)
    finally:
        _runner.stop_children()
        for ep in run.endpoints.values():
            ep.stop()
    return finish(run, started)


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        _runner.stop_children()
