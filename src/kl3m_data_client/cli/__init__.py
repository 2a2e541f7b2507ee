# PYTHON_ARGCOMPLETE_OK
"""``kl3m-client``: the command line of kl3m-data-client (see ``docs/cli.md``).

Only argparse is imported to parse the command line, so ``--help`` answers fast; the client
(aiobotocore, pyarrow) and rich load once a command runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from kl3m_data_client.cli._parser import build_parser

if TYPE_CHECKING:
    from kl3m_data_client._client import AsyncKL3MClient
    from kl3m_data_client.cli._ui import UI

__all__ = ["console", "main"]

EXIT_INTERRUPTED = 130


def endpoint_url(args: argparse.Namespace) -> str | None:
    """``--endpoint-url``, else ``$KL3M_ENDPOINT_URL``, ``$AWS_ENDPOINT_URL_S3``,
    ``$AWS_ENDPOINT_URL``."""
    for value in (
        args.endpoint_url,
        os.environ.get("KL3M_ENDPOINT_URL"),
        os.environ.get("AWS_ENDPOINT_URL_S3"),
        os.environ.get("AWS_ENDPOINT_URL"),
    ):
        if value:
            return str(value)
    return None


def make_client(args: argparse.Namespace) -> AsyncKL3MClient:
    """The client the global options describe (credentials: botocore's chain)."""
    from kl3m_data_client._client import AsyncKL3MClient

    options: dict[str, Any] = {
        "bucket": args.bucket,
        "region": args.region,
        "profile": args.profile,
        "endpoint_url": endpoint_url(args),
        "anonymous": args.no_sign_request,
        "requester_pays": args.requester_pays,
        "verbose": args.verbose,
        "aws_access_key_id": args.aws_access_key_id,
        "aws_secret_access_key": args.aws_secret_access_key,
    }
    if args.max_concurrency:
        options["max_concurrency"] = args.max_concurrency
    if args.memory_budget:
        options["memory_budget"] = args.memory_budget
    if args.data_plane:
        options["data_plane"] = args.data_plane
    if args.connect_timeout:
        options["connect_timeout"] = args.connect_timeout
    if args.max_attempts:
        options["max_attempts"] = args.max_attempts
    return AsyncKL3MClient(**options)


async def _run(args: argparse.Namespace, ui: UI) -> int:
    client = make_client(args)
    if args.command == "export":
        from kl3m_data_client.cli._standby import standby

        with standby(client, args):  # worker processes start now, before the client connects
            from kl3m_data_client.cli._export import cmd_export

            async with client:
                return await cmd_export(client, args, ui)
    from kl3m_data_client.cli import _commands

    commands = {
        "list": _commands.cmd_list,
        "status": _commands.cmd_status,
        "documents": _commands.cmd_documents,
        "inspect": _commands.cmd_inspect,
        "get": _commands.cmd_get,
    }
    async with client:
        return await commands[args.command](client, args, ui)


def _demo(args: argparse.Namespace, ui: UI) -> int:
    import asyncio

    from kl3m_data_client._client import AsyncKL3MClient
    from kl3m_data_client.cli._export import start_local_bucket, tour

    bucket = start_local_bucket(args.documents, ui)
    try:

        async def go() -> int:
            async with AsyncKL3MClient(**bucket.client_kwargs()) as client:
                return await tour(client, args, ui)

        return asyncio.run(go())
    finally:
        bucket.close()
        ui.note("local S3 server stopped")


def _setup_logging(verbose: bool) -> None:
    import logging

    if not verbose:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logger = logging.getLogger("kl3m_data_client")
    logger.addHandler(handler)
    # botocore's own debug log is left off: it prints request headers (session tokens)
    logger.setLevel(logging.DEBUG)


def _describe(exc: BaseException) -> tuple[str, int]:
    """The error line and exit status for an exception escaping a command."""
    from kl3m_data_client._errors import (
        AccessDeniedError,
        ConnectionFailedError,
        CorruptObjectError,
        InvalidInputError,
        KL3MError,
        NotFoundError,
    )
    from kl3m_data_client.cli._commands import EXIT_ERROR, EXIT_USAGE, UsageError

    if isinstance(exc, UsageError):
        return str(exc), EXIT_USAGE
    if isinstance(exc, InvalidInputError):
        return f"invalid input: {exc}", EXIT_USAGE
    if isinstance(exc, NotFoundError):
        return f"not found: {exc}", EXIT_ERROR
    if isinstance(exc, AccessDeniedError):
        return f"access denied: {exc}", EXIT_ERROR
    if isinstance(exc, ConnectionFailedError):
        return f"connection failed: {exc}", EXIT_ERROR
    if isinstance(exc, CorruptObjectError):
        return f"corrupt object: {exc}", EXIT_ERROR
    if isinstance(exc, KL3MError):
        return str(exc), EXIT_ERROR
    if isinstance(exc, FileExistsError):
        return str(exc.args[0] if exc.args else exc), EXIT_ERROR
    if isinstance(exc, OSError):
        where = f" {exc.filename!r}" if exc.filename else ""
        return f"cannot access{where}: {exc.strerror or exc}", EXIT_ERROR
    return (
        f"unexpected {type(exc).__name__}: {exc} (run with --verbose for the traceback)",
        EXIT_ERROR,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``kl3m-client`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    if "_ARGCOMPLETE" in os.environ:  # shell completion, only when argcomplete is installed
        try:
            import argcomplete
        except ImportError:
            pass
        else:
            argcomplete.autocomplete(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors (status 2)
        return exc.code if isinstance(exc.code, int) else 2

    from kl3m_data_client.cli._ui import UI

    ui = UI(json_mode=args.json, quiet=args.quiet, verbose=args.verbose)
    _setup_logging(args.verbose)
    try:
        if args.command == "demo":
            return _demo(args, ui)
        import asyncio

        return asyncio.run(_run(args, ui))
    except KeyboardInterrupt:
        ui.error("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader of stdout went away (e.g. '| head'): stop quietly
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except OSError:
            pass
        return 0
    except Exception as exc:
        message, status = _describe(exc)
        if args.verbose:
            import traceback

            traceback.print_exc(file=sys.stderr)
        ui.error(message)
        return status


def console() -> NoReturn:
    """The ``kl3m-client`` program (and ``python -m kl3m_data_client.cli``): :func:`main`,
    then a quick exit.

    Tearing the interpreter down (freeing every module: botocore's models, aiohttp, obstore)
    costs a finished command ~0.1 s. An exit handler registered here, before the command
    imports anything that registers its own, runs last (they run last-in, first-out): the
    other handlers (multiprocessing, thread pools) have run and every thread has been joined;
    it shuts logging down, flushes the standard streams and ends the process with
    ``os._exit``. An exception that escapes :func:`main` exits with status 1, as Python's own.
    """
    import atexit

    status = [1]
    atexit.register(_exit_now, status)
    status[0] = main()
    sys.exit(status[0])


def _exit_now(status: list[int]) -> None:
    """The last exit handler: logging and the standard streams flushed, then ``os._exit``
    (status 120 if a stream cannot be flushed, as Python's own exit)."""
    import logging

    code = status[0]
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            code = code or 120
    os._exit(code)
