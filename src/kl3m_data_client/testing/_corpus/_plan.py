"""The layout of a generated bucket: per-dataset ids, MIME types, sizes, stages, metadata."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Final

from kl3m_data_client.testing._corpus._model import MAX_DOC_BYTES, STAGES, Stage
from kl3m_data_client.testing._corpus._text import HOSTS, NAMES, ROMAN, WORDS

_DATASETS: Final = ("usc", "cap", "fdlp", "ecfr", "dotgov")
_DATASET_WEIGHTS: Final = (30, 25, 20, 15, 10)
SOURCES: Final = {
    "usc": ("https://uscode.house.gov/", "Office of the Law Revision Counsel"),
    "cap": ("https://static.case.law/", "Harvard Law School"),
    "fdlp": ("https://permanent.fdlp.gov/", "U.S. Government Publishing Office"),
    "ecfr": ("https://www.ecfr.gov/", "Office of the Federal Register"),
    "dotgov": ("https://www.usa.gov/", ""),
}
# Awkward path components: spaces, unicode, brackets, '+', literal '%2F', '='.
_AWKWARD = (
    "section {n} [a]+b",
    "pct%2Fslash {n}",
    "§ {n} Übersicht",
    "key=value {n}",
    "naïve café {n}",
    "a+b=c [{n}]",
)


@dataclass
class Plan:
    dataset_id: str
    document_id: str
    mime_type: str
    target: int
    stages: frozenset[Stage]
    rep_compressed: bool
    parquet_compressed: bool


def _target_size(rng: random.Random) -> int:
    if rng.random() < 0.015:  # the long tail: log-uniform 50 KB .. 1 MB
        return int(math.exp(rng.uniform(math.log(50_000), math.log(MAX_DOC_BYTES))))
    size = int(rng.lognormvariate(8.0, 1.15))  # median ~3 KB
    return max(1024, min(size, MAX_DOC_BYTES))


def _document_id(dataset_id: str, i: int, rng: random.Random) -> str:
    awkward = rng.random() < 0.18
    leaf_tmpl = rng.choice(_AWKWARD) if awkward else ""
    if dataset_id == "usc":
        title, chapter = rng.randint(1, 54), rng.randint(1, 40)
        leaf = leaf_tmpl.format(n=i) if awkward else f"section-{i:06d}"
        sub = f"subchapter-{rng.choice(ROMAN).lower()}/" if rng.random() < 0.3 else ""
        return f"title-{title:02d}/chapter-{chapter}/{sub}{leaf}"
    if dataset_id == "cap":
        return str(1000 + i)
    if dataset_id == "fdlp":
        leaf = leaf_tmpl.format(n=i) if awkward else f"doc-{i:06d}"
        lps, host, pkg = 100000 + rng.randrange(20) * 7, rng.choice(HOSTS), rng.randint(1, 30)
        return f"LPS{lps}/{host}/pkg{pkg}/{leaf}"
    if dataset_id == "ecfr":
        title, part = rng.randint(1, 50), rng.randint(1, 999)
        leaf = leaf_tmpl.format(n=i) if awkward else f"section-{part}.{i}"
        return f"title-{title}/part-{part}/{leaf}"
    host = rng.choice(HOSTS)
    leaf = leaf_tmpl.format(n=i) if awkward else f"page-{i}.html"
    if rng.random() < 0.15:
        # an id that itself ends in ".json": its key ends in ".json.json"
        leaf = f"api/data-{i}.json"
    return f"{host}/{'/'.join(rng.choice(WORDS) for _ in range(rng.randint(0, 3)))}/{leaf}".replace(
        "//", "/"
    )


def _mime_for(dataset_id: str, rng: random.Random) -> str:
    if dataset_id == "usc":
        return rng.choice(("text/html", "text/html", "application/xhtml+xml"))
    if dataset_id == "cap":
        return rng.choice(("text/html", "text/plain"))
    if dataset_id == "fdlp":
        return rng.choice(("text/html", "application/pdf", "application/pdf"))
    if dataset_id == "ecfr":
        return "application/xhtml+xml"
    return rng.choice(("text/html", "text/html", "text/plain", "application/pdf"))


def plan_documents(n_documents: int, seed: int) -> list[Plan]:
    rng = random.Random(f"kl3m-corpus:{seed}")
    plans: list[Plan] = []
    used: set[tuple[str, str]] = set()
    big = n_documents // 2 if n_documents >= 20 else -1
    for i in range(n_documents):
        dataset_id = (
            _DATASETS[i]
            if i < len(_DATASETS)
            else rng.choices(_DATASETS, weights=_DATASET_WEIGHTS)[0]
        )
        document_id = _document_id(dataset_id, i, rng)
        while (dataset_id, document_id) in used:  # pragma: no cover - ids embed i
            document_id += "-dup"
        used.add((dataset_id, document_id))
        mime = _mime_for(dataset_id, rng)
        target = _target_size(rng)
        if i == big:
            target = MAX_DOC_BYTES - rng.randrange(50_000)
        stages: set[Stage] = {"documents"}
        if dataset_id in ("usc", "cap"):
            stages |= {"representations", "parquet"}
        elif dataset_id == "fdlp":
            # incomplete: some documents never got a representation, some no parquet
            if rng.random() < 0.85:
                stages.add("representations")
                if rng.random() < 0.8:
                    stages.add("parquet")
        elif dataset_id == "ecfr" and rng.random() < 0.75:
            stages.add("representations")
            if rng.random() < 0.5:
                stages.add("parquet")
        # dotgov: documents stage only
        plans.append(
            Plan(
                dataset_id=dataset_id,
                document_id=document_id,
                mime_type=mime,
                target=target,
                stages=frozenset(stages),
                rep_compressed=rng.random() >= 0.1,
                parquet_compressed=rng.random() >= 0.1,
            )
        )
    # make sure each incomplete variant occurs at least once when there are enough documents
    fdlp = [p for p in plans if p.dataset_id == "fdlp"]
    if len(fdlp) >= 3:
        fdlp[0].stages = frozenset({"documents"})
        fdlp[1].stages = frozenset({"documents", "representations"})
        fdlp[2].stages = frozenset(STAGES)
    return plans


def dublin_core(
    dataset_id: str, document_id: str, mime: str, title: str, rng: random.Random
) -> dict[str, Any]:
    source, publisher = SOURCES[dataset_id]
    if dataset_id == "dotgov":
        identifier = f"https://{document_id}"
        publisher = document_id.split("/", 1)[0]
    elif dataset_id == "fdlp":
        identifier = f"{source}{document_id}"
    else:
        identifier = f"{source}{document_id}"
    dc: dict[str, Any] = {
        "title": title,
        "description": title if rng.random() < 0.6 else "",
        "publisher": publisher,
        "creator": [rng.choice(NAMES)] if rng.random() < 0.3 else [],
        "subject": rng.sample(["Securities", "Civil Rights", "Tax", "Environment"], 2)
        if rng.random() < 0.3
        else [],
        "date": f"{rng.randint(1950, 2024)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        "T00:00:00",
        "format": mime,
        "identifier": identifier,
        "source": source,
        "language": "en",
        "license": "Public Domain" if dataset_id != "dotgov" else "",
        "bibliographic_citation": title if dataset_id == "cap" else "",
    }
    return dc
