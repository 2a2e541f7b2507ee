"""Ray Data integration: the corpus as a Ray Dataset, and an export spread over a cluster.

Install with ``pip install 'kl3m-data-client[ray]'``; see ``docs/scale-out.md``.

* :func:`read_kl3m` / :class:`KL3MDatasource`: a ``ray.data.Dataset`` of export records
  (the columns of the export package's Parquet output). Read tasks are disjoint key ranges
  (boundaries from the dataset index when present, else from one listing on the driver) or
  chunks of an explicit id list; each task runs its own :class:`AsyncKL3MClient`.
* :func:`export_distributed`: one Ray task per shard ``(i, N)`` of the export package's
  stable id hash, each a complete resumable single-machine export into
  ``DEST/shard-0000i-of-0000N/``; a final task merges their manifests.

Only a :class:`ClientConfig` without secrets is sent to the workers: they resolve
credentials through botocore's chain (environment, ``~/.aws``, instance or pod roles). No
client, session or connection crosses a process boundary.

Modules: ``_datasource`` (the datasource and :func:`read_kl3m`), ``_read`` (the body of a
read task), ``_export`` (:func:`export_distributed`), ``_common`` (client settings, secrets).
Planning the read shards is Ray-free and lives in ``kl3m_data_client.export._shards``.
"""

from __future__ import annotations

try:
    import ray as _ray  # noqa: F401 - fails early, with the extra to install
    import ray.data as _ray_data  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "kl3m_data_client.ray needs Ray Data: pip install 'kl3m-data-client[ray]'"
    ) from exc

# re-exported as before the package split (not part of the documented API: see __all__)
from kl3m_data_client.export._shards import MIN_DOCUMENTS_PER_TASK as MIN_DOCUMENTS_PER_TASK
from kl3m_data_client.export._shards import Planning as Planning
from kl3m_data_client.export._shards import ReadShard as ReadShard
from kl3m_data_client.ray._common import OnError as OnError
from kl3m_data_client.ray._datasource import KL3MDatasource, read_kl3m
from kl3m_data_client.ray._datasource import plan_read_shards as plan_read_shards
from kl3m_data_client.ray._export import export_distributed
from kl3m_data_client.ray._read import BLOCK_ROWS as BLOCK_ROWS
from kl3m_data_client.ray._read import iter_shard_blocks as iter_shard_blocks

__all__ = ["KL3MDatasource", "export_distributed", "read_kl3m"]
