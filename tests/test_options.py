"""Typed options: one ExportOptions / ClientConfig list behind every surface (async client,
blocking client, export function, CLI); workers="auto"; the store is private."""

from __future__ import annotations

import inspect
import json
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from kl3m_data_client import AsyncKL3MClient, ClientConfig, InvalidInputError, KL3MClient
from kl3m_data_client._config import ClientKeywords, ClientOptions
from kl3m_data_client.export import ExportOptions, export
from kl3m_data_client.export._auto import (
    AUTO_DOCUMENTS_PER_WORKER,
    AUTO_LISTING_PEEK,
    AUTO_WORKERS_MAX,
    DEFAULT_WORKERS,
    resolve_workers,
    usable_cpus,
)
from kl3m_data_client.export._options import (
    OPTION_NAMES,
    ExportKeywords,
    RecordKeywords,
    make_plan,
    merge_options,
)

pytestmark = pytest.mark.anyio

DATASET = "cap"
POSITIONAL_CLIENT = ("bucket", "region", "aws_access_key_id", "aws_secret_access_key")


def _params(fn: Any, skip: int) -> list[tuple[str, Any, Any]]:
    """(name, kind, default) of ``fn``'s parameters after the first ``skip``."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()][skip:]


# -- one list of export options -----------------------------------------------------------------
def test_export_keywords_are_the_fields_of_export_options() -> None:
    names = {f.name for f in fields(ExportOptions)}
    assert set(ExportKeywords.__optional_keys__) == names == set(OPTION_NAMES)
    assert set(RecordKeywords.__optional_keys__) == names - {"key_prefix", "max_documents"}
    assert not ExportKeywords.__required_keys__
    assert ExportOptions().workers == DEFAULT_WORKERS


def test_async_blocking_and_function_export_have_one_signature() -> None:
    async_export = _params(AsyncKL3MClient.export, 1)
    assert async_export == _params(KL3MClient.export, 1)
    assert async_export == _params(export, 1)  # the function's first parameter is the client
    assert [name for name, *_ in async_export] == [
        "dataset_id",
        "destination",
        "options",
        "progress",
        "changes",
    ]
    records = _params(AsyncKL3MClient.iter_jsonl_export, 1)
    assert records == _params(KL3MClient.iter_jsonl_export, 1)
    assert inspect.signature(AsyncKL3MClient.export).parameters["changes"].kind is (
        inspect.Parameter.VAR_KEYWORD
    )


def test_cli_export_has_a_flag_for_every_export_option() -> None:
    from kl3m_data_client.cli._export import export_options
    from kl3m_data_client.cli._parser import build_parser

    args = build_parser().parse_args(
        [
            "export", "usc", "out",
            "--stage", "representations", "--format", "parquet", "--compression", "snappy",
            "--content", "tokens", "--key-prefix", "a/", "--ids", "ids.txt",
            "--max-documents", "5", "--mime-types", "text/plain,text/html", "--min-tokens", "0",
            "--max-tokens", "9", "--deduplicate", "--shard", "1/4", "--records-per-part", "7",
            "--workers", "auto", "--max-concurrency", "3", "--memory-budget", "1MiB",
            "--outage-timeout", "2", "--no-resume", "--overwrite", "--retry-errors",
        ]
    )  # fmt: skip
    given = export_options(args)
    assert set(given) == set(OPTION_NAMES)
    options = ExportOptions(**given)  # the CLI's values are the option's types
    assert options.workers == "auto" and options.resume is False and options.min_tokens == 0
    assert options.shard == (1, 4) and options.memory_budget == 1 << 20
    # nothing given: the options' own defaults (one place), e.g. workers
    plain = export_options(build_parser().parse_args(["export", "usc", "out"]))
    assert ExportOptions(**plain).workers == DEFAULT_WORKERS


def test_cli_workers_takes_auto_or_a_count(capsys: pytest.CaptureFixture[str]) -> None:
    from kl3m_data_client.cli._parser import build_parser

    parser = build_parser()
    assert parser.parse_args(["export", "d", "o", "--workers", "AUTO"]).workers == "auto"
    assert parser.parse_args(["export", "d", "o", "--workers", "3"]).workers == 3
    with pytest.raises(SystemExit):
        parser.parse_args(["export", "d", "o", "--workers", "0"])
    assert "expected 'auto' or a positive integer" in capsys.readouterr().err


def test_options_and_keywords_merge_and_unknown_names_are_refused() -> None:
    base = ExportOptions(format="parquet", records_per_part=9)
    merged = merge_options(base, {"records_per_part": 3})
    assert (merged.format, merged.records_per_part) == ("parquet", 3)
    with pytest.raises(TypeError, match=r"unexpected export option.*colour"):
        merge_options(base, {"colour": "red"})
    with pytest.raises(TypeError, match="must be an ExportOptions"):
        merge_options({"format": "jsonl"}, {})  # type: ignore[arg-type]
    plan = make_plan(bucket="b", dataset_id="usc", options=base, format="jsonl", workers=2)
    assert (plan.format, plan.records_per_part, plan.workers) == ("jsonl", 9, 2)


# -- one list of client options -----------------------------------------------------------------
def test_client_keywords_are_the_fields_of_client_config() -> None:
    config_fields = {f.name for f in fields(ClientConfig)}
    keywords = set(ClientOptions.__optional_keys__) - {"bucket_name", "region_name"}
    assert keywords | set(POSITIONAL_CLIENT) | {"aws_session_token"} == config_fields
    assert set(ClientOptions.__optional_keys__) - set(ClientKeywords.__optional_keys__) == {
        "verbose"
    }


def test_blocking_client_takes_the_async_clients_options() -> None:
    sync = inspect.signature(KL3MClient.__init__).parameters
    asyn = inspect.signature(AsyncKL3MClient.__init__).parameters
    assert list(sync)[1:8] == [*POSITIONAL_CLIENT, "aws_session_token", "s3_client", "verbose"]
    assert {"session", "config", "options"} <= set(sync) & set(asyn)
    for name in ("bucket", "region", "aws_access_key_id", "session", "config"):
        assert sync[name].default is asyn[name].default is None  # defaults: the config's
    kwargs = {"endpoint_url": "http://127.0.0.1:9", "max_concurrency": 3, "verbose": True}
    assert (
        KL3MClient("b", "eu-west-1", **kwargs).config
        == AsyncKL3MClient("b", "eu-west-1", **kwargs).config
    )


@pytest.mark.parametrize("cls", [AsyncKL3MClient, KL3MClient])
def test_config_with_other_options_is_refused(cls: Any) -> None:
    config = ClientConfig(bucket="b")
    with pytest.raises(InvalidInputError, match="max_concurrency"):
        cls(config=config, max_concurrency=4)
    with pytest.raises(InvalidInputError, match="bucket"):
        cls("other", config=config)
    assert cls(config=config).config is config


def test_store_is_private_and_injectable() -> None:
    from kl3m_data_client._store import S3Store

    assert not hasattr(AsyncKL3MClient, "store") and not hasattr(KL3MClient, "store")
    made: list[ClientConfig] = []

    def factory(config: ClientConfig) -> S3Store:
        made.append(config)
        return S3Store(config, None)

    client = AsyncKL3MClient("b", _store_factory=factory)
    assert made == [] and not client._portable  # created on first use, not before
    assert client._store is client._store and made == [client.config]
    assert AsyncKL3MClient("b")._portable


# -- workers="auto" -----------------------------------------------------------------------------
def test_auto_workers_rule() -> None:
    cpus = min(usable_cpus(), AUTO_WORKERS_MAX)
    assert resolve_workers(3) == 3
    assert resolve_workers("auto") == max(1, cpus)
    assert resolve_workers("auto", processes=False) == 1
    assert resolve_workers("auto", deduplicate=True) == 1
    assert resolve_workers("auto", max_documents=10) == 1
    assert resolve_workers("auto", documents=AUTO_DOCUMENTS_PER_WORKER - 1) == 1
    assert resolve_workers("auto", documents=5 * AUTO_DOCUMENTS_PER_WORKER) == min(cpus, 5)
    for bad in (0, "many", True):
        with pytest.raises(InvalidInputError, match="workers"):
            resolve_workers(bad)  # type: ignore[arg-type]
    # deduplicate/max_documents with auto are fine (one worker); with a count they are not
    assert make_plan(bucket="b", dataset_id="usc", deduplicate=True, processes=True).workers == 1
    with pytest.raises(InvalidInputError, match="deduplicate needs workers=1"):
        make_plan(bucket="b", dataset_id="usc", deduplicate=True, workers=2)


def _files(dest: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((dest / "data").iterdir())}


def _lines(dest: Path) -> list[bytes]:
    return sorted(line for data in _files(dest).values() for line in data.splitlines())


def _recorded(dest: Path) -> int:
    manifest = json.loads((dest / "manifest.json").read_text())
    workers: int = manifest["options"]["workers"]
    return workers


async def test_auto_on_a_small_dataset_is_one_worker_byte_identical(
    kl3m_corpus_bucket: Any, tmp_path: Path
) -> None:
    async with AsyncKL3MClient(**kl3m_corpus_bucket.client_kwargs()) as client:
        auto = await client.export(DATASET, tmp_path / "auto", stage="parquet")  # the default
        one = await client.export(DATASET, tmp_path / "one", stage="parquet", workers=1)
        assert auto.exported == one.exported > 10
        assert _files(tmp_path / "auto") == _files(tmp_path / "one")
        assert _recorded(tmp_path / "auto") == 1
        # an export made with 2 workers resumes with auto (its recorded count), not refused
        two = await client.export(DATASET, tmp_path / "two", stage="parquet", workers=2)
        again = await client.export(DATASET, tmp_path / "two", stage="parquet")
        assert again.resumed and again.exported == two.exported == one.exported
        assert _recorded(tmp_path / "two") == 2


async def test_auto_on_a_big_export_uses_the_cpus_but_not_with_an_injected_store(
    kl3m_corpus_bucket: Any, tmp_path: Path
) -> None:
    """A list of ids long enough for several workers (repeated ids: every one is exported):
    auto starts one worker per CPU; a client whose store was injected (worker processes
    could not rebuild it) exports alone. Both write the same records."""
    from kl3m_data_client._store import S3Store

    docs = kl3m_corpus_bucket.corpus.in_stage("parquet", DATASET)
    ids = [d.document_id for d in docs] * (AUTO_LISTING_PEEK // len(docs) + 1)
    expected = resolve_workers("auto", documents=len(ids))
    options = ExportOptions(stage="parquet", ids=ids, records_per_part=500)
    kwargs = kl3m_corpus_bucket.client_kwargs()
    async with AsyncKL3MClient(**kwargs) as client:
        auto = await client.export(DATASET, tmp_path / "auto", options)
    async with AsyncKL3MClient(**kwargs, _store_factory=lambda c: S3Store(c, None)) as client:
        alone = await client.export(DATASET, tmp_path / "alone", options)
    assert _recorded(tmp_path / "auto") == expected and _recorded(tmp_path / "alone") == 1
    assert _lines(tmp_path / "auto") == _lines(tmp_path / "alone")  # the same records
    assert auto.exported == alone.exported == len(ids) and auto.errors == alone.errors == 0


@pytest.mark.parametrize(("guard", "safe"), [(True, True), (False, False)])
def test_auto_needs_an_import_safe_main_script(tmp_path: Path, guard: bool, safe: bool) -> None:
    """A spawned worker imports the main script: without the ``__main__`` guard it would run
    the script's export again, so auto stays in one process there."""
    import subprocess
    import sys

    body = "from kl3m_data_client.export._auto import processes_usable\n"
    call = "print(processes_usable())\n"
    text = body + ('if __name__ == "__main__":\n    ' + call if guard else call)
    script = tmp_path / "script.py"
    script.write_text(text)
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert out.strip() == str(safe)
