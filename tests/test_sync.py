"""The blocking KL3MClient: the documented API, threads, running loops, fork, cleanup."""

from __future__ import annotations

import asyncio
import gc
import gzip
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from kl3m_data_client import Document, KL3MClient, Stage
from kl3m_data_client.models.document import DocumentContent, RepresentationContent


@pytest.fixture
def client(kl3m_corpus_bucket: Any) -> Any:
    with KL3MClient(**kl3m_corpus_bucket.client_kwargs()) as c:
        yield c


def _complete_doc(corpus: Any) -> Any:
    return next(
        d for d in corpus.documents if len(d.stages) == 3 and d.mime_type != "application/pdf"
    )


def test_documented_blocking_api(client: KL3MClient, kl3m_corpus_bucket: Any) -> None:
    corpus = kl3m_corpus_bucket.corpus
    gen = _complete_doc(corpus)
    datasets = client.list_datasets()
    assert set(datasets[gen.dataset_id]) == {Stage.DOCUMENTS, Stage.REPRESENTATIONS, Stage.PARQUET}
    status = client.get_dataset_status(gen.dataset_id)
    assert status.total_documents == len(corpus.in_stage("documents", gen.dataset_id))
    assert status.as_dict() == {
        "dataset_id": gen.dataset_id,
        "document_count": len(corpus.in_stage("documents", gen.dataset_id)),
        "representation_count": len(corpus.in_stage("representations", gen.dataset_id)),
        "parquet_count": len(corpus.in_stage("parquet", gen.dataset_id)),
        "missing_representations": status.missing_representations,
        "missing_parquet": status.missing_parquet,
        "is_complete": status.missing_representations == status.missing_parquet == 0,
    }
    ids = list(client.iter_documents(gen.dataset_id))
    assert ids == client.list_documents(gen.dataset_id)
    assert gen.document_id in ids and not any(i.endswith(".json") for i in ids)
    assert list(client.iter_documents(gen.dataset_id, limit=2)) == ids[:2]

    doc = client.get_document(gen.dataset_id, gen.document_id)
    assert isinstance(doc, Document)
    content = doc.get_content(Stage.DOCUMENTS)
    assert isinstance(content, DocumentContent)
    assert content.content == gen.raw.decode()
    stored = json.loads(corpus.objects[gen.document_key])
    assert content.metadata.identifier == stored["identifier"]
    assert content.metadata.format == gen.mime_type
    assert doc.get_document_content() is content
    rep_content = doc.get_content(Stage.REPRESENTATIONS)
    assert isinstance(rep_content, RepresentationContent)
    assert rep_content.get_text_content(gen.representation_mime) == gen.text
    assert rep_content.get_tokens(corpus.tokenizer_name, gen.representation_mime) == gen.tokens
    assert rep_content.get_all_representations()[0].document_id == gen.identifier
    rep = doc.get_representation()
    assert rep is not None
    assert rep.get_available_mime_types() == [gen.representation_mime]
    assert rep.get_available_tokenizers(gen.representation_mime) == [corpus.tokenizer_name]
    assert rep.token_count(gen.representation_mime, corpus.tokenizer_name) == len(gen.tokens)
    assert rep.summarize()["token_counts"][gen.representation_mime][corpus.tokenizer_name] == len(
        gen.tokens
    )
    parquet = doc.get_parquet()
    assert parquet is not None
    assert parquet.get_representations() == {gen.representation_mime: gen.tokens}
    assert "representations" in parquet.get_columns()
    assert parquet.get_table().num_rows == 1
    assert parquet.get_rows()[0]["identifier"] == gen.identifier
    assert parquet.get_schema().names == ["identifier", "representations"]
    assert parquet.get_column_data("nope") is None
    assert parquet.get_document()["representations"][gen.representation_mime] == gen.tokens
    assert all(
        doc.exists_in_stage(s) for s in (Stage.DOCUMENTS, Stage.REPRESENTATIONS, Stage.PARQUET)
    )
    assert client.get_document(gen.dataset_id, "no/such/doc") is None
    # documented: the id may be passed with its .json suffix
    suffixed = client.get_document(gen.dataset_id, gen.document_id + ".json")
    assert suffixed is not None and suffixed.document_id == gen.document_id
    assert suffixed.get_content(Stage.DOCUMENTS).raw == gen.raw

    many = client.get_documents(gen.dataset_id, [*ids[:5], "missing"])
    assert list(many) == [*ids[:5], "missing"] and many["missing"] is None
    index = client.get_dataset_index(gen.dataset_id)
    assert index is not None, "every generated dataset with representations has an index"
    assert index.get_document_ids() == {
        d.document_id for d in corpus.in_stage("representations", gen.dataset_id)
    }


def test_parquet_save_to_file(client: KL3MClient, kl3m_corpus_bucket: Any, tmp_path: Any) -> None:
    gen = _complete_doc(kl3m_corpus_bucket.corpus)
    doc = client.get_document(gen.dataset_id, gen.document_id, Stage.PARQUET)
    assert doc is not None
    parquet = doc.get_parquet()
    assert parquet is not None
    target = tmp_path / "doc.parquet.zlib"
    assert parquet.save_to_file(str(target)) is True
    assert target.read_bytes() == kl3m_corpus_bucket.corpus.objects[gen.parquet_key]


def test_aws_integration_guide_as_written(
    kl3m_corpus_bucket: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The samples of aws-integration.md, pointed at the local bucket through AWS_ENDPOINT_URL."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", kl3m_corpus_bucket.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    from kl3m_data_client.utils.s3 import (
        check_object_exists,
        decompress_content,
        get_object_bytes,
        get_s3_client,
        get_stage_prefix,
        iter_prefix,
        list_dataset_ids,
    )

    corpus = kl3m_corpus_bucket.corpus
    gen = corpus.documents[0]
    client = KL3MClient(
        aws_access_key_id="your_access_key",
        aws_secret_access_key="your_secret_key",
        region="us-east-1",
    )
    assert gen.dataset_id in client.list_datasets()
    client.close()
    with KL3MClient(bucket_name=kl3m_corpus_bucket.bucket) as named:
        assert named.bucket == kl3m_corpus_bucket.bucket
        assert gen.dataset_id in named.list_datasets()

    s3_client = get_s3_client(
        region="us-east-1",
        aws_access_key_id="your_access_key",
        aws_secret_access_key="your_secret_key",
    )
    try:
        datasets = list_dataset_ids(s3_client, "data.kl3m.ai", Stage.DOCUMENTS)
        assert gen.dataset_id in datasets
        keys = list(iter_prefix(s3_client, "data.kl3m.ai", f"documents/{gen.dataset_id}/"))
        assert gen.document_key in keys
        assert get_stage_prefix(Stage.DOCUMENTS, "usc") == "documents/usc/"
        assert check_object_exists(s3_client, "data.kl3m.ai", gen.document_key) is True
        assert check_object_exists(s3_client, "data.kl3m.ai", "documents/usc/123") is False
        assert get_object_bytes(s3_client, "data.kl3m.ai", "documents/usc/123") is None
        content_bytes = get_object_bytes(s3_client, "data.kl3m.ai", gen.document_key)
        assert content_bytes == corpus.objects[gen.document_key]
        gz_key = next(
            k
            for k, v in corpus.objects.items()
            if k.endswith(".gz") and v[:2] == b"\x1f\x8b" and k not in corpus.corrupt
        )
        gz = get_object_bytes(s3_client, "data.kl3m.ai", gz_key)
        assert gz is not None
        decompressed = decompress_content(gz)
        assert decompressed == gzip.decompress(corpus.objects[gz_key]).decode("utf-8")
        assert '"objects"' in decompressed
        # the guide's base64(zlib(raw)) ``content`` field: the original bytes, for every MIME
        # type; text when they are UTF-8 (an HTML/plain document), bytes for a PDF
        encoded = json.loads(content_bytes)["content"]
        assert decompress_content(encoded, binary=True) == gen.raw
        text_doc = next(d for d in corpus.documents if d.mime_type.startswith("text/"))
        text_encoded = json.loads(corpus.objects[text_doc.document_key])["content"]
        assert decompress_content(text_encoded) == text_doc.raw.decode("utf-8")
        pdf_doc = next(d for d in corpus.documents if d.mime_type == "application/pdf")
        pdf_encoded = json.loads(corpus.objects[pdf_doc.document_key])["content"]
        assert decompress_content(pdf_encoded) == pdf_doc.raw
    finally:
        s3_client.close()


def test_reference_constructor_with_s3_client(kl3m_corpus_bucket: Any) -> None:
    from kl3m_data_client.utils.s3 import get_s3_client

    kw = kl3m_corpus_bucket.client_kwargs()
    s3 = get_s3_client(
        region="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        endpoint_url=kw["endpoint_url"],
    )
    with KL3MClient(bucket=kw["bucket"], s3_client=s3) as client:
        assert client.s3_client is s3
        assert client.config.endpoint_url == kw["endpoint_url"]
        assert kl3m_corpus_bucket.corpus.documents[0].dataset_id in client.list_datasets()
    s3.close()


def test_works_inside_a_running_event_loop(client: KL3MClient, kl3m_corpus_bucket: Any) -> None:
    gen = kl3m_corpus_bucket.corpus.documents[0]

    async def notebook_cell() -> Any:
        return client.get_document(gen.dataset_id, gen.document_id)

    doc = asyncio.run(notebook_cell())
    assert doc is not None and doc.document_id == gen.document_id


def test_eight_threads_at_once(client: KL3MClient, kl3m_corpus_bucket: Any) -> None:
    corpus = kl3m_corpus_bucket.corpus
    gens = corpus.documents[:40]

    def work(i: int) -> list[bool]:
        out = []
        for gen in gens[i::8]:
            doc = client.get_document(gen.dataset_id, gen.document_id)
            out.append(doc is not None and doc.get_content().raw == gen.raw)  # type: ignore[union-attr]
        listed = list(client.iter_documents(gens[0].dataset_id))
        out.append(len(listed) == len(corpus.dataset_documents(gens[0].dataset_id)))
        return out

    with ThreadPoolExecutor(8) as pool:
        results = [r for chunk in pool.map(work, range(8)) for r in chunk]
    assert results and all(results)


def test_stream_documents_sync(client: KL3MClient, kl3m_corpus_bucket: Any) -> None:
    corpus = kl3m_corpus_bucket.corpus
    dataset = corpus.documents[0].dataset_id
    docs = list(client.stream_documents(dataset, Stage.PARQUET))
    assert [d.document_id for d in docs] == client.list_documents(dataset, Stage.PARQUET)
    for d in docs:
        gen = corpus.document(dataset, d.document_id)
        pq = d.get_parquet()
        assert pq is not None and pq.get_representations()[gen.representation_mime] == gen.tokens


def test_abandoned_iterator_leaks_no_task(client: KL3MClient, kl3m_corpus_bucket: Any) -> None:
    corpus = kl3m_corpus_bucket.corpus
    dataset = max(corpus.datasets, key=lambda d: len(corpus.dataset_documents(d)))
    portal = client._get_runner().portal

    def tasks() -> int:
        return portal.call(lambda: len(asyncio.all_tasks()))

    baseline = tasks()
    it = client.stream_documents(dataset)
    assert next(it) is not None
    assert tasks() > baseline  # the producer and its fetches are running
    it.close()
    ids = client.iter_documents(dataset)
    next(ids)
    del ids
    deadline = time.monotonic() + 10  # the clean-up runs on the loop: allow a loaded machine
    while tasks() != baseline and time.monotonic() < deadline:
        threading.Event().wait(0.05)
    assert tasks() == baseline


def test_after_fork(client: KL3MClient, kl3m_corpus_bucket: Any) -> None:
    gen = kl3m_corpus_bucket.corpus.documents[0]
    assert client.get_document(gen.dataset_id, gen.document_id) is not None  # parent's loop runs
    read, write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # child
        ok = b"0"
        try:
            doc = client.get_document(gen.dataset_id, gen.document_id)
            ok = b"1" if doc is not None and doc.get_content().raw == gen.raw else b"0"  # type: ignore[union-attr]
            client.close()
        finally:
            os.write(write, ok)
            os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"
    os.close(read)
    assert status == 0
    assert client.get_document(gen.dataset_id, gen.document_id) is not None  # parent still fine


def test_no_resource_warning_closed_or_forgotten(kl3m_corpus_bucket: Any) -> None:
    kw = kl3m_corpus_bucket.client_kwargs()
    gen = kl3m_corpus_bucket.corpus.documents[0]
    script = textwrap.dedent(
        f"""
        import gc
        from kl3m_data_client import KL3MClient
        kw = {kw!r}
        with KL3MClient(**kw) as c:
            assert c.get_document({gen.dataset_id!r}, {gen.document_id!r}) is not None
            it = c.iter_documents({gen.dataset_id!r})
            next(it)
        c2 = KL3MClient(**kw)
        c2.list_datasets()
        del c2
        gc.collect()
        # a forgotten client whose iterator is still open at exit: closed at exit, no hang
        left_open = KL3MClient(**kw).iter_documents({gen.dataset_id!r})
        next(left_open)
        print("done")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "done"
    assert "Unclosed" not in proc.stderr and "Warning" not in proc.stderr, proc.stderr


# -- iterators outlive their client (issue 15) ---------------------------------------------------
def _loop_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "kl3m-data-client" and t.is_alive())


def test_iterators_keep_their_client_alive(kl3m_corpus_bucket: Any) -> None:
    kw = kl3m_corpus_bucket.client_kwargs()
    corpus = kl3m_corpus_bucket.corpus
    dataset = corpus.documents[0].dataset_id
    with KL3MClient(**kw) as reference:
        ids = reference.list_documents(dataset)
        keys = list(reference.iter_prefix(f"documents/{dataset}/"))
        records = list(reference.iter_jsonl_export(dataset, max_documents=3))
    assert len(ids) > 2 and len(records) == 3
    baseline = _loop_threads()

    # the reference's one-liner: the client is garbage as soon as the call returns
    assert list(KL3MClient(**kw).iter_documents(dataset, limit=2)) == ids[:2]
    gc.collect()
    assert _loop_threads() == baseline  # ... and its loop stopped once the iterator ended

    def documents() -> Iterator[str]:
        client = KL3MClient(**kw)
        return client.iter_documents(dataset)

    def prefix() -> Iterator[str]:
        return KL3MClient(**kw).iter_prefix(f"documents/{dataset}/")

    def objects() -> Iterator[Any]:
        return KL3MClient(**kw).iter_objects(f"documents/{dataset}/")

    def export_records() -> Iterator[dict[str, Any]]:
        return KL3MClient(**kw).iter_jsonl_export(dataset, max_documents=3)

    cases: list[tuple[Any, list[Any]]] = [
        (documents, ids),
        (prefix, keys),
        (lambda: (o.key for o in objects()), keys),
        (export_records, records),
    ]
    for make, expected in cases:
        it = make()
        gc.collect()  # the client is unreachable except through the iterator
        first = next(it)
        gc.collect()
        assert [first, *it] == expected
        del it
        gc.collect()
        assert _loop_threads() == baseline


def test_iterator_in_a_collected_cycle_with_its_client(kl3m_corpus_bucket: Any) -> None:
    """gc calls the client's finalizer before it closes the iterator: the loop must wait."""
    kw = kl3m_corpus_bucket.client_kwargs()
    dataset = kl3m_corpus_bucket.corpus.documents[0].dataset_id
    baseline = _loop_threads()

    class Pipeline:
        def __init__(self) -> None:
            self.me = self  # a reference cycle: only the cyclic gc frees it
            self.client = KL3MClient(**kw)
            self.ids = self.client.iter_documents(dataset)

    pipeline = Pipeline()
    assert next(pipeline.ids)
    portal = pipeline.client._get_runner().portal
    del pipeline
    gc.collect()
    assert _loop_threads() == baseline  # closed after the iterator was, without an error
    with pytest.raises(RuntimeError, match="not running"):
        portal.call(lambda: None)


def test_iterating_after_close_raises_client_closed(
    client: KL3MClient, kl3m_corpus_bucket: Any
) -> None:
    from kl3m_data_client import ClientClosedError

    dataset = kl3m_corpus_bucket.corpus.documents[0].dataset_id
    it = client.iter_documents(dataset)
    assert next(it)
    client.close()
    with pytest.raises(ClientClosedError):
        list(it)
    with pytest.raises(ClientClosedError):
        list(client.iter_documents(dataset))


# -- closing early lets the async source clean up (issue 12) ------------------------------------
def test_closing_a_blocking_iterator_waits_for_the_sources_cleanup() -> None:
    from anyio.from_thread import start_blocking_portal

    from kl3m_data_client._bridge import iterate_in_portal

    events: list[str] = []

    async def source() -> Any:
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            events.append("closing")
            await asyncio.sleep(0)  # a cancelled teardown would be cut short here
            await asyncio.sleep(0)
            events.append("closed")

    with start_blocking_portal("asyncio") as portal:
        baseline = portal.call(lambda: len(asyncio.all_tasks()))
        it = iterate_in_portal(portal, source, buffer=4)
        assert [next(it), next(it)] == [0, 1]
        it.close()
        assert events == ["closing", "closed"]
        assert portal.call(lambda: len(asyncio.all_tasks())) == baseline


@pytest.fixture(scope="module")
def big_bucket(kl3m_server: Any) -> Iterator[Any]:
    """2,100 tiny objects in dataset ``big``: three listing pages, more than a buffer."""
    bucket = kl3m_server.create_bucket(
        objects={f"documents/big/{i:05d}.json": b"{}" for i in range(2100)}
    )
    try:
        yield bucket
    finally:
        bucket.close()


def test_closing_early_cancels_the_listing_look_ahead(big_bucket: Any) -> None:
    """The next listing page is requested while the first is consumed; closing the iterator
    cancels that request and awaits it before close() returns: nothing is left running."""
    from kl3m_data_client.testing._faults import Fault, FaultPlan, RequestInfo, run_fault_proxy

    look_ahead = threading.Event()

    def continued(info: RequestInfo) -> bool:
        if "continuation-token" in info.query:
            look_ahead.set()
            return True
        return False

    plan = FaultPlan(rate=1.0, kinds={Fault.STALL}, select=continued, stall_seconds=120)
    with run_fault_proxy(big_bucket.endpoint_url, plan) as proxy:
        kw = {**big_bucket.client_kwargs(), "endpoint_url": proxy.endpoint_url}
        with KL3MClient(**kw, read_timeout=300) as client:
            portal = client._get_runner().portal

            def tasks() -> int:
                return portal.call(lambda: len(asyncio.all_tasks()))

            baseline = tasks()
            ids = client.iter_documents("big")
            assert next(ids) == "00000"
            assert look_ahead.wait(60)  # the second page is in flight (and stalls)
            ids.close()
            assert tasks() == baseline
            assert proxy.fired[Fault.STALL] == 1
            assert client.list_documents("big", limit=3) == ["00000", "00001", "00002"]


def test_close_while_an_iterator_waits_on_a_full_buffer(big_bucket: Any) -> None:
    """An explicit close() must not wait for a producer that nobody will ever drain."""
    from kl3m_data_client import ClientClosedError

    client = KL3MClient(**big_bucket.client_kwargs())
    ids = client.iter_documents("big")
    assert next(ids) == "00000"
    receive = ids.gi_frame.f_locals["receive"]  # type: ignore[attr-defined]
    for _ in range(600):  # until the producer is blocked on the full buffer (2,100 > 1,024)
        if receive.statistics().tasks_waiting_send:
            break
        threading.Event().wait(0.05)
    assert receive.statistics().tasks_waiting_send == 1
    client.close()  # returned: the producer was cancelled
    with pytest.raises(ClientClosedError):
        list(ids)  # (the ids already handed over to this thread come first)


# -- user callbacks never run on the loop thread (issue 12) --------------------------------------
def _jsonl_lines(report: Any) -> list[bytes]:
    return [line for p in report.parts for line in Path(p.path).read_bytes().splitlines()]


def test_export_progress_runs_in_the_calling_thread(
    client: KL3MClient, kl3m_corpus_bucket: Any, tmp_path: Path
) -> None:
    dataset = kl3m_corpus_bucket.corpus.documents[0].dataset_id
    loop_thread = client._get_runner().portal.call(threading.get_ident)
    me = threading.get_ident()
    assert loop_thread != me
    calls: list[tuple[int, Any]] = []

    def progress(snapshot: Any) -> None:
        calls.append((threading.get_ident(), snapshot))
        if len(calls) == 1:
            # a blocking call from inside the callback: impossible on the loop thread
            assert dataset in client.list_datasets()

    report = client.export(dataset, tmp_path / "out", format="jsonl", progress=progress)
    assert report.exported == len(kl3m_corpus_bucket.corpus.dataset_documents(dataset))
    assert calls and {ident for ident, _ in calls} == {me}
    last = calls[-1][1]
    assert last.done and last.exported == report.exported


def test_export_callback_exception_stops_the_export_and_is_raised(
    client: KL3MClient, kl3m_corpus_bucket: Any, tmp_path: Path
) -> None:
    dataset = kl3m_corpus_bucket.corpus.documents[0].dataset_id

    class StopNow(Exception):
        pass

    def progress(snapshot: Any) -> None:
        raise StopNow("from the callback")

    dest = tmp_path / "out"
    with pytest.raises(StopNow, match="from the callback"):
        client.export(dataset, dest, format="jsonl", compression="none", progress=progress)
    # the loop is fine, and a rerun resumes to the same output as a clean run
    resumed = client.export(dataset, dest, format="jsonl", compression="none")
    clean = client.export(dataset, tmp_path / "clean", format="jsonl", compression="none")
    assert resumed.errors == clean.errors == 0
    assert _jsonl_lines(resumed) == _jsonl_lines(clean) and resumed.exported == clean.exported


def test_relayed_callback_never_stalls_the_loop_and_gets_the_latest() -> None:
    from anyio.from_thread import start_blocking_portal

    from kl3m_data_client._bridge import call_relaying

    started = threading.Event()
    finished = threading.Event()
    calls: list[tuple[int, int]] = []

    async def work(relay: Any) -> str:
        relay(0)
        await asyncio.to_thread(started.wait, 60)  # the callback runs now (off the loop)
        for i in range(1, 100):
            relay(i)
            await asyncio.sleep(0)
        finished.set()
        return "result"

    def slow_callback(i: int) -> None:
        started.set()
        calls.append((threading.get_ident(), i))
        if len(calls) == 1:
            # blocked here, the coroutine still runs to its end on the loop
            assert finished.wait(60)

    with start_blocking_portal("asyncio") as portal:
        loop_thread = portal.call(threading.get_ident)
        assert call_relaying(portal, work, slow_callback) == "result"
    assert [i for _, i in calls] == [0, 99]  # the rest coalesced into the latest
    assert {t for t, _ in calls} == {threading.get_ident()} != {loop_thread}


def test_relayed_callback_exception_cancels_the_work_and_is_raised() -> None:
    from anyio.from_thread import start_blocking_portal

    from kl3m_data_client._bridge import call_relaying

    events: list[str] = []

    async def work(relay: Any) -> None:
        try:
            relay("first")
            await asyncio.Event().wait()  # until cancelled
        finally:
            events.append("cancelled")

    def failing(_: str) -> None:
        raise LookupError("raised by the callback")

    with start_blocking_portal("asyncio") as portal:
        baseline = portal.call(lambda: len(asyncio.all_tasks()))
        with pytest.raises(LookupError, match="raised by the callback"):
            call_relaying(portal, work, failing)
        assert events == ["cancelled"]  # the work ended before the exception reached us
        assert portal.call(lambda: len(asyncio.all_tasks())) == baseline
