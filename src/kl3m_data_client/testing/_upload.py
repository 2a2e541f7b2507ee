"""PUT objects into a bucket of the local server over HTTP (aiobotocore, N at a time)."""

from __future__ import annotations

from collections.abc import Mapping

import anyio


async def upload(
    boto_kwargs: Mapping[str, str],
    bucket: str,
    objects: Mapping[str, bytes],
    concurrency: int,
) -> None:
    """PUT every object of ``objects`` into ``bucket``, ``concurrency`` requests at a time."""
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    if not objects:
        return
    concurrency = max(1, min(concurrency, len(objects)))
    config = AioConfig(
        s3={"addressing_style": "path"},
        max_pool_connections=concurrency,
        retries={"max_attempts": 5, "mode": "standard"},
        request_checksum_calculation="when_required",
    )
    session = get_session()
    async with session.create_client("s3", config=config, **boto_kwargs) as client:
        items = iter(objects.items())

        async def worker() -> None:
            for key, data in items:
                await client.put_object(Bucket=bucket, Key=key, Body=data)

        async with anyio.create_task_group() as tg:
            for _ in range(concurrency):
                tg.start_soon(worker)
