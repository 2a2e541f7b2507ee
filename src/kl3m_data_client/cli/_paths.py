"""Safe local file names for document ids (which are bucket paths chosen by others)."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

_UNSAFE = re.compile(r'[\x00-\x1f\x7f<>:"|?*]')
_WINDOWS_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL"}
    | {f"COM{i}" for i in range(1, 10)}
    | {f"LPT{i}" for i in range(1, 10)}
)
MAX_NAME_BYTES = 200


def safe_file_name(document_id: str, *, suffix: str = "") -> str:
    """A single path component derived from ``document_id`` (plus ``suffix``).

    Separators (``/`` and ``\\``) become ``_``; empty, ``.`` and ``..`` segments are dropped;
    control characters, NUL and the characters Windows forbids (``:`` of drive letters
    included) become ``_``; leading dots and trailing dots and spaces are stripped; Windows
    device names get a ``_`` prefix; the name is cut to 200 UTF-8 bytes keeping its suffix.
    The result is never empty, ``.`` or ``..`` and contains no separator, so joined to a
    directory it always names a file directly inside that directory.
    """
    parts = [p for p in document_id.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    base = _UNSAFE.sub("_", "_".join(parts)).lstrip(". ").rstrip(". ") or "document"
    suffix = _UNSAFE.sub("_", suffix.replace("/", "_").replace("\\", "_")).rstrip(". ")
    if base.split(".", 1)[0].upper() in _WINDOWS_RESERVED:
        base = "_" + base
    room = MAX_NAME_BYTES - len(suffix.encode("utf-8"))
    encoded = base.encode("utf-8")
    if len(encoded) > room:
        stem, dot, ext = base.rpartition(".")
        keep = f".{ext}" if dot and stem and len(ext.encode("utf-8")) <= 16 else ""
        cut = room - len(keep.encode("utf-8"))
        base = encoded[:cut].decode("utf-8", "ignore").rstrip(". ") + keep
    return base + suffix


def path_in_directory(directory: Path, name: str) -> Path:
    """``directory / name``, refusing (ValueError) anything that would land elsewhere."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise ValueError(f"unsafe file name {name!r}")
    if os.path.isabs(name) or Path(name).drive:
        raise ValueError(f"unsafe file name {name!r}")
    target = directory / name
    if target.resolve().parent != directory.resolve():
        raise ValueError(f"{name!r} would be written outside {str(directory)!r}")
    return target


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomically(path: Path, data: bytes, *, overwrite: bool) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename.

    Raises FileExistsError when ``path`` exists and ``overwrite`` is false.
    """
    if not overwrite and path.exists():
        raise FileExistsError(f"{str(path)!r} exists; pass --overwrite to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".kl3m-", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual mode
        if overwrite:
            os.replace(tmp, path)
        else:
            # link + unlink: fails instead of replacing a file created meanwhile
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise FileExistsError(
                    f"{str(path)!r} exists; pass --overwrite to replace it"
                ) from None
            except OSError:  # no hard links (some filesystems): fall back to a rename
                os.replace(tmp, path)
            else:
                os.unlink(tmp)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
