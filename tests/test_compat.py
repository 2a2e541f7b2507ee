"""Drop-in compatibility with kl3m-data-client 0.2.0: import paths, ``utils.s3``,
``KL3MClient(s3_client=boto3_client)``, models, ``Document`` and sub-path dataset ids.

Everything runs against the local bucket over HTTP (or moto's in-process ``mock_aws``
for the one test that is about it).
"""

from __future__ import annotations

import gzip
import importlib
import json
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import kl3m_data_client
from kl3m_data_client import BucketNotFoundError, Document, KL3MClient, KL3MError, Stage
from kl3m_data_client._errors import is_per_object
from kl3m_data_client.models.common import ProcessingResult
from kl3m_data_client.models.document import DocumentContent, RepresentationContent
from kl3m_data_client.models.stage import DatasetIndex, IndexMetadata
from kl3m_data_client.testing import LocalBucket, encode_document_object
from kl3m_data_client.utils import s3 as s3u


def _s3(bucket: LocalBucket, **kw: Any) -> Any:
    return s3u.get_s3_client(
        "testing", "testing", None, "us-east-1", endpoint_url=bucket.endpoint_url, **kw
    )


def _complete_doc(corpus: Any) -> Any:
    return next(
        d for d in corpus.documents if len(d.stages) == 3 and d.mime_type != "application/pdf"
    )


# -- import paths --------------------------------------------------------------------------
def test_reference_import_paths_re_export_the_real_objects() -> None:
    from kl3m_data_client._sync import Document as RealDocument
    from kl3m_data_client._sync import KL3MClient as RealClient

    client_mod = importlib.import_module("kl3m_data_client.client")
    document_mod = importlib.import_module("kl3m_data_client.document")
    assert client_mod.KL3MClient is RealClient is kl3m_data_client.KL3MClient
    assert document_mod.Document is RealDocument is kl3m_data_client.Document
    assert document_mod.get_object_bytes is s3u.get_object_bytes
    index_mod = importlib.import_module("kl3m_data_client.operations.index")
    assert callable(index_mod.get_dataset_index) and callable(index_mod.build_dataset_index)
    pq = importlib.import_module("kl3m_data_client.utils.parquet_utils")
    assert pq.DEFAULT_TOKENIZER_NAME == "alea-institute/kl3m-004-128k-cased"
    for name in ("console", "parallel", "boto_types"):
        importlib.import_module(f"kl3m_data_client.utils.{name}")
    cli = importlib.import_module("kl3m_data_client.cli.commands")
    from kl3m_data_client.cli import main

    assert cli.main is main
    assert cli.parse_args(["list"]).command == "list"
    for name in (
        "put_object_bytes",
        "put_object_path",
        "get_object",
        "check_prefix_exists",
        "list_common_prefixes",
        "convert_key_to_stage",
        "get_document_key",
        "get_representation_key",
        "get_parquet_key",
        "get_index_key",
        "check_stage_exists",
        "get_s3_config",
        "DEFAULT_TIMEOUT",
    ):
        assert hasattr(s3u, name), name


def test_parallel_executor_collects_results_and_errors() -> None:
    from kl3m_data_client.utils.parallel import ParallelExecutor

    def work(i: int) -> int:
        if i == 3:
            raise ValueError("three")
        return i * 10

    results, errors = ParallelExecutor(work, max_workers=4).process_batch([1, 2, 3, 4])
    assert results == [10, 20, 40]
    assert [str(e) for e in errors] == ["three"]


# -- utils.s3 ------------------------------------------------------------------------------
def test_get_s3_client_positional_order_and_config(kl3m_corpus_bucket: LocalBucket) -> None:
    config = s3u.get_s3_config(pool_size=7, read_timeout=33, retry_count=2)
    s3 = s3u.get_s3_client(
        "AKIAEXAMPLE", "secret", None, "eu-west-1", config, endpoint_url="http://127.0.0.1:9"
    )
    try:
        assert s3.meta.region_name == "eu-west-1"
        assert s3._request_signer._credentials.access_key == "AKIAEXAMPLE"
        assert s3.meta.config.max_pool_connections == 7
        assert s3.meta.config.read_timeout == 33
        assert s3.meta.config.s3["addressing_style"] == "path"
    finally:
        s3.close()
    aliased = s3u.get_s3_client(region="us-west-2", endpoint_url="http://127.0.0.1:9")
    assert aliased.meta.region_name == "us-west-2"
    aliased.close()


def test_listing_helpers(kl3m_corpus_bucket: LocalBucket) -> None:
    corpus = kl3m_corpus_bucket.corpus
    bucket = kl3m_corpus_bucket.bucket
    s3 = _s3(kl3m_corpus_bucket)
    try:
        expected_ds = sorted(
            {k.split("/")[1] for k in corpus.objects if k.startswith("documents/")}
        )
        assert sorted(s3u.list_dataset_ids(s3, bucket)) == expected_ds  # stage defaults
        assert sorted(s3u.list_dataset_ids(s3, bucket, Stage.PARQUET)) == sorted(
            {k.split("/")[1] for k in corpus.objects if k.startswith("parquet/")}
        )
        assert set(s3u.list_common_prefixes(s3, bucket, "")) >= {"documents/", "index/"}
        usc = sorted(k for k in corpus.objects if k.startswith("documents/usc/"))
        assert list(s3u.iter_prefix(s3, bucket, "documents/usc/", page_size=3)) == usc
        assert list(s3u.iter_prefix(s3, bucket, "documents/usc/", 2, 5)) == usc[:5]
        assert list(s3u.iter_prefix(s3, bucket, "documents/usc/", max_items=0)) == []
        assert s3u.check_prefix_exists(s3, bucket, "documents/usc/") is True
        assert s3u.check_prefix_exists(s3, bucket, "documents/nope/") is False
        key = usc[0]
        assert s3u.check_stage_exists(s3, bucket, key, Stage.DOCUMENTS) is True
        assert s3u.get_object(s3, bucket, key) == corpus.objects[key].decode("utf-8")
        assert s3u.get_object(s3, bucket, "documents/usc/missing.json") is None
    finally:
        s3.close()


def test_decoding_failures_are_typed(kl3m_bucket: LocalBucket) -> None:
    from kl3m_data_client import CorruptObjectError

    with pytest.raises(CorruptObjectError) as raw:
        s3u.decompress_content(b"\xff\xfe not gzip")
    assert isinstance(raw.value.__cause__, UnicodeDecodeError)
    with pytest.raises(CorruptObjectError):
        s3u.decompress_content("not base64 !")
    s3 = _s3(kl3m_bucket)
    try:
        s3u.put_object_bytes(s3, kl3m_bucket.bucket, "scratch/latin1.txt", b"caf\xe9")
        with pytest.raises(CorruptObjectError) as text:
            s3u.get_object(s3, kl3m_bucket.bucket, "scratch/latin1.txt")
        assert text.value.key == "scratch/latin1.txt"
    finally:
        s3.close()


def test_key_helpers() -> None:
    assert s3u.convert_key_to_stage("documents/usc/a/x.json", Stage.PARQUET) == "parquet/usc/a/x"
    assert s3u.get_parquet_key("representations/usc/x.json") == "parquet/usc/x"
    assert s3u.get_document_key("parquet/usc/a/x") == "documents/usc/a/x.json"
    assert s3u.get_representation_key("documents/usc/x.json") == "representations/usc/x.json"
    assert s3u.get_index_key("usc") == "index/usc.json.gz"
    assert s3u.get_stage_prefix(Stage.DOCUMENTS, "usc/title-01") == "documents/usc/title-01/"
    with pytest.raises(ValueError):
        s3u.convert_key_to_stage("nostage", Stage.PARQUET)


def test_writes_and_index_round_trip(kl3m_bucket: LocalBucket, tmp_path: Path) -> None:
    from kl3m_data_client.operations.index import build_dataset_index, get_dataset_index

    s3 = s3u.get_s3_client(
        "testing", "testing", None, "us-east-1", endpoint_url=kl3m_bucket.endpoint_url
    )
    bucket = kl3m_bucket.bucket
    try:
        assert s3u.put_object_bytes(s3, bucket, "scratch/a.txt", "héllo") is True
        assert s3u.get_object_bytes(s3, bucket, "scratch/a.txt") == "héllo".encode()
        (tmp_path / "b.bin").write_bytes(b"\x00\x01")
        assert s3u.put_object_path(s3, bucket, "scratch/b.bin", tmp_path / "b.bin") is True
        assert s3u.get_object_bytes(s3, bucket, "scratch/b.bin") == b"\x00\x01"

        dataset = kl3m_bucket.corpus.documents[0].dataset_id
        assert build_dataset_index(s3, bucket, dataset, "zz-no-such-folder") is True
        empty = get_dataset_index(s3, bucket, dataset, "zz-no-such-folder")
        assert empty is not None and empty.objects == [] and empty.metadata.count == 0
        assert get_dataset_index(s3, bucket, "no-such-dataset") is None
    finally:
        s3.close()


def test_botocore_errors_become_typed_errors_with_their_cause(
    kl3m_corpus_bucket: LocalBucket,
) -> None:
    from botocore.exceptions import ClientError, EndpointConnectionError

    s3 = _s3(kl3m_corpus_bucket)
    try:
        with pytest.raises(BucketNotFoundError) as listing:
            list(s3u.iter_prefix(s3, "no-such-bucket-x", "documents/"))
        assert isinstance(listing.value.__cause__, ClientError)
        assert not is_per_object(listing.value)
        with pytest.raises(BucketNotFoundError) as got:
            s3u.get_object_bytes(s3, "no-such-bucket-x", "documents/usc/x.json")
        assert isinstance(got.value.__cause__, ClientError)
    finally:
        s3.close()
    dead = s3u.get_s3_client(
        "testing",
        "testing",
        None,
        "us-east-1",
        s3u.get_s3_config(retry_count=0, connect_timeout=1),
        endpoint_url="http://127.0.0.1:9",
    )
    try:
        with pytest.raises(KL3MError) as exc_info:
            s3u.check_object_exists(dead, "data.kl3m.ai", "documents/usc/x.json")
        assert isinstance(exc_info.value.__cause__, EndpointConnectionError)
        assert not is_per_object(exc_info.value)
    finally:
        dead.close()


# -- KL3MClient(s3_client=boto3 client) ----------------------------------------------------
def test_s3_client_is_used_as_it_is(kl3m_corpus_bucket: LocalBucket) -> None:
    corpus = kl3m_corpus_bucket.corpus
    gen = _complete_doc(corpus)
    s3 = _s3(kl3m_corpus_bucket)
    seen: Counter[str] = Counter()

    def record(model: Any = None, **_: Any) -> None:
        seen[model.name] += 1

    s3.meta.events.register("before-call.s3", record)  # the caller's own event handler
    try:
        with KL3MClient(bucket=kl3m_corpus_bucket.bucket, s3_client=s3) as client:
            assert client.s3_client is s3
            assert set(client.list_datasets()) == set(corpus.datasets)
            ids = list(client.iter_documents(gen.dataset_id))
            assert gen.document_id in ids
            doc = client.get_document(gen.dataset_id, gen.document_id)
            assert doc is not None
            assert doc.get_content().content == gen.raw.decode()  # type: ignore[union-attr]
            assert doc.get_parquet().get_representations() == {  # type: ignore[union-attr]
                gen.representation_mime: gen.tokens
            }
            assert client.get_document(gen.dataset_id, "no-such-doc") is None
            assert client.get_dataset_index("no-such-dataset") is None
        assert seen["ListObjectsV2"] >= 4 and seen["GetObject"] >= 2 and seen["HeadObject"] >= 3
        # closing our client leaves the caller's boto3 client usable
        assert s3.head_object(Bucket=kl3m_corpus_bucket.bucket, Key=gen.document_key)
    finally:
        s3.close()


def test_s3_client_errors_are_typed(kl3m_corpus_bucket: LocalBucket) -> None:
    from botocore.exceptions import ClientError

    s3 = _s3(kl3m_corpus_bucket)
    try:
        with KL3MClient(bucket="no-such-bucket-x", s3_client=s3) as client:
            with pytest.raises(BucketNotFoundError) as listing:
                client.list_datasets()
            assert isinstance(listing.value.__cause__, ClientError)
            with pytest.raises(BucketNotFoundError):
                client.get_document("usc", "x")
    finally:
        s3.close()


def test_s3_client_credentials_keep_refreshing(kl3m_corpus_bucket: LocalBucket) -> None:
    import botocore.session
    from botocore.credentials import CredentialProvider, RefreshableCredentials

    class Rotating(CredentialProvider):  # type: ignore[misc]
        METHOD = "rotating-test"
        calls = 0

        def fetch(self) -> dict[str, str]:
            Rotating.calls += 1
            expiry = datetime.now(timezone.utc) + timedelta(seconds=30)
            return {
                "access_key": "testing",
                "secret_key": "testing",
                "token": f"token-{Rotating.calls}",
                "expiry_time": expiry.isoformat(),
            }

        def load(self) -> Any:
            return RefreshableCredentials.create_from_metadata(
                self.fetch(), self.fetch, self.METHOD
            )

    session = botocore.session.Session()
    session.get_component("credential_provider").insert_before("env", Rotating())
    s3 = session.create_client(
        "s3", region_name="us-east-1", endpoint_url=kl3m_corpus_bucket.endpoint_url
    )
    try:
        with KL3MClient(bucket=kl3m_corpus_bucket.bucket, s3_client=s3) as client:
            before = Rotating.calls
            client.list_datasets()
            client.list_documents("usc", limit=1)
            assert Rotating.calls > before  # expiring credentials were refreshed per request
    finally:
        s3.close()


def test_s3_client_under_moto_mock_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3
    from moto import mock_aws

    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    body = encode_document_object(
        {
            "identifier": "s3://data.kl3m.ai/documents/mine/doc-1.json",
            "source": "https://example.org/",
            "title": "T",
            "format": "text/plain",
        },
        b"hello from mock_aws",
        document_id="doc-1",
        dataset_id="mine",
    )
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="data.kl3m.ai")
        s3.put_object(Bucket="data.kl3m.ai", Key="documents/mine/doc-1.json", Body=body)
        with KL3MClient(s3_client=s3) as client:
            assert client.list_documents("mine") == ["doc-1"]
            doc = client.get_document("mine", "doc-1")
            assert doc is not None
            assert doc.get_content().content == "hello from mock_aws"  # type: ignore[union-attr]


# -- models, Document, ids -----------------------------------------------------------------
def test_models_of_the_reference() -> None:
    result = ProcessingResult(processed_count=9, error_count=1, duration_seconds=2.0)
    assert (result.total_count, result.success_rate, result.docs_per_second) == (10, 90.0, 4.5)
    content = DocumentContent.from_dict({"content": "text", "identifier": "i", "source": "s"})
    assert content.content == "text" and content.metadata.identifier == "i"
    assert str(RepresentationContent.from_dict({"documents": []})) == "RepresentationContent(empty)"
    two = RepresentationContent.from_dict({"documents": [{"identifier": "a"}, {"identifier": "b"}]})
    assert str(two) == "RepresentationContent(2 documents)"
    meta = IndexMetadata.from_dict({"dataset_id": "d"})
    assert meta.key_prefix is None and meta.count == 0 and isinstance(meta.created_at, datetime)
    index = DatasetIndex.from_dict(
        {
            "objects": ["documents/d/a.json", "documents/d/sub/a.json", "documents/d/a.json"],
            "metadata": {"dataset_id": "d"},
        }
    )
    assert index.get_document_ids() == {"a", "sub/a"}  # a set; folders keep ids distinct
    assert index.document_ids() == ["a", "sub/a"]


def test_document_built_as_in_the_reference(kl3m_corpus_bucket: LocalBucket) -> None:
    gen = _complete_doc(kl3m_corpus_bucket.corpus)
    with KL3MClient(**kl3m_corpus_bucket.client_kwargs()) as client:
        doc = Document(client, gen.dataset_id, gen.parquet_key, kl3m_corpus_bucket.bucket)
        assert doc.document_id == gen.document_id and doc.stage is Stage.PARQUET
        assert doc.doc_path == gen.document_id
        assert doc.bucket == kl3m_corpus_bucket.bucket
        assert doc.s3_client is client.s3_client
        assert (doc.document_key, doc.representation_key, doc.parquet_key) == (
            gen.document_key,
            gen.representation_key,
            gen.parquet_key,
        )
        assert doc.get_content(Stage.DOCUMENTS).raw == gen.raw  # type: ignore[union-attr]
        assert doc.exists_in_stage(Stage.REPRESENTATIONS) is True
        fetched = client.get_document(gen.dataset_id, gen.document_id)
        assert fetched is not None and fetched.doc_path == gen.document_id + ".json"


def test_dataset_id_with_a_sub_path(kl3m_corpus_bucket: LocalBucket) -> None:
    corpus = kl3m_corpus_bucket.corpus
    nested = next(d for d in corpus.documents if "/" in d.document_id and "documents" in d.stages)
    folder, _, rest = nested.document_id.partition("/")
    sub = f"{nested.dataset_id}/{folder}"
    expected = sorted(
        d.document_id[len(folder) + 1 :]
        for d in corpus.dataset_documents(nested.dataset_id)
        if d.document_id.startswith(folder + "/") and "documents" in d.stages
    )
    with KL3MClient(**kl3m_corpus_bucket.client_kwargs()) as client:
        ids = client.list_documents(sub)
        assert sorted(ids) == expected and rest in ids
        doc = client.get_document(sub, rest)
        assert doc is not None and doc.get_content().raw == nested.raw  # type: ignore[union-attr]
        assert doc.document_key == nested.document_key
        status = client.get_dataset_status(sub)
        assert status.document_count == len(expected)
        records = list(client.iter_jsonl_export(sub))  # the exporter lists the same ids
        assert [r["id"] for r in records] == ids


def test_index_objects_written_by_build_are_gzip_json(kl3m_bucket: LocalBucket) -> None:
    from kl3m_data_client.operations.index import build_dataset_index

    s3 = _s3(kl3m_bucket)
    try:
        dataset = kl3m_bucket.corpus.documents[0].dataset_id
        assert build_dataset_index(s3, kl3m_bucket.bucket, dataset) is True
        raw = s3u.get_object_bytes(s3, kl3m_bucket.bucket, f"index/{dataset}.json.gz")
        assert raw is not None
        body = json.loads(gzip.decompress(raw))
        expected = sorted(
            d.representation_key
            for d in kl3m_bucket.corpus.dataset_documents(dataset)
            if "representations" in d.stages
        )
        assert body["objects"] == expected and body["metadata"]["count"] == len(expected)
    finally:
        s3.close()


def test_no_argument_defaults_agree_with_the_reference_where_it_found_data() -> None:
    from kl3m_data_client.models.document import RepresentationList

    both = RepresentationList.from_document_data(
        {
            "identifier": "x",
            "representations": {
                "text/markdown": {"content": "# md", "tokens": {"kl3m": [1]}},
                "text/plain": {
                    "content": "plain",
                    "tokens": {"cl100k_base": [1, 2, 3], "alea-institute/kl3m-004-128k-cased": [9]},
                },
            },
        }
    )
    assert both.get_content() == "plain"  # 0.2.0's default MIME type
    assert both.token_count() == 3  # 0.2.0's default tokenizer
    only_md = RepresentationList.from_document_data(
        {
            "identifier": "y",
            "representations": {
                "text/markdown": {
                    "content": "# md",
                    "tokens": {"alea-institute/kl3m-004-128k-cased": [4, 5]},
                }
            },
        }
    )
    assert only_md.get_content() == "# md"  # 0.2.0: None
    assert only_md.token_count() == 2  # 0.2.0: 0
