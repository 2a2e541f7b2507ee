"""AsyncKL3MClient against the local bucket (moto server over real HTTP)."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import pytest

from kl3m_data_client import (
    AsyncKL3MClient,
    ClientClosedError,
    CorruptObjectError,
    InvalidInputError,
    NotFoundError,
    SizeLimitExceededError,
    Stage,
)
from kl3m_data_client._formats import Limits
from kl3m_data_client.models.document import DocumentContent, ParquetContent

pytestmark = pytest.mark.anyio

STAGES = [Stage.DOCUMENTS, Stage.REPRESENTATIONS, Stage.PARQUET]


def _ids(corpus: Any, dataset: str, stage: Stage) -> list[str]:
    return [d.document_id for d in corpus.in_stage(stage.value, dataset)]


@pytest.fixture
async def client(kl3m_corpus_bucket: Any) -> Any:
    async with AsyncKL3MClient(**kl3m_corpus_bucket.client_kwargs()) as c:
        yield c


async def test_list_datasets_matches_corpus(
    client: AsyncKL3MClient, kl3m_corpus_bucket: Any
) -> None:
    corpus = kl3m_corpus_bucket.corpus
    datasets = await client.list_datasets()
    assert sorted(datasets) == sorted(corpus.datasets)
    for name, stages in datasets.items():
        for stage in STAGES:
            expected = any(k.startswith(f"{stage.value}/{name}/") for k in corpus.objects)
            assert stages[stage] is expected, (name, stage)
    # the corpus has an incomplete dataset: some stage missing somewhere
    assert any(not all(s.values()) for s in datasets.values())


async def test_dataset_status_counts(client: AsyncKL3MClient, kl3m_corpus_bucket: Any) -> None:
    corpus = kl3m_corpus_bucket.corpus
    for dataset in corpus.datasets:
        if dataset == "dirty":
            continue
        status = await client.get_dataset_status(dataset)
        counts = [len(_ids(corpus, dataset, s)) for s in STAGES]
        assert [
            status.document_count,
            status.representation_count,
            status.parquet_count,
        ] == counts
        assert status.is_complete is (counts[0] == counts[1] == counts[2])
        assert status.as_dict()["dataset_id"] == dataset


async def test_iter_documents_every_stage_in_listing_order(
    client: AsyncKL3MClient, kl3m_corpus_bucket: Any
) -> None:
    corpus = kl3m_corpus_bucket.corpus
    dataset = corpus.documents[0].dataset_id
    for stage in STAGES:
        ids = [i async for i in client.iter_documents(dataset, stage)]
        expected = sorted(
            _ids(corpus, dataset, stage), key=lambda i: corpus.document(dataset, i).key(stage.value)
        )
        assert ids == expected, stage
    limited = [i async for i in client.iter_documents(dataset, limit=3)]
    assert limited == (await client.list_documents(dataset))[:3]
    assert [i async for i in client.iter_documents(dataset, limit=0)] == []


async def test_key_prefix_narrows_to_a_folder(
    client: AsyncKL3MClient, kl3m_corpus_bucket: Any
) -> None:
    corpus = kl3m_corpus_bucket.corpus
    nested = next(d for d in corpus.documents if "/" in d.document_id)
    folder = nested.document_id.split("/")[0]
    ids = await client.list_documents(nested.dataset_id, key_prefix=f"/{folder}/")
    expected = [
        i for i in _ids(corpus, nested.dataset_id, Stage.DOCUMENTS) if i.startswith(folder + "/")
    ]
    assert sorted(ids) == sorted(expected) and nested.document_id in ids
    status = await client.get_dataset_status(nested.dataset_id, key_prefix=folder)
    assert status.document_count == len(expected)


async def test_get_document_every_stage_and_id_shape(
    client: AsyncKL3MClient, kl3m_corpus_bucket: Any
) -> None:
    corpus = kl3m_corpus_bucket.corpus
    awkward = [d for d in corpus.documents if any(c in d.document_id for c in " []+=%")]
    assert awkward, "the corpus must hold awkward ids"
    binary = [d for d in corpus.documents if d.mime_type == "application/pdf"]
    assert binary
    for gen in awkward[:5] + binary[:3] + corpus.documents[:5]:
        doc = await client.get_document(gen.dataset_id, gen.document_id)
        assert doc is not None, gen.document_id
        content = doc.content
        assert isinstance(content, DocumentContent)
        if gen.mime_type == "application/pdf":
            assert content.content == gen.raw and isinstance(content.content, bytes)
        else:
            assert content.content == gen.raw.decode("utf-8")
        assert content.verify() is True
        assert content.metadata.format == gen.mime_type
        if "representations" in gen.stages:
            rep = await doc.get_representation()
            assert rep is not None
            assert rep.get_content(gen.representation_mime) == gen.text
            assert rep.get_tokens(gen.representation_mime) == gen.tokens
        else:
            assert await doc.get_representation() is None
            assert await doc.exists_in_stage(Stage.REPRESENTATIONS) is False
        if "parquet" in gen.stages:
            pq = await doc.get_parquet()
            assert isinstance(pq, ParquetContent)
            assert pq.get_representations() == {gen.representation_mime: gen.tokens}


async def test_get_document_fetched_from_parquet_needs_no_second_request(
    client: AsyncKL3MClient, kl3m_corpus_bucket: Any
) -> None:
    gen = next(d for d in kl3m_corpus_bucket.corpus.documents if "parquet" in d.stages)
    doc = await client.get_document(gen.dataset_id, gen.document_id, Stage.PARQUET)
    assert doc is not None and doc.is_loaded(Stage.PARQUET)
    assert not doc.is_loaded(Stage.DOCUMENTS)
    await client.aclose()  # a second request would now fail
    parquet = await doc.get_parquet()
    assert (
        parquet is not None and parquet.get_representations()[gen.representation_mime] == gen.tokens
    )
    with pytest.raises(ClientClosedError):
        await doc.get_content(Stage.DOCUMENTS)


async def test_missing_document_is_none(client: AsyncKL3MClient, kl3m_corpus_bucket: Any) -> None:
    dataset = kl3m_corpus_bucket.corpus.documents[0].dataset_id
    assert await client.get_document(dataset, "no/such/document") is None
    assert await client.get_document("no-such-dataset", "x") is None
    assert await client.exists(dataset, "no/such/document") is False


async def test_get_documents_concurrent_dict(
    client: AsyncKL3MClient, kl3m_corpus_bucket: Any
) -> None:
    gens = kl3m_corpus_bucket.corpus.dataset_documents(
        kl3m_corpus_bucket.corpus.documents[0].dataset_id
    )
    ids = [g.document_id for g in gens[:20]] + ["missing-one"]
    docs = await client.get_documents(gens[0].dataset_id, ids)
    assert list(docs) == ids
    assert docs["missing-one"] is None
    for g in gens[:20]:
        doc = docs[g.document_id]
        assert doc is not None and isinstance(doc.content, DocumentContent)
        assert hashlib.blake2b(doc.content.raw).hexdigest() == g.blake2b


async def test_stream_documents_order_content_and_given_ids(
    client: AsyncKL3MClient, kl3m_corpus_bucket: Any
) -> None:
    corpus = kl3m_corpus_bucket.corpus
    dataset = corpus.documents[0].dataset_id
    listed = await client.list_documents(dataset, Stage.REPRESENTATIONS)
    streamed = [d async for d in client.stream_documents(dataset, Stage.REPRESENTATIONS)]
    assert [d.document_id for d in streamed] == listed
    for doc in streamed:
        gen = corpus.document(dataset, doc.document_id)
        rep = await doc.get_representation()
        assert rep is not None and rep.get_tokens(gen.representation_mime) == gen.tokens
    wanted = [*list(reversed(listed[:7])), "nope"]
    got = [d.document_id async for d in client.stream_documents(dataset, document_ids=wanted)]
    assert got == wanted[:-1]
    with pytest.raises(NotFoundError) as err:
        async for _ in client.stream_documents(dataset, document_ids=wanted, skip_missing=False):
            pass
    assert "nope" in str(err.value)
    limited = [d async for d in client.stream_documents(dataset, limit=4)]
    assert [d.document_id for d in limited] == (await client.list_documents(dataset))[:4]


async def test_stream_bounds_requests_in_flight_and_backpressure(kl3m_corpus_bucket: Any) -> None:
    from aiobotocore.session import AioSession

    session = AioSession()
    state = {"inflight": 0, "peak": 0, "sent": 0}

    def before(**_: Any) -> None:
        state["inflight"] += 1
        state["sent"] += 1
        state["peak"] = max(state["peak"], state["inflight"])

    idle = asyncio.Event()  # set when no GetObject is in flight

    def after(**_: Any) -> None:
        state["inflight"] -= 1
        if state["inflight"] == 0:
            idle.set()

    session.register("before-send.s3.GetObject", before)
    session.register("after-call.s3.GetObject", after)
    corpus = kl3m_corpus_bucket.corpus
    dataset = max(corpus.datasets, key=lambda d: len(corpus.dataset_documents(d)))
    total = len(corpus.dataset_documents(dataset))
    assert total > 20
    # counted by botocore's events, so on the aiobotocore plane (the window and the slots are
    # the client's and the store's, above either plane)
    async with AsyncKL3MClient(
        **kl3m_corpus_bucket.client_kwargs(),
        max_concurrency=4,
        session=session,
        data_plane="aiobotocore",
    ) as c:
        stream = c.stream_documents(dataset)
        first = await stream.__anext__()
        assert first is not None
        # a consumer that takes nothing more: fetching must stop at the window. Wait for the
        # event "nothing in flight although more than the window is left"; a stream without
        # backpressure keeps sending until the dataset is done instead.
        window = 2 * 4
        while True:
            idle.clear()
            if state["inflight"] == 0 and state["sent"] >= window:
                break
            await idle.wait()
        for _ in range(50):  # let every ready callback run: none may start a request
            await asyncio.sleep(0)
        assert state["inflight"] == 0
        assert state["sent"] <= window + 1 < total
        rest = [d async for d in stream]
    assert 1 + len(rest) == total
    assert state["peak"] <= 4
    assert state["sent"] == total


@pytest.mark.parametrize("plane", ["obstore", "aiobotocore"])
async def test_closing_a_stream_early_cancels_its_requests(
    kl3m_corpus_bucket: Any, plane: str
) -> None:
    corpus = kl3m_corpus_bucket.corpus
    dataset = max(corpus.datasets, key=lambda d: len(corpus.dataset_documents(d)))
    async with AsyncKL3MClient(
        **kl3m_corpus_bucket.client_kwargs(), max_concurrency=8, data_plane=plane
    ) as c:
        before = {t for t in asyncio.all_tasks()}
        stream = c.stream_documents(dataset)
        await stream.__anext__()
        await stream.aclose()  # type: ignore[attr-defined]
        await asyncio.sleep(0)
        leftover = {t for t in asyncio.all_tasks() - before if not t.done()}
        assert leftover == set()


async def test_dataset_index_both_encodings(
    client: AsyncKL3MClient, kl3m_corpus_bucket: Any
) -> None:
    corpus = kl3m_corpus_bucket.corpus
    raw_kinds = set()
    for key, expected in corpus.indexes.items():
        name = key[len("index/") : -len(".json.gz")]
        dataset, _, prefix_part = name.partition("-")
        if dataset not in corpus.datasets:
            continue
        raw_kinds.add(corpus.objects[key][:2] == b"\x1f\x8b")
        if prefix_part:
            continue
        index = await client.get_dataset_index(dataset)
        assert index is not None
        assert index.objects == expected
        assert index.metadata.count == len(expected)
        assert all(corpus.document(dataset, i) for i in index.get_document_ids())
    assert raw_kinds == {True, False}, "both index encodings must be exercised"
    assert await client.get_dataset_index("no-such-dataset") is None


@pytest.mark.parametrize(
    ("dataset", "document_id"),
    [
        ("", "x"),
        ("a//b", "x"),
        ("usc/../x", "x"),
        ("usc", ""),
        ("usc", "/abs"),
        ("usc", "a/../b"),
        ("usc", "a//b"),
        ("..", "x"),
        ("usc", "x\x00y"),
    ],
)
async def test_invalid_input_is_refused(
    client: AsyncKL3MClient, dataset: str, document_id: str
) -> None:
    with pytest.raises(InvalidInputError):
        await client.get_document(dataset, document_id)


async def test_corrupt_objects_raise_typed_errors_naming_the_key(kl3m_corpus_bucket: Any) -> None:
    corpus = kl3m_corpus_bucket.corpus
    assert corpus.corrupt
    limits = Limits(max_object_bytes=64 * 1024 * 1024, max_inflated_bytes=32 * 1024 * 1024)
    checked = 0
    async with AsyncKL3MClient(**kl3m_corpus_bucket.client_kwargs(), limits=limits) as c:
        for key, reason in corpus.corrupt.items():
            if key.startswith("index/"):
                with pytest.raises(CorruptObjectError) as err:
                    await c.get_dataset_index(key[len("index/") : -len(".json.gz")])
                assert err.value.key == key
                checked += 1
                continue
            stage_value, dataset, doc_path = key.split("/", 2)
            if ".." in doc_path.split("/") or stage_value not in (
                "documents",
                "representations",
                "parquet",
            ):
                continue
            doc_id = doc_path[:-5] if doc_path.endswith(".json") else doc_path
            if "blake2b" in reason:  # decodes; the integrity check says no
                content = await c.fetch_content(dataset, doc_id, Stage(stage_value))
                assert isinstance(content, DocumentContent) and content.verify() is False
                continue
            if "schema" in reason:  # a readable parquet file without token ids
                from kl3m_data_client._formats import parquet_tokens

                with pytest.raises(CorruptObjectError, match="representations"):
                    parquet_tokens(key, kl3m_corpus_bucket.corpus.objects[key])
                continue
            with pytest.raises(CorruptObjectError) as err:
                await c.fetch_content(dataset, doc_id, Stage(stage_value))
            assert err.value.key == key, reason
            assert key in str(err.value)
            if "bomb" in reason:
                assert isinstance(err.value, SizeLimitExceededError)
            checked += 1
    assert checked >= 4


async def test_missing_bucket_is_not_found(kl3m_corpus_bucket: Any) -> None:
    kwargs = dict(kl3m_corpus_bucket.client_kwargs(), bucket="no-such-bucket.kl3m")
    async with AsyncKL3MClient(**kwargs) as c:
        with pytest.raises(NotFoundError, match=r"no-such-bucket\.kl3m"):
            await c.list_datasets()


async def test_pool_is_sized_to_max_concurrency(kl3m_corpus_bucket: Any) -> None:
    async with AsyncKL3MClient(**kl3m_corpus_bucket.client_kwargs(), max_concurrency=37) as c:
        s3 = await c._store.client()
        from kl3m_data_client._store import LISTING_CONNECTIONS

        assert s3.meta.config.max_pool_connections == 37 + LISTING_CONNECTIONS
        assert s3.meta.config.s3["addressing_style"] == "path"
    assert c.closed
    with pytest.raises(ClientClosedError):
        await c.list_datasets()


async def test_user_agent_fixed_and_ours(kl3m_corpus_bucket: Any) -> None:
    """Every request names this client; the session's own User-Agent extra is kept.

    The header is built once per process (botocore rebuilds it for every request otherwise).
    """
    import obstore
    from aiobotocore.session import AioSession

    from kl3m_data_client import __version__
    from kl3m_data_client.testing._faults import FaultPlan, FaultProxy, RequestInfo

    agents: list[str] = []

    def record(info: RequestInfo) -> None:
        agents.append(next(v for k, v in info.headers.items() if k.lower() == "user-agent"))

    session = AioSession()
    session.user_agent_extra = "my-pipeline/7"
    dataset = kl3m_corpus_bucket.corpus.documents[0].dataset_id
    async with FaultProxy(
        kl3m_corpus_bucket.endpoint_url, FaultPlan(0.0, credential_check=record)
    ) as p:
        kwargs = {**kl3m_corpus_bucket.client_kwargs(), "endpoint_url": p.endpoint_url}
        async with AsyncKL3MClient(**kwargs, session=session) as client:
            ids = await client.list_documents(dataset, limit=3)
            for doc_id in ids:
                await client.get_document(dataset, doc_id)
    assert len(agents) >= 4
    # one User-Agent for aiobotocore's requests; the obstore plane's GETs add obstore/<version>
    botocore_agent = next(a for a in agents if " obstore/" not in a)
    obstore_agent = botocore_agent.replace(" my-pipeline/7", f" obstore/{obstore.__version__}")
    assert set(agents) == {botocore_agent, obstore_agent + " my-pipeline/7"}, set(agents)
    assert botocore_agent.startswith(f"kl3m-data-client/{__version__} md/Botocore#")
    assert botocore_agent.endswith(" my-pipeline/7")


async def test_bad_listing_arguments_are_input_errors(client: AsyncKL3MClient) -> None:
    """The seam checks its inputs itself (botocore's parameter validation is off)."""
    for bad in (None, 7, b"documents/"):
        with pytest.raises(InvalidInputError, match="prefix"):
            await client.iter_prefix(bad).__anext__()  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="start_after"):
        await client.iter_objects("documents/", start_after=3).__anext__()  # type: ignore[arg-type]
    for key in ("", None):
        with pytest.raises(InvalidInputError, match="key"):
            await client._store.get(key)  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError, match="key"):
            await client._store.head(key)  # type: ignore[arg-type]


def test_config_with_other_options_is_refused() -> None:
    from kl3m_data_client import ClientConfig, KL3MClient

    config = ClientConfig(bucket="b", max_concurrency=4)
    # alone, the config is taken as it is
    assert AsyncKL3MClient(config=config).config is config
    with KL3MClient(config=config) as blocking:
        assert blocking.config is config
    # with other options it would silently drop them: refused, naming them
    with pytest.raises(InvalidInputError, match="max_concurrency"):
        AsyncKL3MClient(config=config, max_concurrency=8)
    with pytest.raises(InvalidInputError, match="bucket, region"):
        AsyncKL3MClient("other", "eu-west-1", config=config)
    with pytest.raises(InvalidInputError, match="endpoint_url"):
        KL3MClient(config=config, endpoint_url="http://127.0.0.1:9")
    with pytest.raises(InvalidInputError, match="verbose"):
        KL3MClient(config=config, verbose=True)
