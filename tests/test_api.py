"""The public surface: exported names, documented import paths, cheap import."""

from __future__ import annotations

import subprocess
import sys

import kl3m_data_client


def test_all_is_exactly_the_public_names() -> None:
    names = kl3m_data_client.__all__
    assert len(names) == len(set(names))
    assert list(names) == sorted(names)
    for name in names:
        assert getattr(kl3m_data_client, name) is not None, name
    # every public class or function defined by the package is exported
    defined = {
        n
        for n, v in vars(kl3m_data_client).items()
        if not n.startswith("_")
        and getattr(v, "__module__", "").startswith("kl3m_data_client")
        and isinstance(v, type)
    }
    assert defined <= set(names)
    assert set(kl3m_data_client._LAZY) <= set(names)


def test_documented_import_paths() -> None:
    from kl3m_data_client import Document, KL3MClient, Stage
    from kl3m_data_client.models.common import Stage as Stage2
    from kl3m_data_client.utils.s3 import (  # noqa: F401
        check_object_exists,
        decompress_content,
        get_object_bytes,
        get_s3_client,
        get_stage_prefix,
        iter_prefix,
        list_dataset_ids,
    )

    assert Stage is Stage2
    assert KL3MClient.__name__ == "KL3MClient"
    assert Document.__name__ == "Document"


def test_import_is_cheap() -> None:
    code = (
        "import sys, kl3m_data_client;"
        "heavy = [m for m in ('aiobotocore', 'botocore', 'pyarrow', 'aiohttp', 'rich')"
        " if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "", f"import kl3m_data_client pulled in {out}"
