"""Bucket keys: validation of user-supplied ids and the mapping id <-> key per stage."""

from __future__ import annotations

import re

from kl3m_data_client._errors import InvalidInputError
from kl3m_data_client.models.common import DATA_STAGES, Stage

_STAGE_VALUES = tuple(s.value for s in DATA_STAGES)
#: C0 controls (NUL, ESC, newlines, ...), DEL and C1 controls: never part of a safe id.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def _check_segments(kind: str, value: str) -> None:
    if "\x00" in value:
        raise InvalidInputError(f"{kind} {value!r} contains a NUL character")
    if _CONTROL.search(value):
        raise InvalidInputError(f"{kind} {value!r} contains a control character")
    for segment in value.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidInputError(
                f"{kind} {value!r} has an empty, '.' or '..' path segment; "
                "ids are paths relative to the dataset"
            )


def validate_dataset_id(dataset_id: str) -> str:
    """Return ``dataset_id`` if it names a dataset, else raise.

    As in 0.2.0, a dataset id may carry a sub-path (``usc/title-01``): the folder
    ``{stage}/usc/title-01/`` is then read as a dataset of its own, and document ids are
    relative to it. Empty, ``.`` and ``..`` segments are refused.
    """
    if not isinstance(dataset_id, str) or not dataset_id.strip():
        raise InvalidInputError(f"dataset id must be a non-empty string, got {dataset_id!r}")
    _check_segments("dataset id", dataset_id)
    return dataset_id


def validate_document_id(document_id: str) -> str:
    """Return ``document_id`` if it is a relative path without ``.``/``..`` segments or
    control characters, else raise.

    Ids are taken literally (an id may itself end in ``.json``); see :func:`legacy_id`.
    """
    if not isinstance(document_id, str) or not document_id:
        raise InvalidInputError(f"document id must be a non-empty string, got {document_id!r}")
    if document_id.startswith("/"):
        raise InvalidInputError(f"document id {document_id!r} starts with '/'")
    _check_segments("document id", document_id)
    return document_id


def legacy_id(document_id: str) -> str | None:
    """The id without a trailing ``.json``, which reference-client users may append; else None."""
    if document_id.endswith(".json") and len(document_id) > len(".json"):
        return document_id[: -len(".json")]
    return None


def normalize_key_prefix(key_prefix: str | None) -> str | None:
    """Strip surrounding ``/`` from a key prefix; None or empty means the whole dataset."""
    if key_prefix is None:
        return None
    if not isinstance(key_prefix, str):
        raise InvalidInputError(f"key prefix must be a string, got {key_prefix!r}")
    clean = key_prefix.strip("/")
    if not clean:
        return None
    _check_segments("key prefix", clean)
    return clean


def stage_prefix(stage: Stage, dataset_id: str | None = None, key_prefix: str | None = None) -> str:
    """``documents/``, ``documents/usc/`` or ``documents/usc/{key_prefix}/``."""
    prefix = f"{stage.value}/"
    if dataset_id is not None:
        prefix += f"{validate_dataset_id(dataset_id)}/"
        clean = normalize_key_prefix(key_prefix)
        if clean:
            prefix += f"{clean}/"
    return prefix


def object_key(stage: Stage, dataset_id: str, document_id: str) -> str:
    """The key of a document in ``stage`` (``.json`` for documents and representations)."""
    doc = validate_document_id(document_id)
    base = f"{stage.value}/{validate_dataset_id(dataset_id)}/{doc}"
    if stage in (Stage.DOCUMENTS, Stage.REPRESENTATIONS):
        return base + ".json"
    if stage is Stage.PARQUET:
        return base
    raise InvalidInputError(f"stage {stage.value!r} holds no documents")


def document_id_from_key(key: str, dataset_id: str | None = None) -> str:
    """The document id in a key of any data stage (``.json`` dropped); '' if none.

    Without ``dataset_id`` the first folder is the dataset; with it (which may have a
    sub-path, ``usc/title-01``) the id is relative to that folder, and a key outside it
    gives ''.
    """
    stage, _, rest = key.partition("/")
    if stage not in _STAGE_VALUES:
        rest = key
    if dataset_id is not None and "/" in dataset_id:
        sep = dataset_id + "/"
        if not rest.startswith(sep):
            return ""
        dataset, doc = dataset_id, rest[len(sep) :]
    else:
        dataset, sep, doc = rest.partition("/")
    if (
        not sep
        or not doc
        or (dataset_id is not None and dataset != dataset_id)
        or doc.endswith("/")
    ):
        return ""
    if stage != Stage.PARQUET.value and doc.endswith(".json"):
        doc = doc[: -len(".json")]
    return doc


def index_key(dataset_id: str, key_prefix: str | None = None) -> str:
    """``index/{dataset}.json.gz`` or ``index/{dataset}-{prefix with '/' -> '-'}.json.gz``."""
    dataset_id = validate_dataset_id(dataset_id)
    clean = normalize_key_prefix(key_prefix)
    if clean:
        return f"index/{dataset_id}-{clean.replace('/', '-')}.json.gz"
    return f"index/{dataset_id}.json.gz"


def parse_document_key(dataset_id: str, key: str) -> tuple[Stage, str]:
    """The stage and document id of ``key``, a key of ``dataset_id`` in any data stage.

    ``documents/usc/a/x.json`` -> (DOCUMENTS, ``a/x``); a key without a stage prefix is
    taken as a documents-stage path below the dataset.
    """
    validate_dataset_id(dataset_id)
    for stage in DATA_STAGES:
        prefix = f"{stage.value}/{dataset_id}/"
        if key.startswith(prefix):
            doc = key[len(prefix) :]
            if stage is not Stage.PARQUET and doc.endswith(".json"):
                doc = doc[: -len(".json")]
            return stage, validate_document_id(doc)
    doc = key[: -len(".json")] if key.endswith(".json") else key
    return Stage.DOCUMENTS, validate_document_id(doc)
