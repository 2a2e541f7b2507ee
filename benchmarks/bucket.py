"""The benchmark bucket: ~19 KB documents-stage objects in the real KL3M format.

``kl3m_data_client.testing.generate_corpus`` gives documents with the size distribution of
the real bucket (median ~3 KB). The benchmark of the issue uses ~19 KB objects, so each
benchmark document is re-encoded with the corpus's own ``encode_document_object`` (Dublin
Core JSON with ``indent=4``, ``content = base64(zlib(raw))``, ``blake2b``, ``size``): its
metadata is the corpus document's, its raw bytes are the corpus document's followed by those
of the next documents of the same MIME type, cut so the object is about 19 KB. Keys keep the
corpus ids, awkward ones included (spaces, ``[``, ``%2F``, ``§``, ``+``), under one dataset:
``documents/bench/{corpus dataset}/{id}.json``.

Also in the bucket: the corpus's parquet-stage objects under ``parquet/bench/...`` (for
the parquet -> JSONL export), the corpus's documents-stage objects as generated under
``documents/orig/...``, and virtual datasets ``documents/v{N}/`` of N keys whose bodies
cycle through those (listing and export-RSS workloads), each with an index object, and
``parquet/v{N}/`` whose bodies cycle through ``parquet/bench/...`` (parquet -> JSONL RSS).
"""

from __future__ import annotations

import json
import os
import pickle
import zlib
from pathlib import Path

BUCKET = "data.kl3m.ai"
DATASET = "bench"
TARGET_OBJECT_BYTES = 19_000
#: Where built buckets are kept (``BENCH_CACHE`` overrides: ``run.py --cache-dir``).
CACHE = Path(os.environ.get("BENCH_CACHE") or Path(__file__).resolve().parent / ".cache")


def _resize(obj: bytes, raws: list[bytes]) -> bytes:
    from kl3m_data_client.testing import encode_document_object

    meta = json.loads(obj)
    raw = b"".join(raws)
    # object ~= metadata JSON + base64 (4/3) of the zlib stream
    overhead = len(obj) - len(meta.get("content", ""))
    want_packed = max(512, (TARGET_OBJECT_BYTES - overhead) * 3 // 4)
    for _ in range(6):
        packed = len(zlib.compress(raw))
        if packed <= want_packed * 1.03:
            break
        raw = raw[: max(1, int(len(raw) * want_packed / packed))]
    dublin = {k: v for k, v in meta.items() if k not in ("content", "blake2b", "size", "id")}
    return encode_document_object(
        dublin,
        raw,
        document_id=meta.get("id", ""),
        dataset_id=meta.get("dataset_id", ""),
        extra=meta.get("extra"),
    )


def build_spec(n_documents: int, seed: int, virtual: list[int]) -> dict:
    """The bucket (as the endpoint's spec dict) and facts about it."""
    from kl3m_data_client.testing import encode_index_object, generate_corpus

    corpus = generate_corpus(n_documents, seed=seed)
    docs = corpus.documents
    by_mime: dict[str, list[int]] = {}
    for i, d in enumerate(docs):
        by_mime.setdefault(d.mime_type, []).append(i)
    objects: dict[str, bytes] = {}
    for idxs in by_mime.values():
        for pos, i in enumerate(idxs):
            d = docs[i]
            raws, total, j = [], 0, 0
            while total < 64_000 and j < len(idxs):
                r = docs[idxs[(pos + j) % len(idxs)]].raw
                raws.append(r)
                total += len(r)
                j += 1
            body = _resize(corpus.objects[d.document_key], raws)
            objects[f"documents/{DATASET}/{d.dataset_id}/{d.document_id}.json"] = body
            if "parquet" in d.stages:
                objects[f"parquet/{DATASET}/{d.dataset_id}/{d.document_id}"] = corpus.objects[
                    d.parquet_key
                ]
    # the corpus's own documents (natural sizes, median ~3 KB): bodies of the virtual
    # datasets (listing, export RSS at 10k/100k documents without writing gigabytes)
    for d in docs:
        objects[f"documents/orig/{d.dataset_id}/{d.document_id}.json"] = corpus.objects[
            d.document_key
        ]
    virt = [(f"documents/v{n}/", n, ".json", "documents/orig/") for n in virtual]
    for prefix, n, suffix, _ in virt:  # (the index lists the documents-stage keys)
        name = prefix.split("/")[1]
        keys = [f"{prefix}{i:08d}{suffix}" for i in range(n)]
        objects[f"index/{name}.json.gz"] = encode_index_object(name, keys)
    # parquet-stage virtual datasets (parquet -> JSONL export RSS): bodies cycle through the
    # corpus's parquet objects (natural sizes)
    virt += [(f"parquet/v{n}/", n, "", f"parquet/{DATASET}/") for n in virtual]
    sizes = [len(v) for k, v in objects.items() if k.startswith(f"documents/{DATASET}/")]
    return {
        "bucket": BUCKET,
        "objects": objects,
        "virtual": virt,
        "facts": {
            "documents": len(sizes),
            "mean_object_bytes": sum(sizes) / len(sizes) if sizes else 0,
            "min_object_bytes": min(sizes, default=0),
            "max_object_bytes": max(sizes, default=0),
            "awkward_keys": sum(
                1
                for k in objects
                if k.startswith(f"documents/{DATASET}/") and any(c in k for c in "[]% +§")
            ),
            "keys_with_bracket": sum(
                1 for k in objects if k.startswith(f"documents/{DATASET}/") and "[" in k
            ),
            "parquet_objects": sum(1 for k in objects if k.startswith(f"parquet/{DATASET}/")),
            "virtual": {p: n for p, n, _, _ in virt},
        },
    }


def spec_path(n_documents: int, seed: int, virtual: list[int]) -> tuple[Path, dict]:
    """Build (or reuse from benchmarks/.cache) the pickled spec; returns (path, facts)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    tag = (
        f"v3-n{n_documents}-s{seed}-v{'_'.join(map(str, virtual)) or 'none'}-t{TARGET_OBJECT_BYTES}"
    )
    path = CACHE / f"bucket-{tag}.pkl"
    facts_path = CACHE / f"bucket-{tag}.json"
    if path.exists() and facts_path.exists():
        return path, json.loads(facts_path.read_text())
    spec = build_spec(n_documents, seed, virtual)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        pickle.dump(spec, fh, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)
    facts_path.write_text(json.dumps(spec["facts"], indent=1))
    return path, spec["facts"]


if __name__ == "__main__":
    import sys

    n, seed, *virt = map(int, sys.argv[1:])
    p, facts = spec_path(n, seed, virt)
    print(f"{p}\t{json.dumps(facts)}")
