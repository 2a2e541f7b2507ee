"""Terminal output of ``kl3m-client``: JSON on stdout, tables, notes, progress and errors.

JSON always goes through :func:`json.dumps` straight to ``sys.stdout`` (never through rich,
whose markup and wrapping would corrupt it). rich is imported only when a table or a progress
bar is drawn; without it (the ``cli`` extra is missing) plain text is printed instead.
Colour is used only on a terminal and never when ``NO_COLOR`` is set (rich's own rules).

Text from the bucket (ids, keys, dataset names, metadata, messages) never reaches the
terminal raw: every human-output method passes it through :func:`escape_text`, and JSON
output escapes the same characters as ``\\uXXXX`` (still exact JSON).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Sequence
from typing import IO, Any, Protocol

#: Characters a terminal must not receive raw: C0 controls (NUL, ESC, newlines, ...), DEL,
#: C1 controls (CSI, NEL, ...), bidi marks, embeddings, overrides and isolates, and the
#: Unicode line and paragraph separators.
_UNSAFE_CHARS = "\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_UNSAFE = re.compile(f"[{_UNSAFE_CHARS}]")
#: The same, but newlines and tabs kept (multi-line text such as a content preview).
_UNSAFE_IN_LINES = re.compile(f"(?![\n\t])[{_UNSAFE_CHARS}]")
#: What JSON output escapes although ``json.dumps`` would not (C0 it escapes itself).
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_text(text: str, *, multiline: bool = False) -> str:
    """``text`` safe for a terminal: control, bidi and separator characters as escapes.

    Text without such characters is returned unchanged. Otherwise each one becomes
    ``\\n``, ``\\x1b``, ``\\u202e``, ... and backslashes are doubled, so the escaped form is
    unambiguous. ``multiline`` keeps newlines and tabs (a content preview).
    """
    pattern = _UNSAFE_IN_LINES if multiline else _UNSAFE
    if pattern.search(text) is None:
        return text
    return pattern.sub(_escape_char, text.replace("\\", "\\\\"))


def json_text(data: Any, **options: Any) -> str:
    """``json.dumps(data, ensure_ascii=False, **options)``, with the characters of
    :func:`escape_text` that JSON allows raw written as ``\\uXXXX`` (same parsed value)."""
    text = json.dumps(data, ensure_ascii=False, **options)
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _rich_available() -> bool:
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Progress(Protocol):
    """A progress display: ``update`` with the current count; ``close`` when done."""

    def update(self, completed: int, *, total: int | None = None, detail: str = "") -> None: ...

    def close(self) -> None: ...


class _NullProgress:
    def update(self, completed: int, *, total: int | None = None, detail: str = "") -> None:
        pass

    def close(self) -> None:
        pass


class _LineProgress:
    """Plain periodic lines on stderr (not a terminal): one every ``interval`` seconds."""

    def __init__(self, label: str, unit: str, interval: float = 5.0) -> None:
        self.label = label
        self.unit = unit
        self.interval = interval
        self.start = time.monotonic()
        self.last = self.start
        self.completed = 0
        self.total: int | None = None
        self.detail = ""
        self.printed = False

    def _line(self) -> str:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        of = f"/{self.total:,}" if self.total is not None else ""
        rate = self.completed / elapsed
        extra = f", {self.detail}" if self.detail else ""
        return (
            f"{self.label}: {self.completed:,}{of} {self.unit} "
            f"({rate:,.1f} {self.unit}/s{extra}, {elapsed:.1f}s)"
        )

    def update(self, completed: int, *, total: int | None = None, detail: str = "") -> None:
        self.completed = completed
        if total is not None:
            self.total = total
        self.detail = escape_text(detail)
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self.printed = True
            print(self._line(), file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.printed:  # a final line only if the run was long enough to print any
            print(self._line(), file=sys.stderr, flush=True)


class _RichProgress:
    """A rich progress bar on stderr: count, rate, extra detail, elapsed and ETA."""

    def __init__(self, label: str, unit: str, total: int | None, transient: bool) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.unit = unit
        self.start = time.monotonic()
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[count]}"),
            TextColumn("{task.fields[rate]}"),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(file=sys.stderr),
            transient=transient,
        )
        self._task = self._progress.add_task(
            label, total=total, count=f"0 {unit}", rate="", detail=""
        )
        self._progress.start()

    def update(self, completed: int, *, total: int | None = None, detail: str = "") -> None:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        task_total = self._progress.tasks[0].total if total is None else total
        of = f"/{int(task_total):,}" if task_total is not None else ""
        self._progress.update(
            self._task,
            completed=completed,
            total=task_total,
            count=f"{completed:,}{of} {self.unit}",
            rate=f"{completed / elapsed:,.0f} {self.unit}/s",
            detail=escape_text(detail),
        )

    def close(self) -> None:
        self._progress.stop()


class UI:
    """Where each kind of output goes, given ``--json``, ``--quiet`` and ``--verbose``."""

    def __init__(self, *, json_mode: bool, quiet: bool, verbose: bool) -> None:
        self.json_mode = json_mode
        self.quiet = quiet
        self.verbose = verbose
        self._console: Any = None

    # -- JSON --------------------------------------------------------------------------------
    def emit_json(self, data: Any) -> None:
        """Write ``data`` as the one JSON document of this run."""
        sys.stdout.write(json_text(data, indent=2, default=str) + "\n")
        sys.stdout.flush()

    # -- human output on stdout ---------------------------------------------------------------
    @property
    def stdout_is_tty(self) -> bool:
        return _isatty(sys.stdout)

    @property
    def stderr_is_tty(self) -> bool:
        return _isatty(sys.stderr)

    def _rich_console(self) -> Any:
        if self._console is None:
            from rich.console import Console

            width = None
            if not self.stdout_is_tty:  # pipes and files: wide enough not to wrap tables
                width = int(os.environ.get("COLUMNS") or 0) or 120
            self._console = Console(file=sys.stdout, highlight=False, width=width)
        return self._console

    def table(
        self,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        *,
        title: str | None = None,
        numeric: Sequence[int] = (),
    ) -> None:
        """Print a table (rich when available, aligned text otherwise); cells are escaped."""
        cells = [["" if v is None else escape_text(str(v)) for v in row] for row in rows]
        columns = [escape_text(c) for c in columns]
        title = None if title is None else escape_text(title)
        if _rich_available():
            from rich.table import Table
            from rich.text import Text

            table = Table(
                title=None if title is None else Text(title),
                title_justify="left",
                show_edge=True,
            )
            for i, name in enumerate(columns):
                table.add_column(name, justify="right" if i in numeric else "left", overflow="fold")
            for row in cells:
                table.add_row(*(Text(c) for c in row))
            self._rich_console().print(table)
            return
        if title:
            print(title)
        widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]

        def fmt(row: Sequence[str]) -> str:
            return "  ".join(
                v.rjust(w) if i in numeric else v.ljust(w)
                for i, (v, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()

        print(fmt(list(columns)))
        print("  ".join("-" * w for w in widths))
        for row in cells:
            print(fmt(row))

    def print(self, text: str = "", *, style: str | None = None) -> None:
        """A line of human output on stdout (styled only on a colour terminal), escaped."""
        text = escape_text(text)
        if style and _rich_available():
            from rich.text import Text

            self._rich_console().print(Text(text, style=style))
        else:
            print(text)
            sys.stdout.flush()

    def panel(self, text: str, *, title: str) -> None:
        """A block of text (a content preview) on stdout; escaped except newlines and tabs."""
        text = escape_text(text, multiline=True)
        title = escape_text(title)
        if _rich_available():
            from rich.panel import Panel
            from rich.text import Text

            self._rich_console().print(Panel(Text(text), title=Text(title), title_align="left"))
        else:
            print(f"--- {title} ---")
            print(text)
            print("---")

    # -- stderr ------------------------------------------------------------------------------
    def note(self, message: str) -> None:
        """An informational line on stderr (silent with --quiet), escaped."""
        if not self.quiet:
            print(escape_text(message), file=sys.stderr, flush=True)

    def error(self, message: str) -> None:
        """The one error line on stderr (always shown), escaped."""
        print(f"kl3m-client: error: {escape_text(message)}", file=sys.stderr, flush=True)

    def progress(
        self, label: str, unit: str, total: int | None = None, *, transient: bool = False
    ) -> Progress:
        """A progress display on stderr: a bar on a terminal, periodic lines otherwise.

        A ``transient`` bar is erased when done (listing and counting); an export's stays.
        """
        if self.quiet:
            return _NullProgress()
        label = escape_text(label)
        if self.stderr_is_tty and _rich_available() and os.environ.get("TERM") != "dumb":
            return _RichProgress(label, unit, total, transient)
        return _LineProgress(label, unit)


def human_bytes(n: float) -> str:
    """``1536`` -> ``1.5 KB`` (decimal units, as S3 reports)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} TB"  # pragma: no cover
