"""Safe file names for document ids (pure functions of the CLI, no server needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kl3m_data_client.cli._paths import (
    MAX_NAME_BYTES,
    path_in_directory,
    safe_file_name,
    write_atomically,
)


@pytest.mark.parametrize(
    ("doc_id", "expected"),
    [
        ("title-01/chapter-33/section-000010", "title-01_chapter-33_section-000010"),
        ("1001", "1001"),
        ("../x", "x"),
        ("a/../../x", "a_x"),
        ("/abs", "abs"),
        ("/etc/passwd", "etc_passwd"),
        ("C:/x", "C__x"),
        ("C:\\x", "C__x"),
        ("a\\..\\..\\x", "a_x"),
        ("a\x00b", "a_b"),
        (".hidden", "hidden"),
        ("..", "document"),
        ("", "document"),
        ("CON", "_CON"),
        ("nul.txt", "_nul.txt"),
        ("trailing. ", "trailing"),
        ("pct%2Fslash 1.html", "pct%2Fslash 1.html"),
    ],
)
def test_safe_file_name(doc_id: str, expected: str) -> None:
    assert safe_file_name(doc_id) == expected


def test_suffix_and_length() -> None:
    assert safe_file_name("a/b", suffix=".html") == "a_b.html"
    assert safe_file_name("..", suffix=".json") == "document.json"
    long = safe_file_name("é" * 500, suffix=".parquet")
    assert len(long.encode("utf-8")) <= MAX_NAME_BYTES
    assert long.endswith(".parquet")


@given(st.text(max_size=300))
def test_any_id_stays_in_the_directory(doc_id: str) -> None:
    directory = Path("/tmp/kl3m-cli-safe/a/b")
    name = safe_file_name(doc_id)
    assert name and name not in (".", "..")
    assert "/" not in name and "\\" not in name and "\x00" not in name and ":" not in name
    assert len(name.encode("utf-8")) <= MAX_NAME_BYTES
    assert path_in_directory(directory, name).parent == directory


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "a/b", "a\\b", "/abs", "a\x00b"])
def test_path_in_directory_refuses(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError):
        path_in_directory(tmp_path, name)


def test_write_atomically(tmp_path: Path) -> None:
    target = tmp_path / "f"
    write_atomically(target, b"one", overwrite=False)
    with pytest.raises(FileExistsError):
        write_atomically(target, b"two", overwrite=False)
    assert target.read_bytes() == b"one"
    write_atomically(target, b"two", overwrite=True)
    assert target.read_bytes() == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]
