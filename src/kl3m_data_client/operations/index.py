"""Dataset indexes at the import path of 0.2.0 (``kl3m_data_client.operations.index``),
through a blocking boto3 client (see :mod:`kl3m_data_client.utils.s3`).

Reading uses the client's decoder (gzip or plain JSON). Unlike 0.2.0, failures other than
"no such index" raise instead of being logged and turned into ``None``/``False``.
"""

from __future__ import annotations

import gzip
import json
from datetime import datetime
from typing import Any

from kl3m_data_client._formats import decode_index
from kl3m_data_client._keys import index_key, stage_prefix
from kl3m_data_client.models.common import Stage
from kl3m_data_client.models.stage import DatasetIndex
from kl3m_data_client.utils.s3 import get_object_bytes, iter_prefix, put_object_bytes

__all__ = ["build_dataset_index", "get_dataset_index"]


def build_dataset_index(
    s3_client: Any, bucket: str, dataset_id: str, key_prefix: str | None = None
) -> bool:
    """List the dataset's representation keys and write them as its gzip JSON index."""
    keys = list(
        iter_prefix(s3_client, bucket, stage_prefix(Stage.REPRESENTATIONS, dataset_id, key_prefix))
    )
    body = {
        "objects": keys,
        "metadata": {
            "dataset_id": dataset_id,
            "key_prefix": key_prefix,
            "count": len(keys),
            "created_at": datetime.now().isoformat(),
        },
    }
    data = gzip.compress(json.dumps(body).encode("utf-8"))
    return put_object_bytes(s3_client, bucket, index_key(dataset_id, key_prefix), data)


def get_dataset_index(
    s3_client: Any, bucket: str, dataset_id: str, key_prefix: str | None = None
) -> DatasetIndex | None:
    """The dataset's index, or None if it has none (a corrupt index raises)."""
    key = index_key(dataset_id, key_prefix)
    data = get_object_bytes(s3_client, bucket, key)
    if data is None:
        return None
    return decode_index(key, data, dataset_id)
