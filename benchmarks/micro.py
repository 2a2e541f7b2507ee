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


Rows = list[tuple[str, float]]


def load_items() -> list[tuple[str, bytes]]:
    """(key, body) of the bench dataset's documents-stage objects (the cached bucket)."""
    r = subprocess.run(
        [sys.executable, str(HERE / "bucket.py"), "2000", "1", "10000", "100000"],
        capture_output=True,
        check=True,
    )
    spec = pickle.loads(Path(r.stdout.decode().split("\t")[0]).read_bytes())
    return [(k, v) for k, v in spec["objects"].items() if k.startswith("documents/bench/")]


def decode_rows(items: list[tuple[str, bytes]]) -> Rows:
    """Our decode and its parts against the peers' ``json + b64decode + zlib``; the hashes."""
    from kl3m_data_client._formats import (
        _b64,
        _load_json,
        bytes_to_content,
        decode_document,
        inflate,
    )

    bodies = [v for _, v in items]
    objs = [json.loads(b) for b in bodies]
    packed = [base64.b64decode(o["content"]) for o in objs]
    raws = [zlib.decompress(p) for p in packed]
    pairs = list(zip(raws, [o.get("format") for o in objs], strict=True))
    return [
        (
            "peer decode: json.loads + b64decode + zlib.decompress",
            best_us(lambda b: zlib.decompress(base64.b64decode(json.loads(b)["content"])), bodies),
        ),
        ("ours: decode_document (all)", best_us(lambda kv: decode_document(*kv), items)),
        ("  json.loads (_load_json)", best_us(lambda b: _load_json(b, "k", "x"), bodies)),
        ("  strict base64 (_b64)", best_us(lambda o: _b64(o["content"], "k", "c"), objs)),
        ("  peer base64.b64decode", best_us(lambda o: base64.b64decode(o["content"]), objs)),
        (
            "  inflate (decompressobj + limit)",
            best_us(lambda p: inflate(p, "k", limit=1 << 30), packed),
        ),
        ("  peer zlib.decompress", best_us(zlib.decompress, packed)),
        (
            "  bytes_to_content (utf-8 decode of text originals)",
            best_us(lambda rm: bytes_to_content(*rm), pairs),
        ),
        (
            "  blake2b of raw (DocumentContent.verify-like)",
            best_us(lambda x: hashlib.blake2b(x).hexdigest(), raws),
        ),
        (
            "ETag check: md5 of the 19 KB body (S3Store._get_once)",
            best_us(lambda b: hashlib.md5(b, usedforsecurity=False).hexdigest(), bodies),
        ),
    ]


def wait_for_us(n: int = 20_000) -> float:
    """What ``asyncio.wait_for`` adds around one await (us; best of 3)."""

    async def waits() -> tuple[float, float]:
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
        return plain, time.perf_counter() - t0

    plain, wrapped = min(asyncio.run(waits()) for _ in range(3))
    return 1e6 * (wrapped - plain) / n


def export_rows(items: list[tuple[str, bytes]]) -> tuple[Rows, float]:
    """The export's record building, JSON line and part hash per document; mean line bytes."""
    from kl3m_data_client.export._json import _dumps
    from kl3m_data_client.export._records import RecordFilter, make_record

    flt = RecordFilter(content="text")
    recs = [make_record("documents", k, "bench", k, v, flt) for k, v in items]
    lines = [(_dumps(rec) + "\n").encode() for rec in recs]
    rows = [
        (
            "export: make_record (documents, text)",
            best_us(lambda kv: make_record("documents", kv[0], "bench", kv[0], kv[1], flt), items),
        ),
        (
            "export: JSON line (_dumps + utf-8 encode)",
            best_us(lambda rec: (_dumps(rec) + "\n").encode("utf-8", "surrogatepass"), recs),
        ),
        (
            "export: sha256 of the JSON line (HashingFile)",
            best_us(lambda b: hashlib.sha256(b).digest(), lines),
        ),
    ]
    return rows, sum(map(len, lines)) / len(lines)


def main() -> None:
    items = load_items()
    rows = decode_rows(items)
    rows.append(("asyncio.wait_for around one await (minus plain await)", wait_for_us()))
    more, mean_line = export_rows(items)
    rows += more
    mean_body = sum(len(v) for _, v in items) / len(items)
    print(f"{len(items)} objects, mean {mean_body:.0f} B; mean JSONL record {mean_line:.0f} B\n")
    print("| operation | us per document |\n|---|---:|")
    for name, us in rows:
        print(f"| {name} | {us:.1f} |")


if __name__ == "__main__":
    main()
