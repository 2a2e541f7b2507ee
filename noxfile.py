"""Developer sessions: tests, lint, typecheck, docs, bench."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "contracts", "tests"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite against the embedded local bucket."""
    session.install("-e", ".[dev]")
    session.run("python", "-m", "pytest", "-q", *session.posargs)


@nox.session
def reference(session: nox.Session) -> None:
    """The tests and examples of kl3m-data-client==0.2.0 (its sdist, fetched with pip into
    ~/.cache/kl3m-data-client/reference) run unchanged against this package on a local
    bucket; see tests/reference_suite.py and docs/migrating.md."""
    session.install("-e", ".[dev]")
    session.run("python", "tests/reference_suite.py", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff")
    session.run("ruff", "check", "src", "tests", "benchmarks", "noxfile.py", "docs/_hooks.py")
    session.run(
        "ruff", "format", "--check", "src", "tests", "benchmarks", "noxfile.py", "docs/_hooks.py"
    )


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on src/."""
    session.install("-e", ".[dev]")
    session.run("mypy")


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site (mkdocs.yml): guides plus the API reference generated from the
    docstrings, built with --strict (any warning fails) into ./site (git-ignored); offline."""
    session.install("-e", ".[docs]", "ruff")  # ruff lays out the long signatures
    session.run("mkdocs", "build", "--strict", *session.posargs)


@nox.session
def contracts(session: nox.Session) -> None:
    """The import layers of pyproject.toml ([tool.importlinter]) with import-linter."""
    session.install("-e", ".[dev]")
    session.run("lint-imports")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks side by side (see benchmarks/README.md): this package as a default install
    plus the bench extra (the pinned peers, matplotlib for the chart); arguments go to
    benchmarks/run.py, e.g. `nox -s bench -- --docs 10000`."""
    session.install("-e", ".[bench]")
    session.run("python", "benchmarks/run.py", *session.posargs)
