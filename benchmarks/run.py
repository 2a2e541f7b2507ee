"""Benchmarks side by side (``nox -s bench`` runs this file). See benchmarks/README.md.

    python benchmarks/run.py                 # full run: the table at 20 ms, listing, RSS
    python benchmarks/run.py --quick         # ~1-2 minutes
    python benchmarks/run.py --docs 10000 --skip list,rss,startup,capacity
    python benchmarks/run.py --write-results # also refresh the generated block of RESULTS.md

Every client runs in its own process against the same local S3 endpoint (its own process);
absolute numbers are noise on shared machines, the ratios in one run are the result. The
jobs live in ``_sections`` (the parts of a run), ``_runner`` (processes, rusage), ``_peers``
(what is installed), ``_clients`` (the table's clients), ``_report`` (tables, targets,
RESULTS.md) and ``_chart`` (the PNG).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _clients  # noqa: E402
import _peers  # noqa: E402
import _report  # noqa: E402
import _runner  # noqa: E402
from _sections import SECTIONS, Run, header, section_targets, write_chart  # noqa: E402

RESULTS_DIR = HERE / ".results"
RESULTS_MD = HERE / "RESULTS.md"
CHART = HERE / "results.png"
PARTS = ("capacity", "fetch", "list", "rss", "startup", "chart")


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


def start(run: Run) -> None:
    """Versions, the package the workloads import, the bucket, the endpoints."""
    if "ref" in run.clients and "fetch" not in run.skip:
        _peers.ensure_reference(run.log)
    cli_planes = any(c.startswith("ours-cli@") for c in run.clients)
    run.ours = _peers.probe_ours(_clients.cli_command(), cli_planes=cli_planes)
    _peers.compile_ours(run.ours, run.log)
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
