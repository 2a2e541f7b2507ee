"""Micro-benchmarks of the per-document CPU in our layers (no network), in microseconds.

    python benchmarks/micro.py

Times, over the benchmark's ~19 KB documents-stage objects (best of 5 passes): our
``decode_document`` against the peers' ``json + b64decode + zlib.decompress``, its parts,
the ETag MD5 check of ``S3Store._get_once``, an ``asyncio.wait_for`` around an awaitable (as
``S3Store.get`` does per GET), and the export's record building and JSON line encoding.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import pickle
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def best_us(fn: Any, items: list[Any], passes: int = 5) -> float:
    best = float("inf")
    for _ in range(passes):
        t0 = time.perf_counter()
        for x in items:
            fn(x)
        best = min(best, time.perf_counter() - t0)
    return 1e6 * best / len(items)


def main() -> None:
    r = subprocess.run(
        [sys.executable, str(HERE / "bucket.py"), "2000", "1", "10000", "100000"],
        capture_output=True,
        check=True,
    )
    spec = pickle.loads(Path(r.stdout.decode().split("\t")[0]).read_bytes())
    items = [(k, v) for k, v in spec["objects"].items() if k.startswith("documents/bench/")]
    bodies = [v for _, v in items]
    from kl3m_data_client._formats import (
        _b64,
        _load_json,
        bytes_to_content,
        decode_document,
        inflate,
    )
    from kl3m_data_client.export._records import RecordFilter, make_record
    from kl3m_data_client.export._json import _dumps

    objs = [json.loads(b) for b in bodies]
    packed = [base64.b64decode(o["content"]) for o in objs]
    raws = [zlib.decompress(p) for p in packed]
    rows: list[tuple[str, float]] = []
    rows.append(
        (
            "peer decode: json.loads + b64decode + zlib.decompress",
            best_us(lambda b: zlib.decompress(base64.b64decode(json.loads(b)["content"])), bodies),
        )
    )
    rows.append(("ours: decode_document (all)", best_us(lambda kv: decode_document(*kv), items)))
    rows.append(("  json.loads (_load_json)", best_us(lambda b: _load_json(b, "k", "x"), bodies)))
    rows.append(("  strict base64 (_b64)", best_us(lambda o: _b64(o["content"], "k", "c"), objs)))
    rows.append(
        ("  peer base64.b64decode", best_us(lambda o: base64.b64decode(o["content"]), objs))
    )
    rows.append(
        (
            "  inflate (decompressobj + limit)",
            best_us(lambda p: inflate(p, "k", limit=1 << 30), packed),
        )
    )
    rows.append(("  peer zlib.decompress", best_us(zlib.decompress, packed)))
    mimes = [o.get("format") for o in objs]
    pairs = list(zip(raws, mimes, strict=True))
    rows.append(
        (
            "  bytes_to_content (utf-8 decode of text originals)",
            best_us(lambda rm: bytes_to_content(*rm), pairs),
        )
    )
    rows.append(
        (
            "  blake2b of raw (DocumentContent.verify-like)",
            best_us(lambda x: hashlib.blake2b(x).hexdigest(), raws),
        )
    )
    rows.append(
        (
            "ETag check: md5 of the 19 KB body (S3Store._get_once)",
            best_us(lambda b: hashlib.md5(b, usedforsecurity=False).hexdigest(), bodies),
        )
    )

    async def waits(n: int) -> tuple[float, float]:
        async def op() -> int:
            await asyncio.sleep(0)
            return 1

        t0 = time.perf_counter()
        for _ in range(n):
            await op()
        plain = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(n):
            await asyncio.wait_for(op(), 60)
        wrapped = time.perf_counter() - t0
        return plain, wrapped

    plain, wrapped = min(asyncio.run(waits(20_000)) for _ in range(3))
    rows.append(
        ("asyncio.wait_for around one await (minus plain await)", 1e6 * (wrapped - plain) / 20_000)
    )
    flt = RecordFilter(content="text")
    recs = [make_record("documents", k, "bench", k, v, flt) for k, v in items]
    rows.append(
        (
            "export: make_record (documents, text)",
            best_us(lambda kv: make_record("documents", kv[0], "bench", kv[0], kv[1], flt), items),
        )
    )
    rows.append(
        (
            "export: JSON line (_dumps + utf-8 encode)",
            best_us(lambda rec: (_dumps(rec) + "\n").encode("utf-8", "surrogatepass"), recs),
        )
    )
    lines = [(_dumps(rec) + "\n").encode() for rec in recs]
    rows.append(
        (
            "export: sha256 of the JSON line (HashingFile)",
            best_us(lambda b: hashlib.sha256(b).digest(), lines),
        )
    )
    mean_line = sum(map(len, lines)) / len(lines)
    print(
        f"{len(items)} objects, mean {sum(map(len, bodies)) / len(bodies):.0f} B; "
        f"mean JSONL record {mean_line:.0f} B\n"
    )
    print("| operation | us per document |\n|---|---:|")
    for name, us in rows:
        print(f"| {name} | {us:.1f} |")


if __name__ == "__main__":
    main()
