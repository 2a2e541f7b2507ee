"""Where the CPU per document goes: py-spy on one workload process, stacks put in buckets.

    python benchmarks/profile.py [--clients ours-async,aiobotocore] [--dataset v10000]

Starts the local endpoint (0 ms latency), runs each workload under ``py-spy record`` (raw
collapsed stacks, and a speedscope file in benchmarks/.results/ to open at speedscope.app),
and prints CPU ms per document by phase. A sample goes to the first phase (in the order of
``PHASES``) whose marker appears anywhere in its stack, so phases are inclusive and do not
overlap. py-spy counts active (non-idle) samples only, so samples / rate ~ CPU seconds.
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _clients  # noqa: E402
import _runner  # noqa: E402

#: (phase, markers): the first phase with a marker in the stack takes the sample.
PHASES: list[tuple[str, tuple[str, ...]]] = [
    ("startup (imports, client creation)", ("<module> (",)),  # refined below
    ("decode: zlib inflate", ("inflate (kl3m_data_client", "zlib.decompress", "decode (_measure")),
    ("decode: base64", ("_b64 (kl3m_data_client", "b64decode")),
    ("decode: json.loads", ("_load_json (kl3m_data_client", "json/decoder.py")),
    ("decode: models/utf-8/other", ("decode_stage_object", "decode_document")),
    ("export: records + writer", ("kl3m_data_client/export/_records", "_writers.py", "run_stream")),
    ("botocore: signing (SigV4)", ("RequestSigner", "auth.py", "signers.py")),
    ("botocore: response parsing", ("parsers.py",)),
    (
        "botocore: request build/validate/serialize",
        ("_convert_to_request_dict", "validate.py", "serialize.py", "create_request"),
    ),
    ("botocore: event hooks (handlers)", ("hooks.py",)),
    (
        "aiohttp: connection pool, send, receive, body",
        ("aiohttp/", "aiobotocore/httpsession", "aiobotocore/response", "yarl/", "multidict"),
    ),
    ("botocore/aiobotocore: other", ("botocore/",)),
    ("obstore (Rust, via Python)", ("obstore",)),
    ("ours: store/stream/document (non-decode)", ("kl3m_data_client/",)),
    ("asyncio event loop, tasks, wait_for", ("asyncio/",)),
    ("threads (boto3/urllib3/concurrent)", ("threading.py", "urllib3/", "concurrent/")),
    ("other", ("",)),
]


def classify(stack: str) -> str:
    # import time and client creation: stacks outside the event loop / window
    in_loop = "_run_once" in stack or "Window" in stack or "threading.py" in stack
    if not in_loop and ("_find_and_load" in stack or "create_client" in stack):
        return PHASES[0][0]
    for phase, markers in PHASES[1:]:
        if any(m in stack for m in markers if m):
            return phase
    return "other"


def aggregate(raw: Path, docs: int, rate: int) -> tuple[dict[str, float], list[tuple[str, float]]]:
    phases: collections.Counter[str] = collections.Counter()
    selfs: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        phases[classify(stack)] += n
        selfs[stack.split(";")[-1]] += n
    ms = 1000.0 / rate / max(1, docs)
    return (
        {p: phases[p] * ms for p, _ in PHASES if phases[p]},
        [(f, c * ms) for f, c in selfs.most_common(25)],
    )


def virtual_sizes(dataset: str) -> list[int]:
    """The virtual datasets the bucket needs: the usual 10k and 100k, plus ``N`` of a
    ``--dataset vN`` (any size: the endpoint generates the keys)."""
    sizes = {10_000, 100_000}
    if dataset.startswith("v") and dataset[1:].isdigit():
        sizes.add(int(dataset[1:]))
    return sorted(sizes)


def record(pyspy: str, args: list[str], raw: Path, rate: int) -> dict[str, Any] | str:
    """Run the workload twice under py-spy (raw stacks, then a speedscope file); its
    ``RESULT`` (or why it failed)."""
    result: dict[str, Any] = {}
    for fmt, path in (("raw", raw), ("speedscope", raw.with_suffix(".speedscope.json"))):
        cmd = [pyspy, "record", "--format", fmt, "--rate", str(rate), "-o", str(path), "--"]
        res = subprocess.run(
            [*cmd, sys.executable, *args],
            capture_output=True,
            env=_runner.child_env(),
            timeout=600,
            check=False,
        )
        if fmt == "raw":
            for line in res.stdout.decode().splitlines():
                if line.startswith("RESULT "):
                    result = json.loads(line[7:])
            if not result:
                return f"failed: {res.stderr.decode()[-500:]}"
            if not result.get("docs"):
                return "no documents (is the dataset in the bench bucket? vN datasets are)"
    return result


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", default="ours-async,aiobotocore,ours-export-1")
    ap.add_argument("--dataset", default="v10000", help="bench, or vN (N virtual documents)")
    ap.add_argument("--rate", type=int, default=400)
    ap.add_argument("--docs", type=int, default=2000, help="bench corpus size (spec cache key)")
    a = ap.parse_args()
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(pyspy).exists():
        raise SystemExit("py-spy is not installed: pip install -e '.[bench]' (the bench extra)")
    out_dir = HERE / ".results"
    out_dir.mkdir(exist_ok=True)
    spec, _ = _runner.build_bucket(a.docs, 1, virtual_sizes(a.dataset), None)
    ep = _runner.Endpoint(spec, 0.0, max_seconds=900)
    report: dict[str, dict[str, Any]] = {}
    try:
        for client in a.clients.split(","):
            args = _clients.workload_args(client, ep, dataset=a.dataset)
            raw = out_dir / f"profile-{client}.txt"
            result = record(pyspy, args, raw, a.rate)
            if isinstance(result, str):
                print(f"{client}: {result}")
                continue
            phases, top = aggregate(raw, result["docs"], a.rate)
            report[client] = {"result": result, "phases": phases, "top_self": top}
    finally:
        ep.stop()
    if not report:
        print("nothing profiled")
        return 1
    names = list(report)
    print(f"CPU ms per document by phase (py-spy, {a.dataset}, 0 ms latency)\n")
    print("| phase | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for phase, _ in PHASES:
        vals = [report[n]["phases"].get(phase, 0.0) for n in names]
        if any(v >= 0.005 for v in vals):
            print(f"| {phase} | " + " | ".join(f"{v:.3f}" for v in vals) + " |")
    totals = [sum(report[n]["phases"].values()) for n in names]
    print("| **total sampled** | " + " | ".join(f"**{v:.3f}**" for v in totals) + " |")
    window = [1000 * report[n]["result"]["cpu"] / report[n]["result"]["docs"] for n in names]
    print("| rusage CPU in window | " + " | ".join(f"{v:.3f}" for v in window) + " |")
    for n in names:
        print(f"\ntop self frames, {n} (ms/doc):")
        for f, v in report[n]["top_self"][:15]:
            print(f"  {v:.3f}  {f}")
    (out_dir / "profile.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
