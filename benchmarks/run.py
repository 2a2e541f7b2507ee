"""Benchmarks side by side (``nox -s bench`` runs this file). See benchmarks/README.md.

    python benchmarks/run.py            # full run, < 10 minutes on 2 cores
    python benchmarks/run.py --quick    # ~1 minute
    python benchmarks/run.py --write-results   # also refresh the tables in RESULTS.md

Every client runs in its own process against the same local S3 endpoint (its own process);
absolute numbers are noise on shared machines, the ratios in one run are the result.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
REF_DIR = HERE / ".ref"
RESULTS_DIR = HERE / ".results"
sys.path.insert(0, str(HERE))

import bucket as bench_bucket  # noqa: E402

PY = sys.executable
FETCH_CLIENTS = [
    "ref",
    "boto3",
    "s3fs",
    "aiobotocore",
    "obstore",
    "ours-async",
    "ours-sync",
    "ours-export-1",
    "ours-export-2",
]
LABELS = {
    "ref": "reference kl3m-data-client 0.2.0 (HEAD+GET, sequential)",
    "boto3": "boto3 + 64 threads",
    "s3fs": "s3fs (batch cat)",
    "aiobotocore": "raw aiobotocore, 64-way semaphore",
    "obstore": "obstore (Rust object_store)",
    "ours-async": "ours: AsyncKL3MClient.stream_documents",
    "ours-sync": "ours: KL3MClient.stream_documents (sync)",
    "ours-export-1": "ours: export documents->JSONL, 1 worker",
    "ours-export-2": "ours: export documents->JSONL, 2 worker processes",
    "ours-export-parquet": "ours: export documents->Parquet, 1 worker",
    "ours-export-pq-jsonl": "ours: export parquet stage->JSONL (tokens), 1 worker",
    # prototypes (benchmarks only; run them with --only): proposed changes outside export/
    "obstore-export": "prototype: export 1 worker, GETs via obstore (listing via ours)",
}
#: The listing table (``--skip list`` leaves it out): workload, label.
LIST_METHODS = (
    ("list-paginator", "aiobotocore paginator (ListObjectsV2, 1000/page)"),
    ("list-ours", "ours: iter_documents (same pages + ObjectInfo)"),
    ("list-parallel", "ours: key ranges listed concurrently (prototype)"),
    ("list-index", "ours: get_dataset_index (one gzip JSON GET)"),
    ("list-obstore", "obstore list"),
)
#: Listing methods run at 0 ms only (time budget): CPU bound, latency adds its 100 round trips.
LIST_0MS_ONLY = ("list-paginator",)
#: The export-RSS table (``--skip rss`` leaves it out): workload -> label; a quick run
#: measures only the first.
RSS_LABELS = {
    "ours-export-1": "documents -> JSONL",
    "ours-export-parquet": "documents -> Parquet",
    "ours-export-pq-jsonl": "parquet stage -> JSONL (tokens)",
}
RSS_VARIANTS = tuple(RSS_LABELS)
#: Prototype clients: not in the default set, run with --only.
PROTOTYPES = ("obstore-export",)
#: Export variants run at the last latency only (time budget).
EXTRAS = ("ours-export-parquet", "ours-export-pq-jsonl")
#: Clients run once even with --repeat (time budget; not in a target ratio's numerator).
ONCE = ("boto3", "s3fs", "ours-export-parquet", "ours-export-pq-jsonl")
#: Child processes started by this run, stopped in ``finally`` whatever happens.
_CHILDREN: list[subprocess.Popen[bytes]] = []


# ------------------------------------------------------------------------------ deps
def ensure_deps(log: list[str]) -> None:
    """Check the peers (the pinned ``bench`` extra) and install the reference client.

    The peers are not installed here: ``nox -s bench`` (or ``pip install -e ".[dev,bench]"``)
    installs the versions pinned in pyproject.toml; a missing one is reported and skipped.
    The reference 0.2.0 goes into ``benchmarks/.ref`` (pinned, no dependencies).
    """
    missing = [m for m in ("s3fs", "obstore", "boto3") if importlib.util.find_spec(m) is None]
    if missing:
        log.append(f"not installed: {', '.join(missing)} (pip install -e '.[dev,bench]'): skipped")
    if not (REF_DIR / "kl3m_data_client" / "__init__.py").exists():
        print("installing kl3m-data-client==0.2.0 into benchmarks/.ref ...", flush=True)
        r = subprocess.run(
            [
                PY,
                "-m",
                "pip",
                "install",
                "-q",
                "--no-deps",
                "--target",
                str(REF_DIR),
                "kl3m-data-client==0.2.0",
            ],
            check=False,
        )
        if r.returncode:
            log.append("could not install kl3m-data-client==0.2.0: reference skipped")


def available(client: str) -> bool:
    need = {
        "s3fs": "s3fs",
        "obstore": "obstore",
        "obstore-export": "obstore",
        "list-obstore": "obstore",
        "boto3": "boto3",
        "ref": "boto3",
    }
    if client == "ref" and not (REF_DIR / "kl3m_data_client").exists():
        return False
    mod = need.get(client)
    return mod is None or importlib.util.find_spec(mod) is not None


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in (
        "kl3m-data-client",
        "aiobotocore",
        "botocore",
        "aiohttp",
        "boto3",
        "s3fs",
        "obstore",
        "anyio",
        "pyarrow",
    ):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "-"
    out["reference kl3m-data-client"] = "0.2.0 (benchmarks/.ref)"
    return out


def machine() -> dict[str, str]:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0, 0, 0)
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "platform": platform.platform(),
        "loadavg_at_start": " ".join(f"{x:.2f}" for x in load),
    }


# ------------------------------------------------------------------------------ processes
def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
        AWS_ACCESS_KEY_ID="AKIABENCHMARK0000000",
        AWS_SECRET_ACCESS_KEY="benchmark/secret/key/not/a/real/one/00000",
        AWS_DEFAULT_REGION="us-east-1",
        PYTHONDONTWRITEBYTECODE="1",
    )
    env.pop("PYTHONPATH", None)
    if extra:
        env.update(extra)
    return env


class Endpoint:
    """The local S3 endpoint in its own process."""

    def __init__(self, spec: Path, latency_ms: float, max_seconds: float) -> None:
        self.proc = subprocess.Popen(
            [
                PY,
                str(HERE / "s3_endpoint.py"),
                "serve",
                "--spec",
                str(spec),
                "--latency-ms",
                str(latency_ms),
                "--max-seconds",
                str(max_seconds),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=child_env(),
        )
        _CHILDREN.append(self.proc)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if not line.startswith("PORT "):
            self.stop()
            raise RuntimeError(f"endpoint did not start: {line!r}")
        self.port = int(line.split()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.latency_ms = latency_ms

    def stop(self) -> None:
        p = self.proc
        if p.poll() is None:
            with contextlib.suppress(OSError):
                assert p.stdin is not None
                p.stdin.close()
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def run_child(args: list[str], env: dict[str, str], timeout: float) -> dict[str, Any]:
    """Run a workload process; its result plus wait4 rusage (total CPU, peak RSS)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen([PY, *args], stdout=out, stderr=err, env=env)
        _CHILDREN.append(p)
        deadline = t0 + timeout
        rusage = None
        status = 0
        while True:
            pid, status, rusage = os.wait4(p.pid, os.WNOHANG)
            if pid:
                p.returncode = os.waitstatus_to_exitcode(status)
                break
            if time.perf_counter() > deadline:
                p.kill()
                _, status, rusage = os.wait4(p.pid, 0)
                p.returncode = -9
                break
            time.sleep(0.02)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    result: dict[str, Any] = {"process_wall": wall}
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            result.update(json.loads(line[7:]))
    if "docs" not in result:
        tail = (stderr or stdout).strip().splitlines()[-3:]
        result["error"] = f"exit {p.returncode}: " + " | ".join(tail)[-300:]
    if rusage is not None:
        result["process_cpu"] = rusage.ru_utime + rusage.ru_stime
        result["process_rss_kb"] = rusage.ru_maxrss
    return result


def workload(client: str, endpoint: Endpoint, **kw: Any) -> list[str]:
    args = [str(HERE / "workloads.py")]
    if client.startswith("ours-export"):
        args.append("ours-export")
        variant = client[len("ours-export-") :]
        if variant in ("1", "2"):
            args += ["--workers", variant]
        elif variant == "parquet":
            args += ["--format", "parquet"]
        elif variant == "pq-jsonl":
            args += ["--stage", "parquet"]
    else:
        args.append(client)
    args += ["--endpoint", endpoint.url]
    for k, v in kw.items():
        if v is not None:
            args += [f"--{k}", str(v)]
    return args


def env_for(client: str) -> dict[str, str]:
    if client == "ref":
        # the reference takes no endpoint argument: boto3 reads AWS_ENDPOINT_URL
        return child_env({"PYTHONPATH": str(REF_DIR)})
    return child_env()


# ------------------------------------------------------------------------------ parts
def capacity(endpoint: Endpoint, seconds: float) -> dict[str, Any]:
    # 64 of the ~19 KB bench objects (keys from one ListObjectsV2 page)
    import re
    import urllib.request
    from html import unescape
    from urllib.parse import quote

    listing = (
        f"{endpoint.url}/{bench_bucket.BUCKET}?list-type=2&prefix=documents/bench/&max-keys=64"
    )
    with urllib.request.urlopen(listing, timeout=10) as resp:
        xml = resp.read().decode()
    keys = [unescape(k) for k in re.findall(r"<Key>(.*?)</Key>", xml)]
    urls = [f"{endpoint.url}/{bench_bucket.BUCKET}/{quote(k, safe='/')}" for k in keys]
    args = [
        str(HERE / "s3_endpoint.py"),
        "loadgen",
        "--concurrency",
        "64",
        "--seconds",
        str(seconds),
    ]
    for u in urls:
        args += ["--url", u]
    r = subprocess.run([PY, *args], capture_output=True, env=child_env(), timeout=seconds + 60)
    try:
        return json.loads(r.stdout.decode().strip().splitlines()[-1])
    except (IndexError, ValueError):
        return {"error": r.stderr.decode()[-300:]}


def startup_times(repeat: int) -> dict[str, float]:
    def best(cmd: list[str]) -> float:
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            subprocess.run(cmd, capture_output=True, env=child_env(), timeout=60, check=False)
            times.append(time.perf_counter() - t0)
        return min(times)

    out = {
        "python -c pass": best([PY, "-c", "pass"]),
        "import kl3m_data_client": best([PY, "-c", "import kl3m_data_client"]),
    }
    cli = Path(PY).with_name("kl3m-client")
    if cli.exists():
        out["kl3m-client --help"] = best([str(cli), "--help"])
    else:
        out["python -m kl3m_data_client.cli --help"] = best(
            [PY, "-m", "kl3m_data_client.cli", "--help"]
        )
    return out


def fmt_row(name: str, r: dict[str, Any], ours: float | None) -> str:
    if "error" in r:
        return f"| {LABELS.get(name, name)} | error: {r['error'][:120]} | | | | | | |"
    dps = r["docs"] / r["seconds"] if r["seconds"] else 0.0
    cpu_ms = 1000 * r["cpu"] / r["docs"] if r["docs"] else 0.0
    rss = r.get("rss_kb", 0) / 1024
    crss = r.get("rss_children_kb", 0) / 1024
    rss_s = f"{rss:.0f}" + (f" (+{crss:.0f}/worker)" if name.endswith("-2") and crss else "")
    ratio = f"{dps / ours:.2f}x" if ours else "-"
    ceiling = f"{1000 / cpu_ms:,.0f}" if cpu_ms else "-"
    note = r.get("note_extra", "")
    if r.get("note"):
        note = (note + "; " if note else "") + r["note"]
    return (
        f"| {LABELS.get(name, name)} | {r['docs']} | {dps:,.0f} | {cpu_ms:.2f} | {ceiling} | "
        f"{rss_s} | {ratio} | {note} |"
    )


TABLE_HEAD = (
    "| client | docs | docs/s | CPU ms/doc | 1-core ceiling docs/s | peak RSS MB "
    "| docs/s vs ours-async | notes |\n"
    "|---|---:|---:|---:|---:|---:|---:|---|"
)


def best_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in runs if "error" not in r and r.get("seconds")]
    if not ok:
        return runs[-1] if runs else {"error": "not run"}
    b = dict(max(ok, key=lambda r: r["docs"] / r["seconds"]))
    b["cpu"] = min(r["cpu"] / r["docs"] for r in ok if r["docs"]) * b["docs"]
    b["runs_docs_per_s"] = [round(r["docs"] / r["seconds"]) for r in ok]
    return b


# ------------------------------------------------------------------------------ main
def main() -> int:
    ap = argparse.ArgumentParser(description="kl3m-data-client benchmarks")
    ap.add_argument("--quick", action="store_true", help="small corpus, ~1 minute")
    ap.add_argument("--docs", type=int, help="documents in the bench dataset (default 2000)")
    ap.add_argument("--latencies", default="0,20", help="ms added per request, e.g. 0,20")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--repeat", type=int, help="runs per client (best kept); default 2/1")
    ap.add_argument("--only", help="comma-separated clients of the fetch table")
    ap.add_argument("--skip", default="", help="parts to skip: fetch,list,rss,startup,capacity")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--write-results", action="store_true", help="refresh RESULTS.md tables")
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    a = ap.parse_args()

    started = time.perf_counter()
    quick = a.quick
    n_docs = a.docs or (400 if quick else 2000)
    repeat = a.repeat or (1 if quick else 2)
    list_n = 10_000 if quick else 100_000
    rss_sizes = [n_docs, 10_000] if quick else [10_000, 100_000]
    virtual = [10_000, 100_000]
    latencies = [float(x) for x in a.latencies.split(",") if x.strip()]
    skip = set(filter(None, a.skip.split(",")))
    clients = a.only.split(",") if a.only else list(FETCH_CLIENTS)
    if not quick and not a.only:
        clients += ["ours-export-parquet", "ours-export-pq-jsonl"]
    log: list[str] = []
    ensure_deps(log)
    results: dict[str, Any] = {
        "machine": machine(),
        "versions": versions(),
        "settings": {
            "docs": n_docs,
            "concurrency": a.concurrency,
            "repeat": repeat,
            "quick": quick,
            "latencies_ms": latencies,
        },
        "log": log,
    }
    print(f"building the bench bucket ({n_docs} docs, cached in benchmarks/.cache) ...", flush=True)
    # built in a child process: this process stays small (ru_maxrss of children starts
    # from the parent's image) and the corpus is cached in benchmarks/.cache
    r = subprocess.run(
        [PY, str(HERE / "bucket.py"), str(n_docs), str(a.seed), *map(str, virtual)],
        capture_output=True,
        env=child_env(),
        timeout=600,
        check=False,
    )
    if r.returncode:
        raise SystemExit(f"building the bucket failed: {r.stderr.decode()[-2000:]}")
    spec_file, facts_json = r.stdout.decode().strip().splitlines()[-1].split("\t", 1)
    spec, facts = Path(spec_file), json.loads(facts_json)
    results["bucket"] = facts
    endpoints: dict[float, Endpoint] = {}
    out_lines: list[str] = []

    def say(line: str = "") -> None:
        print(line, flush=True)
        out_lines.append(line)

    try:
        for lat in sorted(set(latencies) | {0.0}):
            endpoints[lat] = Endpoint(spec, lat, max_seconds=1200)
        ep0 = endpoints[0.0]
        say(f"# kl3m-data-client benchmarks ({'quick' if quick else 'full'} run)")
        say()
        m = results["machine"]
        say(
            f"machine: {m['nproc']} cores, {m['cpu']}, load {m['loadavg_at_start']}; "
            + ", ".join(f"{k} {v}" for k, v in results["versions"].items())
        )
        say(
            f"bucket: {facts['documents']} documents-stage objects, mean "
            f"{facts['mean_object_bytes'] / 1000:.1f} KB ({facts['min_object_bytes']}.."
            f"{facts['max_object_bytes']} B), {facts['awkward_keys']} awkward keys "
            f"({facts['keys_with_bracket']} with '['); {a.concurrency} in flight"
        )
        say()

        if "capacity" not in skip:
            cap = capacity(ep0, 2.0 if quick else 4.0)
            results["capacity"] = cap
            if "error" not in cap:
                say(
                    f"endpoint capacity: the aiohttp load generator (own process) drove "
                    f"{cap['gets_per_s']:,.0f} GETs/s of {cap['mean_bytes'] / 1000:.1f} KB; "
                    f"the endpoint spent {cap['server_cpu_us_per_get']:.0f} us CPU per GET "
                    f"(~{cap['server_capacity_gets_per_s_per_core']:,.0f} GETs/s per core)"
                )
            else:
                say(f"endpoint capacity: {cap['error']}")
            say()

        if "fetch" not in skip:
            results["fetch"] = {}
            for lat in latencies:
                ep = endpoints[lat]
                say(f"## list + GET + decode, {lat:g} ms latency, {a.concurrency} in flight")
                say()
                say(TABLE_HEAD)
                runs: dict[str, list[dict[str, Any]]] = {c: [] for c in clients}
                for rep in range(repeat):
                    order = clients if rep % 2 == 0 else list(reversed(clients))
                    for c in order:
                        if c in EXTRAS and lat != latencies[-1]:
                            continue
                        if rep and c in ONCE:
                            continue
                        if not available(c):
                            runs[c].append({"error": "not installed"})
                            continue
                        limit = None
                        if c == "ref":
                            if rep:
                                continue  # one capped run is enough for a 20-40x gap
                            limit = (60 if quick else 150) if lat else (100 if quick else 300)
                        r = run_child(
                            workload(c, ep, limit=limit, concurrency=a.concurrency),
                            env_for(c)
                            if c != "ref"
                            else child_env(
                                {"PYTHONPATH": str(REF_DIR), "AWS_ENDPOINT_URL": ep.url}
                            ),
                            timeout=180,
                        )
                        if c == "ref" and "error" not in r:
                            r["note_extra"] = f"capped at {limit} docs; docs/s extrapolates"
                        runs[c].append(r)
                        print(
                            f"  [{lat:g} ms] {c}: "
                            + (
                                r["error"]
                                if "error" in r
                                else f"{r['docs']} docs in {r['seconds']:.2f}s"
                            ),
                            flush=True,
                        )
                best = {c: best_of(rs) for c, rs in runs.items() if rs}
                best = {c: r for c, r in best.items() if r.get("error") != "not run"}
                ours = best.get("ours-async", {})
                ours_dps = ours["docs"] / ours["seconds"] if "error" not in ours and ours else None
                for c in clients:
                    if c in best:
                        say(fmt_row(c, best[c], ours_dps))
                say()
                results["fetch"][str(lat)] = best

        if "list" not in skip:
            say(
                f"## list {list_n:,} keys ({list_n // 1000} pages of 1,000: at 20 ms a serial "
                f"listing waits {list_n // 1000 * 0.02:.1f} s on round trips)"
            )
            say()
            say("| method | latency ms | keys | seconds | keys/s | CPU s |")
            say("|---|---:|---:|---:|---:|---:|")
            results["list"] = {}
            for lat in sorted(set(latencies) | {0.0}):
                results["list"][str(lat)] = {}
                for c, label in LIST_METHODS:
                    if not available(c) or (lat and c in LIST_0MS_ONLY):
                        continue
                    r = run_child(
                        workload(c, endpoints[lat], dataset=f"v{list_n}"), child_env(), timeout=180
                    )
                    results["list"][str(lat)][c] = r
                    if "error" in r:
                        say(f"| {label} | {lat:g} | error: {r['error'][:100]} | | | |")
                        continue
                    if "ranges" in r:
                        label += (
                            f" ({r['ranges']} ranges; split {r['split_seconds']:.2f} s, "
                            f"{r['probes']} probes; {r['overshoot']:,} keys past a range's end)"
                        )
                    say(
                        f"| {label} | {lat:g} | {r['docs']:,} | {r['seconds']:.2f} | "
                        f"{r['docs'] / r['seconds']:,.0f} | {r['cpu']:.2f} |"
                    )
            say()

        if "rss" not in skip:
            say("## export peak RSS vs corpus size (1 worker, 0 ms)")
            say()
            say("| export | documents | exported | docs/s | peak RSS MB |")
            say("|---|---:|---:|---:|---:|")
            results["rss"] = {}
            rss_variants = RSS_VARIANTS if not quick else RSS_VARIANTS[:1]
            for c in rss_variants:
                label = RSS_LABELS[c]
                runs_rss = results["rss"][c] = {}
                for n in rss_sizes:
                    ds = "bench" if n == n_docs or n not in virtual else f"v{n}"
                    r = run_child(workload(c, ep0, dataset=ds), child_env(), timeout=400)
                    runs_rss[n] = r
                    if "error" in r:
                        say(f"| {label} | {n:,} | error: {r['error'][:100]} | | |")
                    else:
                        say(
                            f"| {label} | {n:,} | {r['docs']:,} | "
                            f"{r['docs'] / r['seconds']:,.0f} | {r['rss_kb'] / 1024:.0f} |"
                        )
            say()
            for c in rss_variants:
                ok = [r for r in results["rss"][c].values() if "error" not in r]
                if len(ok) == 2:
                    growth = ok[1]["rss_kb"] / ok[0]["rss_kb"] - 1
                    say(
                        f"RSS growth {rss_sizes[0]:,} -> {rss_sizes[1]:,} documents, "
                        f"{RSS_LABELS[c]}: {100 * growth:+.1f}% (target < 20%, and < 300 MB)"
                    )
            say()

        if "startup" not in skip:
            st = startup_times(3 if quick else 7)
            results["startup"] = st
            say("## startup (best of N, wall)")
            say()
            say("| command | seconds |")
            say("|---|---:|")
            for k, v in st.items():
                say(f"| `{k}` | {v:.3f} |")
            say()

        if "fetch" in results:
            say("## targets (20 ms latency, ratios of this run)")
            say()
            say(targets(results))
            say()
    finally:
        for p in _CHILDREN:
            if p.poll() is None:
                p.kill()
                with contextlib.suppress(Exception):
                    p.wait(5)
        for ep in endpoints.values():
            ep.stop()
    total = time.perf_counter() - started
    say(f"total benchmark time: {total:.0f} s")
    for line in log:
        say(f"note: {line}")
    results["total_seconds"] = total
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "latest.json").write_text(json.dumps(results, indent=1, default=str))
    (RESULTS_DIR / "latest.md").write_text("\n".join(out_lines) + "\n")
    if a.json:
        a.json.write_text(json.dumps(results, indent=1, default=str))
    if a.write_results:
        write_results(out_lines)
    leftover = [p.pid for p in _CHILDREN if p.poll() is None]
    if leftover:
        print(f"warning: processes still running: {leftover}", file=sys.stderr)
        return 1
    return 0


def targets(results: dict[str, Any]) -> str:
    fetch = results["fetch"]
    lat = "20.0" if "20.0" in fetch else max(fetch, key=float)
    b = fetch[lat]

    def dps(c: str) -> float | None:
        r = b.get(c)
        if not r or "error" in r or not r.get("seconds"):
            return None
        return r["docs"] / r["seconds"]

    rows = ["| target | measured | met |", "|---|---:|---|"]

    def check(label: str, num: str, den: str, goal: float) -> None:
        x, y = dps(num), dps(den)
        if x is None or y is None:
            rows.append(f"| {label} | n/a | - |")
            return
        ratio = x / y
        rows.append(
            f"| {label} (>= {goal:g}x) | {ratio:.2f}x | {'yes' if ratio >= goal else 'NO'} |"
        )

    check("ours-async / raw aiobotocore", "ours-async", "aiobotocore", 0.95)
    check("ours-sync / ours-async", "ours-sync", "ours-async", 0.9)
    check("export 1 worker / raw aiobotocore", "ours-export-1", "aiobotocore", 0.85)
    check("export 2 workers / raw aiobotocore", "ours-export-2", "aiobotocore", 1.6)
    check("ours-async / reference", "ours-async", "ref", 35)
    check("export 1 worker / obstore (goal: >= 1x)", "ours-export-1", "obstore", 1.0)
    if dps("obstore-export") is not None:
        check(
            "prototype: export with GETs via obstore / ours-export-1 (keep a plane if)",
            "obstore-export",
            "ours-export-1",
            2.0,
        )
    for c, runs_rss in (results.get("rss") or {}).items():
        vals = [r for r in runs_rss.values() if "error" not in r]
        if len(vals) == 2:
            g = vals[1]["rss_kb"] / vals[0]["rss_kb"] - 1
            mb = max(v["rss_kb"] for v in vals) / 1024
            rows.append(
                f"| export RSS growth, {RSS_LABELS.get(c, c)} (< 20%, < 300 MB) | "
                f"{100 * g:+.1f}%, {mb:.0f} MB | {'yes' if g < 0.2 and mb < 300 else 'NO'} |"
            )
    return "\n".join(rows)


BEGIN, END = "<!-- BEGIN GENERATED (benchmarks/run.py) -->", "<!-- END GENERATED -->"


def write_results(lines: list[str]) -> None:
    path = HERE / "RESULTS.md"
    block = BEGIN + "\n" + "\n".join(lines) + "\n" + END
    text = path.read_text() if path.exists() else f"# Benchmark results\n\n{BEGIN}\n{END}\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        text = head + block + tail
    else:
        text += "\n" + block + "\n"
    path.write_text(text)


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        for proc in _CHILDREN:
            if proc.poll() is None:
                proc.kill()
