"""``kl3m-client`` behaviours of 0.2.0's CLI kept for its users: credential flags,
``documents --limit 0``, ``inspect --output`` (``status --csv`` and ``inspect --json`` are
checked in test_cli.py)."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from kl3m_data_client.testing import LocalBucket
from test_cli import cli_env, run

SECRET = "cli-flag-s3cr3t"


@pytest.fixture(scope="module")
def b(kl3m_corpus_bucket: LocalBucket) -> LocalBucket:
    return kl3m_corpus_bucket


def test_credential_flags_reach_the_signer(b: LocalBucket) -> None:
    env = {
        k: v
        for k, v in cli_env().items()
        if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    }
    without = run("list", "--json", endpoint=b.endpoint_url, env=env)
    assert without.returncode != 0 and "credentials" in without.stderr
    flags = ["--aws-access-key-id", "testing", "--aws-secret-access-key", SECRET]
    proc = run(*flags, "list", "--json", endpoint=b.endpoint_url, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "usc" in proc.stdout
    assert SECRET not in proc.stdout + proc.stderr
    half = run("--aws-access-key-id", "testing", "list", endpoint=b.endpoint_url, env=env)
    assert half.returncode == 2 and "together" in half.stderr


def test_documents_count_to_a_file(b: LocalBucket, tmp_path: Path) -> None:
    n = sum("documents" in d.stages for d in b.corpus.dataset_documents("cap"))
    out = tmp_path / "count.txt"
    proc = run("documents", "cap", "--count", "-o", str(out), endpoint=b.endpoint_url)
    assert proc.returncode == 0, proc.stderr
    assert out.read_text() == f"{n}\n" and proc.stdout.strip() == str(n)


def test_documents_limit_zero_lists_everything(b: LocalBucket) -> None:
    expected = sorted(
        d.document_id for d in b.corpus.dataset_documents("cap") if "documents" in d.stages
    )
    proc = run("documents", "cap", "--limit", "0", endpoint=b.endpoint_url)
    assert proc.returncode == 0, proc.stderr
    assert sorted(proc.stdout.splitlines()) == expected


def test_inspect_output_writes_the_stage_content(b: LocalBucket, tmp_path: Path) -> None:
    doc = next(d for d in b.corpus.dataset_documents("usc") if len(d.stages) == 3)
    out = tmp_path / "doc.json"
    proc = run("inspect", "usc", doc.document_id, "--output", str(out), endpoint=b.endpoint_url)
    assert proc.returncode == 0, proc.stderr
    body = json.loads(out.read_text(encoding="utf-8"))
    assert body["content"] == doc.raw.decode("utf-8")
    stored = json.loads(b.corpus.objects[doc.document_key])
    assert body["metadata"] == {k: v for k, v in stored.items() if k != "content"}

    reps = tmp_path / "reps.json"
    proc = run(
        "inspect",
        "usc",
        doc.document_id,
        "--stage",
        "representations",
        "-o",
        str(reps),
        "--json",
        endpoint=b.endpoint_url,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["output"] == str(reps)
    rep = json.loads(reps.read_text(encoding="utf-8"))["documents"][0]
    assert rep["representations"][doc.representation_mime]["content"] == doc.text

    pq = tmp_path / "doc.parquet"
    proc = run(
        "inspect",
        "usc",
        doc.document_id,
        "--stage",
        "parquet",
        "-o",
        str(pq),
        endpoint=b.endpoint_url,
    )
    assert proc.returncode == 0, proc.stderr
    assert pq.read_bytes() == b.corpus.objects[doc.parquet_key]


def test_inspect_output_of_a_binary_original(b: LocalBucket, tmp_path: Path) -> None:
    pdf = next(d for d in b.corpus.documents if d.mime_type == "application/pdf")
    out = tmp_path / "pdf.json"
    proc = run(
        "inspect",
        pdf.dataset_id,
        pdf.document_id,
        "-o",
        str(out),
        "--json",
        endpoint=b.endpoint_url,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["content_size"] == len(pdf.raw)
    body = json.loads(out.read_text(encoding="utf-8"))
    assert body["content"] is None and base64.b64decode(body["content_base64"]) == pdf.raw
    assert os.path.getsize(out) > len(pdf.raw)
