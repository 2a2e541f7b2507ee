"""The documentation stays true to the code it shows: code blocks compile and import real
names, relative links lead to files that exist, and the API reference covers every public
name. (The site itself is built by ``mkdocs build --strict`` in CI, not here.)"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

import kl3m_data_client

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
#: Markdown files whose relative links must resolve: the README, the guides, the other
#: READMEs of the repository.
LINKED = [
    README,
    *DOCS,
    *sorted((ROOT / "benchmarks").glob("*.md")),
    *sorted((ROOT / "tests" / "data").rglob("*.md")),
]

_PYTHON_BLOCK = re.compile(r"^```python[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
_ANY_BLOCK = re.compile(r"^```.*?^```[ \t]*$", re.M | re.S)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_INLINE_LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE_LINK = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.M)
_DIRECTIVE = re.compile(r"^::: *(\S+)\s*$", re.M)
#: Modules documented whole in docs/api.md (each ``::: module`` renders its ``__all__``).
REFERENCE_MODULES = (
    "kl3m_data_client.export",
    "kl3m_data_client.utils.s3",
    "kl3m_data_client.testing",
    "kl3m_data_client.ray",
)


def _python_blocks(path: Path) -> list[tuple[str, str]]:
    text = path.read_text(encoding="utf-8")
    return [
        (f"{path.relative_to(ROOT)}:{text[: m.start()].count(chr(10)) + 1}", m.group(1))
        for m in _PYTHON_BLOCK.finditer(text)
    ]


BLOCKS = [block for path in [README, *DOCS] for block in _python_blocks(path)]


def test_the_readme_has_python_examples() -> None:
    assert len(_python_blocks(README)) >= 2


def _imported_names(tree: ast.AST) -> list[tuple[str, str | None]]:
    """``(module, name)`` for each import of ``kl3m_data_client`` (name None: the module)."""
    found: list[tuple[str, str | None]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] == "kl3m_data_client":
                found.extend((node.module, alias.name) for alias in node.names)
        elif isinstance(node, ast.Import):
            found.extend(
                (alias.name, None)
                for alias in node.names
                if alias.name.split(".")[0] == "kl3m_data_client"
            )
    return found


def check_block(where: str, source: str) -> None:
    """Compile ``source`` and import every ``kl3m_data_client`` name it imports."""
    # documentation snippets may use `await` / `async with` at top level, as in a notebook
    tree = compile(
        source,
        where,
        "exec",
        flags=ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
        dont_inherit=True,
    )
    compile(tree, where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
    for module_name, name in _imported_names(tree):
        module = importlib.import_module(module_name)
        if name is None or name == "*" or hasattr(module, name):
            continue
        try:  # a submodule: from kl3m_data_client import testing
            importlib.import_module(f"{module_name}.{name}")
        except ModuleNotFoundError:
            raise AssertionError(f"{where}: {module_name} has no name {name!r}") from None


@pytest.mark.parametrize(("where", "source"), BLOCKS, ids=[where for where, _ in BLOCKS])
def test_python_blocks_compile_and_import_real_names(where: str, source: str) -> None:
    check_block(where, source)


def test_the_block_check_catches_bad_code_and_missing_names() -> None:
    check_block("ok", "from kl3m_data_client import AsyncKL3MClient, testing\nawait f()")
    with pytest.raises(AssertionError, match="NoSuchClient"):
        check_block("x", "from kl3m_data_client import AsyncKL3MClient, NoSuchClient")
    with pytest.raises(ModuleNotFoundError):
        check_block("x", "import kl3m_data_client.no_such_module")
    with pytest.raises(SyntaxError):
        check_block("x", "with KL3MClient() as client\n    pass")


def _relative_links(path: Path) -> list[str]:
    text = _ANY_BLOCK.sub("", path.read_text(encoding="utf-8"))
    text = _INLINE_CODE.sub("", text)
    targets = _INLINE_LINK.findall(text) + _REFERENCE_LINK.findall(text)
    return [
        t
        for t in targets
        if not re.match(r"^[a-z][a-z0-9+.-]*:", t, re.I)  # http:, https:, mailto:, ...
        and not t.startswith("#")
    ]


def missing_links(path: Path, root: Path = ROOT) -> list[str]:
    """The relative links of ``path`` whose file does not exist inside ``root``."""
    missing = []
    for link in _relative_links(path):
        target = link.split("#", 1)[0].split("?", 1)[0]
        resolved = (path.parent / target).resolve()
        if not resolved.exists() or root not in (resolved, *resolved.parents):
            missing.append(link)
    return missing


@pytest.mark.parametrize("path", LINKED, ids=[str(p.relative_to(ROOT)) for p in LINKED])
def test_relative_links_point_to_existing_files(path: Path) -> None:
    missing = missing_links(path)
    assert not missing, f"{path.relative_to(ROOT)} links to missing files: {missing}"


def test_the_link_check_catches_missing_files(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "there.md").write_text("# there\n")
    page = tmp_path / "README.md"
    page.write_text(
        "[ok](docs/there.md#there) [web](https://example.org/x.md) [self](#top)\n"
        "[gone](docs/gone.md) `[code](docs/code.md)` [out](../outside.md)\n"
        "```\n[fenced](docs/fenced.md)\n```\n"
        "[ref]: docs/ref-gone.md\n"
    )
    assert missing_links(page, tmp_path) == ["docs/gone.md", "../outside.md", "docs/ref-gone.md"]


def _reference_targets() -> list[str]:
    return _DIRECTIVE.findall((ROOT / "docs" / "api.md").read_text(encoding="utf-8"))


def test_the_api_reference_covers_every_public_name() -> None:
    targets = set(_reference_targets())
    expected = {f"kl3m_data_client.{name}" for name in kl3m_data_client.__all__}
    expected.discard("kl3m_data_client.__version__")  # a string: mentioned in the prose
    assert not expected - targets, f"not in docs/api.md: {sorted(expected - targets)}"
    assert not set(REFERENCE_MODULES) - targets


@pytest.mark.parametrize("target", _reference_targets())
def test_api_reference_targets_exist(target: str) -> None:
    try:
        importlib.import_module(target)
        return
    except ModuleNotFoundError:
        pass
    module_name, _, name = target.rpartition(".")
    module = importlib.import_module(module_name)
    assert hasattr(module, name), f"docs/api.md documents {target}, which does not exist"
    if module_name == "kl3m_data_client":
        assert name in kl3m_data_client.__all__, f"{target} is not public"
