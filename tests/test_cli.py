"""kl3m-client end to end against the local S3 bucket.

Most commands run in-process through ``kl3m_data_client.cli.main(argv)`` (output captured
with ``capsys``, environment set with ``monkeypatch``); a few smoke tests run the real
``python -m kl3m_data_client.cli`` process: ``--help``/``--version``, a traceback with
``--verbose``, an unreachable endpoint's exit status, raw bytes on stdout, a closed pipe and
Ctrl-C. Nothing is mocked: every command talks HTTP to the moto server of the pytest plugin
(``kl3m_corpus_bucket``: 200 documents and the ``dirty`` dataset), to a stdlib HTTP server
answering 403 (bad credentials) or to a closed loopback port (unreachable endpoint).
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kl3m_data_client.testing import (
    GeneratedDocument,
    LocalBucket,
    LocalS3Server,
    encode_document_object,
)

SECRET = "s3cr3t-never-printed"
STAGES = ("documents", "representations", "parquet")


# -- helpers ------------------------------------------------------------------------------------
def cli_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "KL3M_")) and k not in ("NO_COLOR", "COLUMNS")
    }
    env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY=SECRET,
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
        PYTHONWARNINGS="error",
    )
    env.update(extra)
    return env


_REQUEST: list[pytest.FixtureRequest] = []


@pytest.fixture(autouse=True)
def _current_request(request: pytest.FixtureRequest) -> Iterator[None]:
    """Lets :func:`run` reach the running test's ``capsys`` without a parameter per test."""
    _REQUEST.append(request)
    try:
        yield
    finally:
        _REQUEST.remove(request)


def _main_in_process(
    argv: list[str], env: dict[str, str], cwd: Path | None
) -> subprocess.CompletedProcess[str]:
    """``main(argv)`` with exactly ``env`` as the environment; stdout/stderr from capsys."""
    import logging

    from kl3m_data_client.cli import main

    capsys = _REQUEST[-1].getfixturevalue("capsys")
    capsys.readouterr()  # drop what came before
    logger = logging.getLogger("kl3m_data_client")
    handlers, level = list(logger.handlers), logger.level  # --verbose adds a handler
    with pytest.MonkeyPatch.context() as mp:
        for name in set(os.environ) - set(env):
            mp.delenv(name)
        for name, value in env.items():
            mp.setenv(name, value)
        if cwd is not None:
            mp.chdir(cwd)
        try:
            status = main(argv)
        finally:
            logger.handlers[:] = handlers
            logger.setLevel(level)
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(argv, status, out, err)


def run(
    *args: str,
    endpoint: str | None = None,
    bucket: str = "data.kl3m.ai",
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    process: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run kl3m-client in-process, or as ``python -m kl3m_data_client.cli`` if ``process``.

    Other test modules importing this helper (no ``_current_request`` fixture there) always
    get the subprocess.
    """
    argv = ["--endpoint-url", endpoint, "--bucket", bucket] if endpoint is not None else []
    argv += args
    if not process and _REQUEST:
        return _main_in_process(argv, env or cli_env(), cwd)
    return subprocess.run(
        [sys.executable, "-m", "kl3m_data_client.cli", *argv],
        capture_output=True,
        text=True,
        env=env or cli_env(),
        cwd=cwd,
        timeout=timeout,
    )


def run_bytes(*args: str, endpoint: str) -> subprocess.CompletedProcess[bytes]:
    cmd = [sys.executable, "-m", "kl3m_data_client.cli", "--endpoint-url", endpoint, *args]
    return subprocess.run(cmd, capture_output=True, env=cli_env(), timeout=120)


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("kl3m-client: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    assert SECRET not in proc.stderr + proc.stdout
    return lines[0]


def keys_under(bucket: LocalBucket, prefix: str) -> list[str]:
    return sorted(k for k in bucket.corpus.objects if k.startswith(prefix))


def ids_in(bucket: LocalBucket, stage: str, dataset: str) -> list[str]:
    prefix = f"{stage}/{dataset}/"
    out = []
    for key in keys_under(bucket, prefix):
        doc_id = key[len(prefix) :]
        out.append(doc_id[:-5] if doc_id.endswith(".json") else doc_id)
    return out


@pytest.fixture(scope="module")
def b(kl3m_corpus_bucket: LocalBucket) -> LocalBucket:
    return kl3m_corpus_bucket


@pytest.fixture(scope="module")
def ep(b: LocalBucket) -> str:
    return b.endpoint_url


@pytest.fixture(scope="module")
def doc(b: LocalBucket) -> GeneratedDocument:
    """A usc document present in every stage."""
    return next(d for d in b.corpus.dataset_documents("usc") if d.stages == frozenset(STAGES))


# -- help, version, usage -----------------------------------------------------------------------
def test_help_is_fast_and_imports_nothing_heavy() -> None:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "kl3m_data_client.cli", "--help"],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=60,
    )
    assert proc.returncode == 0
    assert "usage: kl3m-client" in proc.stdout
    for command in ("list", "status", "documents", "inspect", "get", "export", "demo"):
        assert command in proc.stdout
    imported = {ln.split("|")[-1].strip().split(".")[0] for ln in proc.stderr.splitlines()}
    for heavy in ("aiobotocore", "botocore", "pyarrow", "rich", "aiohttp"):
        assert heavy not in imported


def test_version() -> None:
    from kl3m_data_client import __version__

    proc = run("--version", process=True)
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"kl3m-client {__version__}"


_TORN_DOWN = """
import sys
from kl3m_data_client.cli import console

class Witness:
    def __del__(self):
        print("torn down", flush=True)

witness = Witness()
sys.argv[1:] = {args!r}
console()
"""


@pytest.mark.parametrize(("args", "status"), [(["--version"], 0), (["nope"], 2)])
def test_console_exits_without_tearing_the_interpreter_down(args: list[str], status: int) -> None:
    """The program's exit skips the interpreter's teardown (a module global's finaliser never
    runs) but keeps the status and everything written to stdout and stderr."""
    from kl3m_data_client import __version__

    code = _TORN_DOWN.format(args=args)
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), timeout=60
    )
    assert proc.returncode == status, proc.stderr
    assert "torn down" not in proc.stdout
    if status == 0:
        assert proc.stdout == f"kl3m-client {__version__}\n"
    else:
        assert "invalid choice: 'nope'" in proc.stderr
    # the same script without console(): the witness is finalised at teardown
    plain = subprocess.run(
        [sys.executable, "-c", code.replace("console()", "pass")],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=60,
    )
    assert plain.stdout == "torn down\n"


def test_console_output_is_complete_through_a_pipe(b: LocalBucket, ep: str) -> None:
    """A long --json output of the program equals the in-process one, byte for byte."""
    args = ("documents", "usc", "--stage", "representations", "--json")
    inside = run(*args, endpoint=ep)
    program = run(*args, endpoint=ep, process=True)
    assert program.returncode == inside.returncode == 0, program.stderr
    assert len(program.stdout) > 1000 and program.stdout == inside.stdout


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["nope"],
        ["status"],
        ["documents", "usc", "--limit", "-1"],
        ["documents", "usc", "--stage", "index"],
        ["export", "usc", "out", "--shard", "3/2"],
        ["export", "usc", "out", "--format", "csv"],
        ["--max-concurrency", "0", "list"],
    ],
)
def test_bad_arguments_exit_2(args: list[str]) -> None:
    proc = run(*args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert "usage:" in proc.stderr


def test_invalid_ids_exit_2(ep: str) -> None:
    proc = run("status", "a/../b", endpoint=ep)
    assert proc.returncode == 2
    assert "invalid input" in one_error_line(proc)
    proc = run("inspect", "usc", "a/../b", "--json", endpoint=ep)
    assert proc.returncode == 2
    assert proc.stdout == ""
    one_error_line(proc)
    proc = run("get", "usc", "x", "--json", endpoint=ep)  # --json needs --output
    assert proc.returncode == 2
    one_error_line(proc)


def test_global_options_after_the_command(b: LocalBucket, ep: str) -> None:
    proc = run("status", "usc", "--json", "--endpoint-url", ep, "--bucket", b.bucket, "-q")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["dataset_id"] == "usc"


# -- list ---------------------------------------------------------------------------------------
def test_list_json(b: LocalBucket, ep: str) -> None:
    proc = run("list", "--json", endpoint=ep)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert sorted(data) == list(b.corpus.datasets)
    for dataset, stages in data.items():
        assert stages == {s: bool(keys_under(b, f"{s}/{dataset}/")) for s in STAGES}


def test_list_human(b: LocalBucket, ep: str) -> None:
    proc = run("list", endpoint=ep)
    assert proc.returncode == 0, proc.stderr
    for dataset in b.corpus.datasets:
        assert dataset in proc.stdout
    assert "\x1b[" not in proc.stdout  # no colour when stdout is not a terminal


# -- status -------------------------------------------------------------------------------------
def expected_status(b: LocalBucket, dataset: str) -> dict[str, Any]:
    d, r, p = (len(keys_under(b, f"{s}/{dataset}/")) for s in STAGES)
    return {
        "dataset_id": dataset,
        "document_count": d,
        "representation_count": r,
        "parquet_count": p,
        "missing_representations": max(0, d - r),
        "missing_parquet": max(0, r - p),
        "is_complete": d <= r and r <= p,
    }


@pytest.mark.parametrize("dataset", ["usc", "dotgov"])
def test_status_json(b: LocalBucket, ep: str, dataset: str) -> None:
    proc = run("status", dataset, "--json", endpoint=ep)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == expected_status(b, dataset)


def test_status_human_and_csv(b: LocalBucket, ep: str, tmp_path: Path) -> None:
    csv_path = tmp_path / "status.csv"
    proc = run("status", "cap", "--csv", str(csv_path), endpoint=ep)
    assert proc.returncode == 0, proc.stderr
    expected = expected_status(b, "cap")
    assert "cap" in proc.stdout
    assert str(expected["document_count"]) in proc.stdout
    header, row = csv_path.read_text().splitlines()
    assert header.split(",") == [  # 0.2.0's column names
        "Dataset",
        "Documents",
        "Representations",
        "Parquet",
        "Missing Rep.",
        "Missing Parq.",
        "Is Complete",
    ]
    assert row.split(",") == [
        "cap",
        str(expected["document_count"]),
        str(expected["representation_count"]),
        str(expected["parquet_count"]),
        str(expected["missing_representations"]),
        str(expected["missing_parquet"]),
        str(expected["is_complete"]),
    ]


def test_status_key_prefix(b: LocalBucket, ep: str) -> None:
    first = ids_in(b, "documents", "usc")[0]
    prefix = first.split("/")[0]
    proc = run("status", "usc", "--key-prefix", prefix, "--json", endpoint=ep)
    assert proc.returncode == 0, proc.stderr
    n = len(keys_under(b, f"documents/usc/{prefix}/"))
    assert json.loads(proc.stdout)["document_count"] == n > 0


# -- documents ----------------------------------------------------------------------------------
@pytest.mark.parametrize("stage", STAGES)
def test_documents_json(b: LocalBucket, ep: str, stage: str) -> None:
    proc = run("documents", "usc", "--stage", stage, "--json", endpoint=ep)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    expected = ids_in(b, stage, "usc")
    assert data == {
        "dataset_id": "usc",
        "stage": stage,
        "documents": expected,
        "document_count": len(expected),
    }


def test_documents_human_limit_and_prefix(b: LocalBucket, ep: str) -> None:
    expected = ids_in(b, "documents", "fdlp")
    proc = run("documents", "fdlp", "--limit", "7", endpoint=ep)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == expected[:7]
    prefix = expected[0].split("/")[0]
    proc = run("documents", "fdlp", "--key-prefix", prefix, endpoint=ep)
    assert proc.stdout.splitlines() == [i for i in expected if i.startswith(prefix + "/")]


def test_documents_count(b: LocalBucket, ep: str) -> None:
    proc = run("documents", "ecfr", "--count", "--json", endpoint=ep)
    assert proc.returncode == 0, proc.stderr
    n = len(ids_in(b, "documents", "ecfr"))
    assert json.loads(proc.stdout) == {
        "dataset_id": "ecfr",
        "stage": "documents",
        "document_count": n,
    }
    proc = run("documents", "ecfr", "--count", endpoint=ep)
    assert proc.stdout.strip() == str(n)


def test_documents_output_file(b: LocalBucket, ep: str, tmp_path: Path) -> None:
    out = tmp_path / "ids.txt"
    proc = run("documents", "cap", "-o", str(out), "--json", endpoint=ep)
    assert proc.returncode == 0, proc.stderr
    expected = ids_in(b, "documents", "cap")
    assert json.loads(proc.stdout)["document_count"] == len(expected)
    assert json.loads(out.read_text())["documents"] == expected


def test_documents_stream_to_closed_pipe(ep: str) -> None:
    """`kl3m-client documents usc | head -1`: the first id comes at once, no traceback."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "kl3m_data_client.cli", "--endpoint-url", ep, "documents", "usc"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env(),
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    assert first.strip()
    proc.stdout.close()
    assert proc.wait(timeout=60) == 0
    assert b"Traceback" not in proc.stderr.read()
    proc.stderr.close()


# -- inspect ------------------------------------------------------------------------------------
def test_inspect_documents_json(ep: str, doc: GeneratedDocument) -> None:
    proc = run("inspect", "usc", doc.document_id, "--json", endpoint=ep)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["dataset_id"] == "usc"
    assert data["document_id"] == doc.document_id
    assert data["stage"] == "documents"
    assert data["content_type"] == "document"  # 0.2.0's field and values
    assert data["mime_type"] == doc.mime_type
    assert data["metadata"]["title"] == doc.title
    assert data["metadata"]["format"] == doc.mime_type
    assert set(data["metadata"]) == {"identifier", "source", "title", "format"}
    assert doc.raw.decode("utf-8").startswith(data["content_preview"].rstrip("…"))


def test_inspect_representations_json(ep: str, doc: GeneratedDocument) -> None:
    proc = run(
        "inspect", "usc", doc.document_id, "--stage", "representations", "--json", endpoint=ep
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["content_type"] == "representation"
    assert data["mime_type"] == doc.representation_mime
    assert data["available_representations"] == [doc.representation_mime]
    assert data["representation_preview"]["type"] == doc.representation_mime
    assert doc.text.startswith(data["representation_preview"]["content"].rstrip("…"))
    assert data["metadata"]["identifier"] == doc.identifier
    assert doc.text.startswith(data["content_preview"].rstrip("…"))
    proc = run(
        "inspect",
        "usc",
        doc.document_id,
        "--stage",
        "representations",
        "--representation",
        "application/pdf",
        endpoint=ep,
    )
    assert proc.returncode == 1
    assert doc.representation_mime in one_error_line(proc)


def test_inspect_parquet_json(ep: str, doc: GeneratedDocument) -> None:
    proc = run("inspect", "usc", doc.document_id, "--stage", "parquet", "--json", endpoint=ep)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["metadata"]["identifier"] == doc.identifier
    assert data["content_preview"].startswith(f"[{doc.tokens[0]}, {doc.tokens[1]},")
    assert f"({len(doc.tokens):,} tokens)" in data["content_preview"]
    assert data["content_type"] == "parquet"
    assert data["representations"] == {doc.representation_mime: len(doc.tokens)}
    assert data["table"]["rows"] == 1 and "representations" in data["table"]["columns"]
    assert data["size"] > 0


def test_inspect_human(ep: str, doc: GeneratedDocument) -> None:
    proc = run("inspect", "usc", doc.document_id, endpoint=ep)
    assert proc.returncode == 0, proc.stderr
    assert doc.title in proc.stdout
    assert "content preview" in proc.stdout
    assert "blake2b" in proc.stdout and "ok" in proc.stdout


# -- get ----------------------------------------------------------------------------------------
def test_get_to_stdout(b: LocalBucket, ep: str, doc: GeneratedDocument) -> None:
    proc = run_bytes("get", "usc", doc.document_id, endpoint=ep)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == doc.raw
    proc = run_bytes("get", "usc", doc.document_id, "--stage", "representations", endpoint=ep)
    assert proc.stdout == b.corpus.objects[doc.representation_key]


def test_get_into_directory(b: LocalBucket, ep: str, tmp_path: Path) -> None:
    binary = next(d for d in b.corpus.documents if d.mime_type == "application/pdf")
    out = tmp_path / "dl"
    proc = run("get", binary.dataset_id, binary.document_id, "-o", f"{out}/", "--json", endpoint=ep)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    path = Path(data["path"])
    assert path.parent == out
    assert "/" not in path.name and path.read_bytes() == binary.raw
    assert data["bytes"] == len(binary.raw)
    # an existing file is not replaced without --overwrite
    proc = run("get", binary.dataset_id, binary.document_id, "-o", str(out), endpoint=ep)
    assert proc.returncode == 1
    assert "--overwrite" in one_error_line(proc)
    proc = run(
        "get", binary.dataset_id, binary.document_id, "-o", str(out), "--overwrite", endpoint=ep
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == [path.name]  # no temporary file left


def test_get_stage_parquet_to_file(
    b: LocalBucket, ep: str, doc: GeneratedDocument, tmp_path: Path
) -> None:
    target = tmp_path / "x.bin"
    proc = run("get", "usc", doc.document_id, "--stage", "parquet", "-o", str(target), endpoint=ep)
    assert proc.returncode == 0, proc.stderr
    assert target.read_bytes() == b.corpus.objects[doc.parquet_key]


EVIL_IDS = ["C:/x", "C:\\x", "a\\..\\..\\x", "..\\..\\x", "..x/..y", "CON", " . /.hidden"]


@pytest.fixture(scope="module")
def evil_bucket(kl3m_server: LocalS3Server) -> Iterator[LocalBucket]:
    objects = {
        f"documents/evil/{doc_id}.json": encode_document_object(
            {"identifier": doc_id, "format": "text/plain"},
            f"content of {doc_id}".encode(),
            document_id=doc_id,
            dataset_id="evil",
        )
        for doc_id in EVIL_IDS
    }
    bucket = kl3m_server.create_bucket(objects=objects)
    try:
        yield bucket
    finally:
        bucket.close()


@pytest.mark.parametrize("doc_id", EVIL_IDS)
def test_get_path_safety_of_stored_ids(
    evil_bucket: LocalBucket, tmp_path: Path, doc_id: str
) -> None:
    out = tmp_path / "a" / "b"
    out.mkdir(parents=True)
    proc = run(
        "get",
        "evil",
        doc_id,
        "-o",
        str(out),
        "--json",
        endpoint=evil_bucket.endpoint_url,
        bucket=evil_bucket.bucket,
    )
    assert proc.returncode == 0, proc.stderr
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) == 1
    assert written[0].parent == out
    assert written[0].read_bytes() == f"content of {doc_id}".encode()
    assert Path(json.loads(proc.stdout)["path"]) == written[0]
    assert not written[0].name.startswith((".", " "))


@pytest.mark.parametrize(
    "doc_id", ["../x", "a/../../x", "/abs", "/etc/passwd", ".", "../../escape"]
)
def test_get_rejects_escaping_ids(ep: str, tmp_path: Path, doc_id: str) -> None:
    out = tmp_path / "a" / "b"
    out.mkdir(parents=True)
    proc = run("get", "dirty", doc_id, "-o", str(out), endpoint=ep)  # dirty has ../../escape
    assert proc.returncode == 2, proc.stderr
    assert "invalid input" in one_error_line(proc)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


# -- errors -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args",
    [
        ["status", "nope"],
        ["status", "nope", "--json"],
        ["documents", "nope"],
        ["documents", "nope", "--json"],
        ["documents", "nope", "--count"],
        ["inspect", "nope", "x"],
        ["get", "nope", "x"],
    ],
)
def test_missing_dataset_exit_1(ep: str, args: list[str]) -> None:
    proc = run(*args, endpoint=ep)
    assert proc.returncode == 1
    assert proc.stdout == ""
    line = one_error_line(proc)
    assert "'nope'" in line and "kl3m-client list" in line


@pytest.mark.parametrize("command", ["inspect", "get"])
@pytest.mark.parametrize("stage", [None, "representations"])
def test_missing_document_exit_1(ep: str, command: str, stage: str | None) -> None:
    extra = ["--stage", stage] if stage else []
    proc = run(command, "dotgov" if stage else "usc", "no/such/doc", *extra, endpoint=ep)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert "no/such/doc" in one_error_line(proc)


@pytest.mark.parametrize(
    ("command", "doc_id", "stage"),
    [
        ("inspect", "bad-base64", "documents"),
        ("inspect", "bad-json", "representations"),
        ("inspect", "zlib-bomb", "documents"),
        ("inspect", "corrupt-parquet", "parquet"),
        ("get", "bad-zlib", "documents"),
        ("get", "blake2b-mismatch", "documents"),
    ],
)
def test_corrupt_object_exit_1(ep: str, command: str, doc_id: str, stage: str) -> None:
    proc = run(command, "dirty", doc_id, "--stage", stage, endpoint=ep)
    if command == "get":  # --stage writes the object as stored: use the decoding path
        proc = run(command, "dirty", doc_id, endpoint=ep)
    assert proc.returncode == 1
    assert proc.stdout == ""
    line = one_error_line(proc)
    assert "corrupt object" in line and doc_id in line


class _Forbidden(http.server.BaseHTTPRequestHandler):
    """An S3 endpoint that rejects every request's credentials (as AWS does for a bad key)."""

    def _deny(self) -> None:
        body = (
            b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InvalidAccessKeyId</Code>'
            b"<Message>The AWS Access Key Id you provided does not exist in our records."
            b"</Message><RequestId>1</RequestId></Error>"
        )
        self.send_response(403)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_PUT = do_POST = _deny

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _ForbiddenServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client hanging up on the 403 is expected; anything else is printed as usual
        (the CLI runs in-process: the server's stderr is the captured CLI stderr)."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@pytest.fixture(scope="module")
def forbidden_endpoint() -> Iterator[str]:
    server = _ForbiddenServer(("127.0.0.1", 0), _Forbidden)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize("args", [["list"], ["status", "usc", "--json"], ["inspect", "usc", "x"]])
def test_bad_credentials_exit_1(forbidden_endpoint: str, args: list[str]) -> None:
    proc = run(*args, endpoint=forbidden_endpoint)
    assert proc.returncode == 1
    assert proc.stdout == ""
    line = one_error_line(proc)
    assert "access denied" in line and "credentials" in line


def test_tracebacks_only_with_verbose(forbidden_endpoint: str) -> None:
    proc = run("--verbose", "list", endpoint=forbidden_endpoint, process=True)
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr
    assert SECRET not in proc.stderr


def test_unreachable_endpoint_exit_1() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # the port is closed now: connections are refused at once
    start = time.monotonic()
    proc = run(
        "--max-attempts",
        "1",
        "--connect-timeout",
        "2",
        "status",
        "usc",
        endpoint=f"http://127.0.0.1:{port}",
        process=True,
    )
    assert time.monotonic() - start < 30
    assert proc.returncode == 1
    line = one_error_line(proc)
    assert "connection failed" in line and f"127.0.0.1:{port}" in line


def test_endpoint_from_environment(b: LocalBucket) -> None:
    env = cli_env(KL3M_ENDPOINT_URL=b.endpoint_url, KL3M_BUCKET=b.bucket)
    proc = run("status", "usc", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == expected_status(b, "usc")


# -- export -------------------------------------------------------------------------------------
def read_jsonl_ids(report: dict[str, Any]) -> list[str]:
    import gzip

    ids = []
    for part in report["parts"]:
        path = Path(part["path"])
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as fh:
            ids.extend(json.loads(line)["id"] for line in fh)
    return ids


def test_export_jsonl_json_and_resume(b: LocalBucket, ep: str, tmp_path: Path) -> None:
    dest = tmp_path / "usc"
    args = ["export", "usc", str(dest), "--stage", "representations", "--compression", "gzip"]
    proc = run(*args, "--json", endpoint=ep)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    expected = ids_in(b, "representations", "usc")
    assert report["exported"] == len(expected) and report["errors"] == 0
    assert report["partial"] is False and report["resumed"] is False
    assert read_jsonl_ids(report) == expected
    # the same command again: nothing left to do, same files, human output
    proc = run(*args, endpoint=ep)
    assert proc.returncode == 0, proc.stderr
    assert "resumed" in proc.stdout and f"{len(expected)} documents exported" in proc.stdout
    # other options into the same destination are refused unless --overwrite
    proc = run("export", "usc", str(dest), "--format", "parquet", "--json", endpoint=ep)
    assert proc.returncode in (1, 2)
    assert proc.stdout == ""
    assert "overwrite" in one_error_line(proc)


def test_export_quiet_reads_no_dataset_index(b: LocalBucket, tmp_path: Path) -> None:
    """The index is read only for the progress total: ``--quiet`` shows none, so the export
    does not GET it (seen at a proxy in front of the bucket)."""
    from kl3m_data_client.testing._faults import FaultPlan, RequestInfo, run_fault_proxy

    paths: list[str] = []

    def record(info: RequestInfo) -> None:
        paths.append(info.path)

    with run_fault_proxy(b.endpoint_url, FaultPlan(0.0, credential_check=record)) as proxy:
        index_gets = []
        for flags in ([], ["--quiet"]):
            paths.clear()
            dest = tmp_path / f"out{len(flags)}"
            proc = run("export", "usc", str(dest), *flags, endpoint=proxy.endpoint_url)
            assert proc.returncode == 0, proc.stderr
            assert any("/documents/usc/" in path for path in paths)
            index_gets.append(sum("/index/usc" in path for path in paths))
    assert index_gets == [1, 0]


def test_export_parquet_ids_shard(b: LocalBucket, ep: str, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    wanted = ids_in(b, "representations", "fdlp")[:10]
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("\n".join(wanted) + "\n")
    shards = []
    for i in range(2):
        dest = tmp_path / f"shard-{i}"
        proc = run(
            "export", "fdlp", str(dest), "--stage", "representations", "--format", "parquet",
            "--ids", str(ids_file), "--shard", f"{i}/2", "--workers", "1", "-q", "--json",
            endpoint=ep,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout)
        shards.append(
            {r["id"] for p in report["parts"] for r in pq.read_table(p["path"]).to_pylist()}
        )
    assert shards[0].isdisjoint(shards[1])
    assert shards[0] | shards[1] == set(wanted)


def test_export_partial_exit_3(ep: str, tmp_path: Path) -> None:
    proc = run(
        "export", "dirty", str(tmp_path / "d"), "--stage", "representations", "--json", endpoint=ep
    )
    assert proc.returncode == 3, proc.stderr
    report = json.loads(proc.stdout)
    assert report["partial"] is True and report["errors"] > 0
    assert Path(report["errors_path"]).read_text().strip()
    proc = run("export", "dirty", str(tmp_path / "h"), "--stage", "representations", endpoint=ep)
    assert proc.returncode == 3
    assert "partial export" in proc.stdout


# -- demo ---------------------------------------------------------------------------------------
def launchers_of(pid: int) -> list[int]:
    """Local S3 server processes started by process ``pid`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"kl3m_data_client.testing._launcher" in cmdline and str(pid).encode() in cmdline:
            found.append(int(entry.name))
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_demo_json_leaves_no_process(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "kl3m_data_client.cli", "demo", "--documents", "30", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env(),
        cwd=tmp_path,
        text=True,
    )
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    data = json.loads(out)
    assert sorted(data["datasets"]) == ["cap", "dotgov", "ecfr", "fdlp", "usc"]
    assert [s["dataset_id"] for s in data["status"]] == sorted(data["datasets"])
    formats = [e["format"] for e in data["exports"]]
    assert formats == ["jsonl", "parquet"]
    for export in data["exports"]:
        assert export["exported"] > 0
        for part in export["parts"]:
            assert Path(part["path"]).is_relative_to(tmp_path / "kl3m-demo")
    assert launchers_of(proc.pid) == []


#: ``python -m kl3m_data_client.cli`` with Python's own SIGINT handler, as in a terminal.
_WITH_SIGINT = (
    "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "runpy.run_module('kl3m_data_client.cli', run_name='__main__', alter_sys=True)"
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_demo_interrupted_exit_130(tmp_path: Path) -> None:
    import signal

    proc = subprocess.Popen(
        # Ctrl-C handled even if this test runs with SIGINT ignored (a background job);
        # enough documents that the demo is still running when the signal comes
        [sys.executable, "-c", _WITH_SIGINT, "demo", "--documents", "600"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=cli_env(),
        cwd=tmp_path,
        text=True,
    )
    assert proc.stderr is not None
    with proc.stderr:
        assert "starting a local S3 server" in proc.stderr.readline()
        time.sleep(0.5)
        assert proc.poll() is None, "the demo finished before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
        rest = proc.stderr.read()
    assert "interrupted" in rest and "Traceback" not in rest
    assert launchers_of(proc.pid) == []
