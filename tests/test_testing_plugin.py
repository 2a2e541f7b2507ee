"""The pytest plugin: fixtures, the kl3m_corpus marker and cleanup at session end."""

from __future__ import annotations

import os
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from kl3m_data_client.testing import DEFAULT_BUCKET, LocalBucket, LocalS3Server


def _plugin_autoloaded() -> bool:
    if os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        return False
    return any(ep.name == "kl3m_data_client" for ep in entry_points(group="pytest11"))


# When the package is installed, the pytest11 entry point loads the plugin; in a source
# checkout without an install, load it here (registering it twice would be an error).
pytest_plugins = ["pytester"]
if not _plugin_autoloaded():
    pytest_plugins.append("kl3m_data_client.testing._plugin")

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")


def s3(bucket: LocalBucket) -> Any:
    return boto3.client(
        "s3", config=Config(s3={"addressing_style": "path"}), **bucket.boto_kwargs()
    )


def keys(bucket: LocalBucket) -> set[str]:
    client = s3(bucket)
    out: set[str] = set()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket.bucket):
        out.update(o["Key"] for o in page.get("Contents", []))
    return out


def test_corpus_bucket_fixture(kl3m_corpus_bucket: LocalBucket, kl3m_server: LocalS3Server) -> None:
    assert kl3m_corpus_bucket.bucket == DEFAULT_BUCKET
    assert kl3m_corpus_bucket.server is kl3m_server
    corpus = kl3m_corpus_bucket.corpus
    assert corpus.dirty and corpus.corrupt and "dirty" in corpus.datasets
    assert corpus.n_documents == 200
    assert keys(kl3m_corpus_bucket) == set(corpus.objects)


_SEEN: list[str] = []


def test_function_bucket_defaults(kl3m_bucket: LocalBucket, kl3m_server: LocalS3Server) -> None:
    assert kl3m_bucket.server is kl3m_server
    assert kl3m_bucket.bucket != DEFAULT_BUCKET
    corpus = kl3m_bucket.corpus
    assert (corpus.n_documents, corpus.seed, corpus.dirty) == (20, 0, False)
    assert keys(kl3m_bucket) == set(corpus.objects)
    kl3m_bucket.put_objects({"scratch/written-by-test": b"x"})
    _SEEN.append(kl3m_bucket.bucket)


@pytest.mark.kl3m_corpus(n_documents=7, seed=3, dirty=True)
def test_function_bucket_marker(kl3m_bucket: LocalBucket) -> None:
    corpus = kl3m_bucket.corpus
    assert (corpus.n_documents, corpus.seed, corpus.dirty) == (7, 3, True)
    assert len(corpus.documents) == 7
    assert keys(kl3m_bucket) == set(corpus.objects)
    # isolation: a fresh bucket per test, the previous one is gone
    assert _SEEN and kl3m_bucket.bucket not in _SEEN
    with pytest.raises(ClientError):
        s3(kl3m_bucket).list_objects_v2(Bucket=_SEEN[0])


def test_plugin_in_its_own_session_stops_the_server(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pid_file = tmp_path / "server.pid"
    monkeypatch.setenv("KL3M_PID_FILE", str(pid_file))
    # load the plugin explicitly, whether or not the package is installed
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makeini("[pytest]\nkl3m_corpus_documents = 10\nkl3m_corpus_seed = 4\n")
    pytester.makepyfile(
        test_inner="""
        import os
        import pytest

        @pytest.mark.kl3m_corpus(n_documents=3, seed=9)
        def test_marker(kl3m_bucket, kl3m_server):
            with open(os.environ["KL3M_PID_FILE"], "w") as f:
                f.write(str(kl3m_server.pid))
            assert (kl3m_bucket.corpus.n_documents, kl3m_bucket.corpus.seed) == (3, 9)

        def test_ini(kl3m_corpus_bucket):
            c = kl3m_corpus_bucket.corpus
            assert (c.n_documents, c.seed, c.dirty) == (10, 4, True)

        @pytest.mark.kl3m_corpus(bogus=1)
        def test_bad_marker(kl3m_bucket):
            pass
        """
    )
    result = pytester.runpytest_subprocess(
        "-p", "kl3m_data_client.testing._plugin", "--strict-markers", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*unknown kl3m_corpus marker arguments*bogus*"])
    pid = int(pid_file.read_text())
    assert not Path(f"/proc/{pid}").exists() or " Z " in Path(f"/proc/{pid}/stat").read_text()


def test_marker_is_registered(pytestconfig: pytest.Config) -> None:
    markers = pytestconfig.getini("markers")
    assert any(str(m).startswith("kl3m_corpus(") for m in markers)


#: Modules the plugin must not load until a fixture is used: the server modules, the corpus
#: generator, moto and its HTTP stack, and the async AWS stack.
_HEAVY = (
    "kl3m_data_client.testing._server",
    "kl3m_data_client.testing._bucket",
    "kl3m_data_client.testing._child",
    "kl3m_data_client.testing._corpus",
    "moto",
    "aiobotocore",
    "aiohttp",
    "botocore",
    "boto3",
    "werkzeug",
)

#: Prints what importing ``MODULE`` loaded of ``HEAVY``, the threads it started and the exit
#: hooks it registered (pytest, which registers one of its own, is imported first).
_PROBE = """
import atexit, sys, threading
import pytest
hooks, threads = atexit._ncallbacks(), threading.active_count()
import {module}
heavy = {heavy!r}
loaded = sorted(m for m in sys.modules if m in heavy or m.startswith(tuple(h + "." for h in heavy)))
print(loaded, threading.active_count() - threads, atexit._ncallbacks() - hooks)
"""


def _probe(module: str, heavy: tuple[str, ...]) -> str:
    import subprocess

    code = _PROBE.format(module=module, heavy=heavy)
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    return proc.stdout.strip()


def test_loading_the_plugin_imports_nothing_heavy() -> None:
    """The pytest11 entry point loads nothing heavy, starts no thread, registers no hook."""
    assert _probe("kl3m_data_client.testing._plugin", _HEAVY) == "[] 0 0"


def test_importing_the_server_modules_starts_nothing() -> None:
    """Threads (the spawner, the corpus warmer) and the exit hook come with the first server,
    not with the import of the modules a fixture needs."""
    assert _probe("kl3m_data_client.testing._bucket", ("moto", "werkzeug")) == "[] 0 0"


def test_fixtures_are_listed_without_being_used(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``pytest --fixtures`` lists the plugin's fixtures (with their docstrings) although
    nothing heavy was imported to register them."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    result = pytester.runpytest_subprocess(
        "-p", "kl3m_data_client.testing._plugin", "-p", "no:cacheprovider", "--fixtures"
    )
    assert result.ret == 0
    result.stdout.fnmatch_lines_random(
        [
            "kl3m_server *",
            "*A local moto S3 server*",
            "kl3m_corpus_bucket *",
            "*Shared read-only bucket*",
            "kl3m_bucket *",
            "*A fresh bucket for one test*",
        ]
    )
