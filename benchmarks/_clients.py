"""The clients of the side-by-side table: their names, labels, and how each one is run.

A client is a workload of ``workloads.py`` in its own process (the clock covers listing, GETs
and decoding, after the client made one request), or ``ours-cli*``: the whole
``kl3m-client export bench DEST`` process (documents -> JSONL, default options, startup
included), whose records are counted in DEST afterwards. ``NAME@PLANE`` runs ``NAME`` with
``data_plane=PLANE`` (``--data-plane PLANE`` for the CLI); a build without the option skips
the row with a note (``_peers.Ours.plane_note``).
"""

from __future__ import annotations

import gzip
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _peers import PLANES, REF_DIR, Ours, missing
from _runner import HERE, PY, Endpoint, child_env, run_child, run_process

LABELS = {
    "ref": "reference kl3m-data-client 0.2.0 (HEAD+GET, sequential)",
    "boto3": "boto3 + 64 threads",
    "s3fs": "s3fs (batch cat)",
    "aiobotocore": "raw aiobotocore, 64-way semaphore",
    "obstore": "obstore raw (list + GET + decode)",
    "ours-async": "ours: AsyncKL3MClient.stream_documents",
    "ours-sync": "ours: KL3MClient.stream_documents (blocking wrapper)",
    "ours-cli": "ours: kl3m-client export documents->JSONL, default options (whole process)",
    "ours-cli-w1": "ours: kl3m-client export --workers 1 (whole process)",
    "ours-cli-w2": "ours: kl3m-client export --workers 2 (whole process)",
    "ours-export-1": "ours: client.export documents->JSONL, 1 worker (in process)",
    "ours-export-2": "ours: client.export documents->JSONL, 2 workers (in process)",
    "ours-export-parquet": "ours: client.export documents->Parquet, 1 worker",
    "ours-export-pq-jsonl": "ours: client.export parquet stage->JSONL (tokens), 1 worker",
    "obstore-export": "prototype: client.export, GETs via bare obstore (listing via ours)",
}
#: The rows of a default run, in table order.
DEFAULT = (
    "ref",
    "boto3",
    "aiobotocore",
    "obstore",
    "ours-async",
    "ours-sync",
    "ours-cli",
    "ours-cli-w2",
    *(f"ours-async@{p}" for p in PLANES),
    *(f"ours-cli@{p}" for p in PLANES),
)
#: Also known (name them in ``--only``).
OPTIONAL = (
    "s3fs",
    "ours-cli-w1",
    "ours-export-1",
    "ours-export-2",
    "ours-export-parquet",
    "ours-export-pq-jsonl",
    "obstore-export",
)
#: Run once even with ``--repeat`` (time budget; not the numerator of a target).
ONCE = ("boto3", "s3fs", "ours-export-parquet", "ours-export-pq-jsonl")
#: Workload names of the listing table and the export-RSS table (not fetch clients).
WORKLOADS = ("list-paginator", "list-ours", "list-parallel", "list-index", "list-obstore")


def known(name: str) -> bool:
    """A fetch client of the table (``NAME@PLANE`` for ours-async / ours-cli)."""
    base, _, plane = name.partition("@")
    if plane:
        return base in ("ours-async", "ours-cli") and plane in PLANES
    return base in LABELS


def label(name: str) -> str:
    """The table's label of a client."""
    base, _, plane = name.partition("@")
    if base == "ours-cli" and plane:
        return f"ours: kl3m-client export --data-plane {plane} (whole process)"
    if base == "ours-async" and plane:
        return f"ours: AsyncKL3MClient(data_plane={plane!r}).stream_documents"
    return LABELS.get(base, base)


def cli_command() -> list[str]:
    """``kl3m-client`` as arguments of this interpreter: the console script next to it, or
    ``-m kl3m_data_client.cli``; either imports the package the workloads import."""
    script = Path(PY).with_name("kl3m-client")
    return [str(script)] if script.exists() else ["-m", "kl3m_data_client.cli"]


@dataclass
class RunOptions:
    """What every client of a run shares."""

    concurrency: int = 64
    timeout: float = 180.0


def workload_args(client: str, endpoint: Endpoint, **kw: Any) -> list[str]:
    """``workloads.py`` arguments for ``client`` (``ours-export-*`` and ``@PLANE`` mapped
    onto the workload's options); keyword options with a value become ``--name value``."""
    base, _, plane = client.partition("@")
    args = [str(HERE / "workloads.py")]
    variant = base[len("ours-export-") :] if base.startswith("ours-export-") else None
    args.append("ours-export" if variant is not None else base)
    if variant in ("1", "2"):
        args += ["--workers", variant]
    elif variant == "parquet":
        args += ["--format", "parquet"]
    elif variant == "pq-jsonl":
        args += ["--stage", "parquet"]
    args += ["--endpoint", endpoint.url]
    if plane:
        args += ["--data-plane", plane]
    for k, v in kw.items():
        if v is not None:
            args += [f"--{k.replace('_', '-')}", str(v)]
    return args


def count_records(dest: Path) -> int:
    """JSON Lines records in an export's part files (plain or gzip)."""
    n = 0
    for part in sorted((dest / "data").glob("*.jsonl*")):
        with gzip.open(part) if part.name.endswith(".gz") else part.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                n += chunk.count(b"\n")
    return n


def run_cli_export(
    endpoint: Endpoint, opts: RunOptions, *, workers: int | None, plane: str | None
) -> dict[str, Any]:
    """``kl3m-client export bench DEST`` (endpoint and credentials from the environment),
    timed as a whole process; records counted in DEST afterwards."""
    args = [*cli_command(), "export", "bench"]
    options: list[str] = []
    if workers:
        options += ["--workers", str(workers)]
    if plane:
        options += ["--data-plane", plane]
    if opts.concurrency != 64:  # the CLI's default is 64
        options += ["--max-concurrency", str(opts.concurrency)]
    with tempfile.TemporaryDirectory(prefix="kl3m-bench-cli-") as tmp:
        dest = Path(tmp) / "out"
        env = child_env({"KL3M_ENDPOINT_URL": endpoint.url})
        proc = run_process([*args, str(dest), *options], env, opts.timeout)
        docs = count_records(dest) if dest.exists() else 0
    if proc.returncode != 0 or not docs:
        return {"error": proc.tail()}
    note = "startup included" + (f"; {' '.join(options)}" if options else "")
    return {
        "docs": docs,
        "seconds": proc.wall,
        "cpu": proc.cpu,
        "rss_kb": proc.rss_kb,
        "note": note,
    }


def run_client(
    client: str, endpoint: Endpoint, opts: RunOptions, ours: Ours, limit: int | None = None
) -> dict[str, Any]:
    """One run of ``client``: ``docs``, ``seconds``, ``cpu``, ``rss_kb`` (and notes), or
    ``not_run`` (cannot run here: why) or ``error``."""
    base, _, plane = client.partition("@")
    why = missing(base) or (ours.plane_note(plane, cli=base == "ours-cli") if plane else None)
    if why:
        return {"not_run": why}
    if base in ("ours-cli", "ours-cli-w1", "ours-cli-w2"):
        workers = {"ours-cli-w1": 1, "ours-cli-w2": 2}.get(base)
        return run_cli_export(endpoint, opts, workers=workers, plane=plane or None)
    if base == "ref":
        # the reference takes no endpoint argument: boto3 reads AWS_ENDPOINT_URL
        env = child_env({"PYTHONPATH": str(REF_DIR), "AWS_ENDPOINT_URL": endpoint.url})
    else:
        env = child_env()
    args = workload_args(client, endpoint, limit=limit, concurrency=opts.concurrency)
    return run_child(args, env, opts.timeout)
