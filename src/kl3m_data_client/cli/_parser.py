"""The argparse parser of ``kl3m-client`` (stdlib only: building it imports nothing heavy)."""

from __future__ import annotations

import argparse
import os

from kl3m_data_client._version import __version__
from kl3m_data_client.cli._argtypes import (
    non_negative_float,
    non_negative_int,
    parse_shard,
    parse_workers,
    positive_float,
    positive_int,
    size,
)

STAGES = ("documents", "representations", "parquet")

_DESCRIPTION = """\
Read the KL3M legal data bucket (s3://data.kl3m.ai) from the terminal: list datasets,
count their objects per stage, stream document ids, inspect or download one document, and
export whole datasets to JSONL or Parquet.

Every command takes --json: exactly one JSON document is written to stdout, and logs and
progress go to stderr. AWS credentials come from the usual places (AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY, AWS_PROFILE or --profile, ~/.aws, SSO, instance roles).
"""

_EPILOG = """\
environment:
  KL3M_BUCKET               default for --bucket
  KL3M_ENDPOINT_URL         default for --endpoint-url (then AWS_ENDPOINT_URL_S3,
                            AWS_ENDPOINT_URL)
  AWS_*                     read by botocore: credentials, AWS_PROFILE, AWS_DEFAULT_REGION
  NO_COLOR                  disable colour in human output

exit status:
  0 success, 1 error, 2 usage error or invalid input, 3 partial success (export with
  failed documents), 4 export stopped by an outage or other systemic failure (resumable:
  rerun the same command), 130 interrupted

examples:
  kl3m-client list
  kl3m-client status usc --json | jq .document_count
  kl3m-client documents usc --limit 10
  kl3m-client inspect usc 1-1/10
  kl3m-client get cap 1001 -o downloads/
  kl3m-client export usc ./usc-export --format parquet
  kl3m-client demo
"""


def _global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """Options accepted before and after the command name.

    The sub-parsers use ``SUPPRESS`` defaults so that a value given before the command is
    not overwritten by the sub-parser's default.
    """

    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    group = parser.add_argument_group("connection")
    group.add_argument(
        "--bucket",
        metavar="NAME",
        default=default(os.environ.get("KL3M_BUCKET") or "data.kl3m.ai"),
        help="bucket name (default: $KL3M_BUCKET or data.kl3m.ai)",
    )
    group.add_argument(
        "--region", metavar="REGION", default=default(None), help="AWS region (default: botocore)"
    )
    group.add_argument(
        "--profile", metavar="NAME", default=default(None), help="AWS profile in ~/.aws"
    )
    group.add_argument(
        "--endpoint-url",
        metavar="URL",
        default=default(None),
        help="S3-compatible endpoint (default: $KL3M_ENDPOINT_URL, $AWS_ENDPOINT_URL_S3, "
        "$AWS_ENDPOINT_URL, else AWS)",
    )
    group.add_argument(
        "--aws-access-key-id",
        metavar="ID",
        default=default(None),
        help="access key id (as in 0.2.0; prefer $AWS_ACCESS_KEY_ID or --profile)",
    )
    group.add_argument(
        "--aws-secret-access-key",
        metavar="KEY",
        default=default(None),
        help="secret access key (visible to other users in the process list; prefer "
        "$AWS_SECRET_ACCESS_KEY or --profile)",
    )
    group.add_argument(
        "--no-sign-request",
        action="store_true",
        default=default(False),
        help="send anonymous (unsigned) requests",
    )
    group.add_argument(
        "--requester-pays",
        action="store_true",
        default=default(False),
        help="accept requester-pays charges",
    )
    group.add_argument(
        "--max-concurrency",
        metavar="N",
        type=positive_int,
        default=default(None),
        help="S3 requests in flight (default: 64)",
    )
    group.add_argument(
        "--data-plane",
        choices=("auto", "obstore", "aiobotocore"),
        default=default(None),
        help="what carries object GETs: obstore where possible (auto, the default) or aiobotocore",
    )
    group.add_argument(
        "--memory-budget",
        metavar="SIZE",
        type=size,
        default=default(None),
        help="bytes the documents in flight may hold, e.g. 512MiB (default: 1GiB)",
    )
    group.add_argument(
        "--connect-timeout",
        metavar="SECONDS",
        type=positive_float,
        default=default(None),
        help="TCP connect timeout (default: 10)",
    )
    group.add_argument(
        "--max-attempts",
        metavar="N",
        type=positive_int,
        default=default(None),
        help="attempts per request, retries included (default: 5)",
    )
    out = parser.add_argument_group("output")
    out.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="write one JSON document to stdout",
    )
    out.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default(False),
        help="log requests to stderr; show tracebacks",
    )
    out.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=default(False),
        help="no progress and no notes on stderr (errors still are)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``kl3m-client`` parser."""
    parser = argparse.ArgumentParser(
        prog="kl3m-client",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"kl3m-client {__version__}")
    _global_options(parser, suppress=False)

    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, suppress=True)

    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help_text: str, description: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=help_text,
            description=description,
            parents=[common],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    command(
        "list",
        "list the datasets and the stages each one has",
        "List every dataset of the bucket with whether it has objects in the documents, "
        "representations and parquet stages.",
    )

    p = command(
        "status",
        "count a dataset's objects in each stage",
        "Count the objects of a dataset in each stage (listed concurrently) and how many "
        "documents miss a representation or a parquet file.",
    )
    p.add_argument("dataset", metavar="DATASET")
    p.add_argument("--key-prefix", metavar="P", help="only ids below this sub-path")
    p.add_argument("--csv", metavar="FILE", help="also write the status as CSV to FILE")

    p = command(
        "documents",
        "stream the document ids of a dataset",
        "Stream the document ids of a dataset in listing order (constant memory; the first "
        "ids appear at once, whatever the size of the dataset).",
    )
    p.add_argument("dataset", metavar="DATASET")
    p.add_argument("--stage", choices=STAGES, default="documents", help="(default: documents)")
    p.add_argument("--key-prefix", metavar="P", help="only ids below this sub-path")
    p.add_argument(
        "--limit", metavar="N", type=non_negative_int, help="stop after N ids (0: no limit)"
    )
    p.add_argument("--count", action="store_true", help="print only the number of ids")
    p.add_argument(
        "-o", "--output", metavar="FILE", help="write the ids (or the JSON) to FILE, not stdout"
    )

    p = command(
        "inspect",
        "show a document's metadata and a preview of its content",
        "Fetch one document in a stage and show its metadata and the start of its content.",
    )
    p.add_argument("dataset", metavar="DATASET")
    p.add_argument("document_id", metavar="DOCUMENT_ID")
    p.add_argument("--stage", choices=STAGES, default="documents", help="(default: documents)")
    p.add_argument(
        "--representation",
        metavar="MIME",
        help="representation to preview (representations stage; default: markdown, else "
        "plain text, else the first)",
    )
    p.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="write the stage's content to FILE (JSON; the parquet object as stored)",
    )
    p.add_argument(
        "--preview-chars",
        metavar="N",
        type=non_negative_int,
        default=500,
        help="length of the content preview (default: 500)",
    )

    p = command(
        "get",
        "download a document's original bytes (or a stage's object)",
        "Write a document's original bytes (the decoded content of its documents-stage "
        "object) to a file or stdout. With --stage, write that stage's object as stored.",
    )
    p.add_argument("dataset", metavar="DATASET")
    p.add_argument("document_id", metavar="DOCUMENT_ID")
    p.add_argument("--stage", choices=STAGES, help="write this stage's object as stored")
    p.add_argument(
        "-o",
        "--output",
        metavar="PATH",
        help="a file, or an existing directory (or a path ending in '/') to write into under "
        "a safe name derived from the id; '-' or nothing: stdout",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")

    p = command(
        "export",
        "export a dataset to JSONL or Parquet (resumable)",
        "Export a dataset (or a shard, prefix or list of ids of it) to JSONL or Parquet part "
        "files under DEST. Rerunning the same command on an unfinished destination resumes it.",
    )
    p.add_argument("dataset", metavar="DATASET")
    p.add_argument("destination", metavar="DEST", help="output directory")
    p.add_argument("--stage", choices=STAGES, help="source stage (default: documents)")
    p.add_argument("--format", choices=("jsonl", "parquet"), help="(default: jsonl)")
    p.add_argument(
        "--compression",
        choices=("none", "gzip", "zstd", "snappy"),
        help="jsonl: none, gzip or zstd; parquet: zstd or snappy",
    )
    p.add_argument("--content", choices=("tokens", "text"), help="what records carry")
    p.add_argument("--key-prefix", metavar="P", help="only ids below this sub-path")
    p.add_argument("--ids", metavar="FILE", help="export only the ids listed in FILE")
    p.add_argument("--max-documents", metavar="N", type=positive_int)
    p.add_argument("--mime-types", metavar="TYPES", help="keep these MIME types (comma-separated)")
    p.add_argument("--min-tokens", metavar="N", type=non_negative_int, help="token count floor")
    p.add_argument("--max-tokens", metavar="N", type=non_negative_int, help="token count cap")
    p.add_argument(
        "--deduplicate",
        action="store_true",
        default=None,
        help="drop records already exported (one worker)",
    )
    p.add_argument("--records-per-part", metavar="N", type=positive_int, help="(default: 100000)")
    p.add_argument("--shard", metavar="I/N", type=parse_shard, help="export shard I of N")
    p.add_argument(
        "--workers",
        metavar="N|auto",
        type=parse_workers,
        help="exporters in parallel: a count, or 'auto' (the default: one per usable CPU, "
        "at most 8; 1 below 2,000 documents)",
    )
    p.add_argument(
        "--no-resume",
        dest="resume",
        action="store_false",
        default=None,
        help="refuse to continue an unfinished export in DEST",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a different export in DEST")
    p.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="spread the export over a Ray cluster (ADDRESS, 'auto', or a new local cluster); "
        "needs --shards and the 'ray' extra",
    )
    p.add_argument("--shards", metavar="N", type=positive_int, help="shards (with --ray)")
    p.add_argument(
        "--outage-timeout",
        metavar="SECONDS",
        type=non_negative_float,
        help="how long to wait for S3 to come back after connection failures, throttling "
        "or 5xx before stopping (exit 4, resumable; default: 300)",
    )
    p.add_argument(
        "--retry-errors",
        action="store_true",
        help="once the export is finished, fetch the objects listed in errors.jsonl again: "
        "recovered records go to new parts (part-r<N>-*), errors.jsonl keeps what still fails",
    )

    p = command(
        "demo",
        "run a tour against a local bucket (needs the 'local' extra)",
        "Start a local S3 server with a synthetic KL3M bucket, list its datasets, show a "
        "status table, export one dataset as JSONL and Parquet, and stop the server.",
    )
    p.add_argument(
        "-o", "--output", metavar="DIR", default="kl3m-demo", help="(default: ./kl3m-demo)"
    )
    p.add_argument(
        "--documents",
        metavar="N",
        type=positive_int,
        default=200,
        help="documents in the local bucket (default: 200)",
    )
    p.add_argument("--dataset", metavar="ID", default="usc", help="dataset to export")
    return parser
