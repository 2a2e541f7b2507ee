"""The public claims of README.md, one test each, against the real local bucket.

The README's Python examples and its ``kl3m-client demo`` run as written (the endpoint and
credentials come from the standard AWS environment variables, pointed at the local bucket);
the claims about options, errors, logging, extras and tooling are checked on real requests
(through the fault proxy, which records what reaches the endpoint) or on the project files.
Claims already proved elsewhere name the test that proves them, in the list below.

Covered elsewhere:

- resumable, deterministic, byte-identical on resume: ``test_export_crash.py``;
- ``KL3MClient`` in a running loop (Jupyter), threads, after ``fork()``, iterators that keep
  their client alive: ``test_sync.py``;
- the memory budget (``"512MiB"``, 1 GiB default, bounded RSS): ``test_memory.py``;
- redirects, looping or backwards listings refused (``UntrustedResponseError``):
  ``test_hostile.py``; outages stop an export with ``ExportStoppedError``:
  ``test_export_outage.py``;
- no secret in any message: ``test_secrets.py``; refreshable credentials:
  ``test_faults.py``; ``get_document`` returns ``None`` for a missing document:
  ``test_client.py``.
"""

from __future__ import annotations

import ast
import gzip
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kl3m_data_client import (
    AccessDeniedError,
    AsyncKL3MClient,
    BucketNotFoundError,
    ClientClosedError,
    ConnectionFailedError,
    CorruptObjectError,
    InvalidInputError,
    KL3MClient,
    KL3MError,
    NotFoundError,
    ServiceError,
    SizeLimitExceededError,
    UntrustedResponseError,
)
from kl3m_data_client.testing import LocalBucket
from kl3m_data_client.testing._faults import FaultPlan, RequestInfo, run_fault_proxy

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")

try:
    import tomllib
except ImportError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _section(title: str) -> str:
    """The README text under ``## title`` (up to the next ``## ``)."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.S | re.M)
    assert match, f"README has no section {title!r}"
    return match.group(1)


def _block(title: str, lang: str) -> str:
    """The first fenced ``lang`` block of the README section ``title``."""
    match = re.search(rf"```{lang}\n(.*?)```", _section(title), re.S)
    assert match, f"README section {title!r} has no {lang} block"
    return match.group(1)


@pytest.fixture
def aws_env(kl3m_corpus_bucket: LocalBucket, monkeypatch: pytest.MonkeyPatch) -> LocalBucket:
    """The standard AWS environment variables pointed at the local bucket (no config files)."""
    kw = kl3m_corpus_bucket.client_kwargs()
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    monkeypatch.setenv("AWS_ENDPOINT_URL", kw["endpoint_url"])
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", kw["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", kw["aws_secret_access_key"])
    monkeypatch.setenv("AWS_DEFAULT_REGION", kw["region"])
    assert kl3m_corpus_bucket.bucket == "data.kl3m.ai"  # the examples use the default bucket
    return kl3m_corpus_bucket


def _run_example(title: str, capsys: pytest.CaptureFixture[str]) -> list[str]:
    source = _block(title, "python")
    exec(compile(source, f"README.md ({title})", "exec"), {"__name__": "readme_example"})
    out, err = capsys.readouterr()
    assert err == ""
    return out.splitlines()


# -- the examples, as written ------------------------------------------------------------------
def test_async_example_runs_as_written(
    aws_env: LocalBucket, capsys: pytest.CaptureFixture[str]
) -> None:
    """README "Async": the dataset status, then each representation's id and token count."""
    corpus = aws_env.corpus
    lines = _run_example("Async", capsys)
    reps = corpus.in_stage("representations", "usc")
    assert 0 < len(reps) < 100  # the example's limit=100 takes all of them
    status, *rows = lines
    assert "usc" in status
    assert f"document_count={len(corpus.dataset_documents('usc'))}" in status
    counts = dict(row.rsplit(" ", 1) for row in rows)  # ids may hold spaces
    assert counts == {d.document_id: str(len(d.tokens)) for d in reps}


def test_blocking_example_runs_as_written(
    aws_env: LocalBucket, capsys: pytest.CaptureFixture[str]
) -> None:
    """README "Blocking": ten documents with title and content size, their parquet
    representations, and a client whose iterator outlives the expression that made it."""
    docs = aws_env.corpus.dataset_documents("usc")[:10]  # key order, as S3 lists
    lines = _run_example("Blocking", capsys)
    assert len(lines) == 2 * len(docs) + 1
    for doc, line, keys in zip(docs, lines[0:-1:2], lines[1:-1:2], strict=True):
        text_or_bytes: str | bytes = doc.raw
        if doc.mime_type != "application/pdf":
            text_or_bytes = doc.raw.decode("utf-8")
        assert line == f"{doc.document_id} {doc.title} {len(text_or_bytes)}"
        assert keys == f"dict_keys(['{doc.representation_mime}'])"
    assert lines[-1] == repr([d.document_id for d in docs[:2]])


def test_demo_runs_as_written_and_its_read_command_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """README "Quick start": ``kl3m-client demo`` starts a local bucket, lists its datasets,
    shows their status and exports one to ``./kl3m-demo/`` as JSONL and Parquet; the
    command it prints to read the Parquet export works."""
    from kl3m_data_client.cli import main
    from kl3m_data_client.testing import generate_corpus

    assert "kl3m-client demo" in _block("Quick start", "bash")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "400")  # the printed command on one line
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "1. datasets" in out and "2. status" in out
    expected = {
        d.document_id: d.tokens for d in generate_corpus(200).in_stage("representations", "usc")
    }
    jsonl = sorted((tmp_path / "kl3m-demo" / "usc-jsonl").rglob("*.jsonl.gz"))
    parquet = sorted((tmp_path / "kl3m-demo" / "usc-parquet").rglob("*.parquet"))
    assert jsonl and parquet
    lines = [line for p in jsonl for line in gzip.decompress(p.read_bytes()).splitlines()]
    records = [json.loads(line) for line in lines]
    assert {r["id"]: r["tokens"] for r in records} == expected
    read = re.search(r'read the Parquet export with: (python -c ".*")', out)
    assert read, out
    command = read.group(1).replace("python", sys.executable, 1)
    proc = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "id: string" in proc.stdout
    assert "tokens: list<" in proc.stdout


# -- install, dependencies, tooling -------------------------------------------------------------
#: what README "Install" says each extra adds, by package name
_EXTRA_PACKAGES = {
    "local": {"moto", "tokenizers"},
    "zstd": {"zstandard"},
    "ray": {"ray"},
    "cli": {"argcomplete"},
}


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0].lower() for r in requirements}


def test_install_extras_exist_and_add_what_they_say() -> None:
    install = _block("Install", "bash")
    named = set(re.findall(r"kl3m-data-client\[(\w+)\]", install))
    assert named == set(_EXTRA_PACKAGES)
    extras = PYPROJECT["project"]["optional-dependencies"]
    for extra, packages in _EXTRA_PACKAGES.items():
        assert packages <= _names(extras[extra]), extra
    # 0.x's ``[fast]`` extra still resolves, to what the dependencies already install
    assert _names(extras["fast"]) <= _names(PYPROJECT["project"]["dependencies"])
    for command in (_block("Quick start", "bash"), _block("Development", "bash")):
        for group in re.findall(r'"\.\[([\w,]+)\]"', command):
            assert set(group.split(",")) <= set(extras), group


def test_dependencies_are_the_ones_named() -> None:
    """README "Install": aiobotocore (and the aiohttp and botocore it pins), anyio, pyarrow and
    rich; ``aiofiles`` is not a dependency and nothing imports it."""
    paragraph = _section("Install").split("Dependencies:", 1)[1].split("\n\n", 1)[0]
    declared = _names(PYPROJECT["project"]["dependencies"])
    assert {"aiobotocore", "anyio", "pyarrow", "rich"} <= declared
    assert all(name in paragraph for name in declared), (declared, paragraph)
    every = declared | {
        n for reqs in PYPROJECT["project"]["optional-dependencies"].values() for n in _names(reqs)
    }
    assert "aiofiles" not in every
    sources = (ROOT / "src").rglob("*.py")
    assert not [p for p in sources if re.search(r"^\s*(import|from) aiofiles", p.read_text(), re.M)]


def _nox_sessions() -> set[str]:
    tree = ast.parse((ROOT / "noxfile.py").read_text(encoding="utf-8"))
    return {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef)
        and any("session" in ast.unparse(d) for d in node.decorator_list)
    }


def test_the_nox_sessions_of_development_exist() -> None:
    named = {
        name
        for line in _block("Development", "bash").splitlines()
        if line.startswith("nox -s")
        for name in line.split("#")[0].split()[2:]
    }
    assert {"lint", "typecheck", "tests", "docs", "reference", "contracts"} <= named
    assert named <= _nox_sessions()


def test_the_import_layers_hold() -> None:
    """README "Layers": no import cycle, checked by ``lint-imports``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


# -- errors -------------------------------------------------------------------------------------
def test_the_error_classes_are_as_listed() -> None:
    """README "Errors": one base class; the subclass relations it names."""
    from kl3m_data_client.export import ExportStoppedError

    listed = [
        InvalidInputError,
        NotFoundError,
        BucketNotFoundError,
        AccessDeniedError,
        CorruptObjectError,
        SizeLimitExceededError,
        ServiceError,
        UntrustedResponseError,
        ConnectionFailedError,
        ClientClosedError,
        ExportStoppedError,
    ]
    assert all(issubclass(cls, KL3MError) for cls in listed)
    assert issubclass(InvalidInputError, ValueError)
    assert issubclass(BucketNotFoundError, NotFoundError)
    assert issubclass(UntrustedResponseError, ServiceError)


@pytest.mark.anyio
async def test_a_systemic_failure_carries_status_request_id_and_cause(
    kl3m_corpus_bucket: LocalBucket,
) -> None:
    """A missing bucket: ``BucketNotFoundError`` with the HTTP status, S3's request id,
    ``per_object`` False and the botocore error as ``__cause__``."""
    import botocore.exceptions

    kw = {**kl3m_corpus_bucket.client_kwargs(), "bucket": "no-such-bucket.kl3m"}
    async with AsyncKL3MClient(**kw) as client:
        with pytest.raises(BucketNotFoundError) as info:
            await client.list_datasets()
    err = info.value
    assert err.status == 404
    assert err.request_id
    assert err.per_object is False
    assert isinstance(err.__cause__, botocore.exceptions.ClientError)
    assert "no-such-bucket.kl3m" in str(err)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("stage", "document_id", "what"),
    [
        ("documents", "bad-json", "JSON"),
        ("documents", "bad-base64", "base64"),
        ("documents", "bad-zlib", "zlib"),
        ("parquet", "corrupt-parquet", "parquet"),
    ],
)
async def test_a_corrupt_object_names_its_key_and_what_failed(
    kl3m_corpus_bucket: LocalBucket, stage: str, document_id: str, what: str
) -> None:
    key = f"{stage}/dirty/{document_id}" + (".json" if stage == "documents" else "")
    async with AsyncKL3MClient(**kl3m_corpus_bucket.client_kwargs()) as client:
        with pytest.raises(CorruptObjectError) as info:
            doc = await client.get_document("dirty", document_id, stage)
            assert doc is not None
            doc.content  # noqa: B018 - decoded on first access, where decoding is lazy
    err = info.value
    assert err.key == key
    assert err.per_object is True
    assert key in str(err)
    assert what.lower() in str(err).lower()


def test_an_unknown_keyword_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        AsyncKL3MClient(bogus_option=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        KL3MClient(bogus_option=1)  # type: ignore[call-arg]


_WITHOUT_RAY = """
import importlib.abc, sys

class NoRay(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "ray" or name.startswith("ray."):
            raise ImportError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoRay())
try:
    import kl3m_data_client.ray
except ImportError as exc:
    print("ImportError:", exc)
else:
    print("imported")
"""


def test_the_ray_module_without_ray_is_an_import_error() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _WITHOUT_RAY], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ImportError:"), proc.stdout
    assert "ray" in proc.stdout


# -- logging ------------------------------------------------------------------------------------
def _handlers() -> list[list[logging.Handler]]:
    return [list(logging.getLogger(n).handlers) for n in ("", "kl3m_data_client")]


@pytest.mark.parametrize("verbose", [False, True])
def test_the_library_never_prints_and_logs_at_info_only_when_verbose(
    kl3m_corpus_bucket: LocalBucket,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    verbose: bool,
) -> None:
    """README "Errors": the library never prints or configures logging; it logs to the
    ``kl3m_data_client`` logger, and ``verbose=True`` raises its progress messages to INFO."""
    before = _handlers()
    caplog.set_level(logging.DEBUG, logger="kl3m_data_client")
    with KL3MClient(**kl3m_corpus_bucket.client_kwargs(), verbose=verbose) as client:
        client.get_dataset_status("usc")
        list(client.iter_documents("usc", limit=3))
        assert client.get_document("usc", "no such document") is None
    assert capsys.readouterr() == ("", "")
    assert _handlers() == before
    ours = [r for r in caplog.records if r.name.startswith("kl3m_data_client")]
    assert ours, "the client logged nothing"
    info = [r for r in ours if r.levelno >= logging.INFO]
    assert bool(info) is verbose
    assert all(r.levelno <= logging.INFO for r in ours)


# -- authentication and endpoint options --------------------------------------------------------
@pytest.fixture
def recording_proxy(kl3m_corpus_bucket: LocalBucket) -> Iterator[tuple[Any, list[RequestInfo]]]:
    """A fault proxy without faults in front of the bucket that records every request."""
    seen: list[RequestInfo] = []

    def record(info: RequestInfo) -> None:
        seen.append(info)

    plan = FaultPlan(rate=0.0, credential_check=record)
    with run_fault_proxy(kl3m_corpus_bucket.endpoint_url, plan) as proxy:
        yield proxy, seen


def _list_through(proxy: Any, bucket: LocalBucket, **options: Any) -> list[str]:
    kw = {**bucket.client_kwargs(), "endpoint_url": proxy.endpoint_url, **options}
    if options.get("anonymous"):
        del kw["aws_access_key_id"], kw["aws_secret_access_key"]
    with KL3MClient(**kw) as client:
        return list(client.iter_documents("usc", limit=2))


def test_endpoint_url_uses_path_style_addressing_and_signs(
    recording_proxy: tuple[Any, list[RequestInfo]], kl3m_corpus_bucket: LocalBucket
) -> None:
    proxy, seen = recording_proxy
    assert len(_list_through(proxy, kl3m_corpus_bucket)) == 2
    assert seen
    host = proxy.endpoint_url.split("://", 1)[1]
    for info in seen:
        headers = {k.lower(): v for k, v in info.headers.items()}
        assert info.path.startswith("/data.kl3m.ai")  # the bucket in the path
        assert headers["host"] == host  # not a virtual-hosted bucket name
        assert headers["authorization"].startswith("AWS4-HMAC-SHA256 ")


def test_anonymous_requests_are_unsigned(
    recording_proxy: tuple[Any, list[RequestInfo]], kl3m_corpus_bucket: LocalBucket
) -> None:
    proxy, seen = recording_proxy
    assert len(_list_through(proxy, kl3m_corpus_bucket, anonymous=True)) == 2
    assert seen
    for info in seen:
        assert "authorization" not in {k.lower() for k in info.headers}


def test_requester_pays_sends_the_request_payer_header(
    recording_proxy: tuple[Any, list[RequestInfo]], kl3m_corpus_bucket: LocalBucket
) -> None:
    proxy, seen = recording_proxy
    _list_through(proxy, kl3m_corpus_bucket)
    assert all("x-amz-request-payer" not in {k.lower() for k in i.headers} for i in seen)
    seen.clear()
    assert len(_list_through(proxy, kl3m_corpus_bucket, requester_pays=True)) == 2
    assert seen
    for info in seen:
        headers = {k.lower(): v for k, v in info.headers.items()}
        assert headers["x-amz-request-payer"] == "requester"


def test_a_named_profile_supplies_the_credentials(
    recording_proxy: tuple[Any, list[RequestInfo]],
    kl3m_corpus_bucket: LocalBucket,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proxy, seen = recording_proxy
    credentials = tmp_path / "credentials"
    credentials.write_text(
        "[readme-profile]\naws_access_key_id = AKIDREADMEPROFILE\n"
        "aws_secret_access_key = readme-profile-secret\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    kw = {
        "bucket": kl3m_corpus_bucket.bucket,
        "region": kl3m_corpus_bucket.client_kwargs()["region"],
        "endpoint_url": proxy.endpoint_url,
        "profile": "readme-profile",
    }
    with KL3MClient(**kw) as client:
        assert len(list(client.iter_documents("usc", limit=2))) == 2
    assert seen
    for info in seen:
        headers = {k.lower(): v for k, v in info.headers.items()}
        assert "Credential=AKIDREADMEPROFILE/" in headers["authorization"]


def test_max_concurrency_defaults_to_64() -> None:
    assert AsyncKL3MClient().config.max_concurrency == 64
    assert KL3MClient().config.max_concurrency == 64


def test_access_denied_hints_at_credentials_region_and_requester_pays(
    kl3m_corpus_bucket: LocalBucket,
) -> None:
    """README "Errors": ``AccessDeniedError`` (with hints on credentials, region, requester
    pays), systemic, with the HTTP status."""
    plan = FaultPlan(rate=0.0, credential_check=lambda info: "AccessDenied")
    with run_fault_proxy(kl3m_corpus_bucket.endpoint_url, plan) as proxy:
        kw = {**kl3m_corpus_bucket.client_kwargs(), "endpoint_url": proxy.endpoint_url}
        with KL3MClient(**kw) as client, pytest.raises(AccessDeniedError) as info:
            client.list_datasets()
    err = info.value
    message = str(err)
    assert "credentials" in message and "region" in message and "requester_pays" in message
    assert err.status == 403
    assert err.per_object is False
    assert proxy.rejected["AccessDenied"] >= 1


def test_local_file_errors_are_not_wrapped(kl3m_corpus_bucket: LocalBucket, tmp_path: Path) -> None:
    """README "Errors": ``OSError`` from your local files (an export destination that cannot
    be written) is raised as it is, not as a ``KL3MError``."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory", encoding="utf-8")
    with KL3MClient(**kl3m_corpus_bucket.client_kwargs()) as client, pytest.raises(OSError) as info:
        client.export("cap", blocker / "out")
    assert not isinstance(info.value, KL3MError)
