"""mkdocs hook: render the docstrings' Sphinx roles as plain code.

The docstrings of kl3m_data_client use reStructuredText roles (``:func:`export```,
``:class:`~kl3m_data_client.KL3MError```) so that they read well in ``help()`` and editors;
mkdocstrings renders docstrings as Markdown, where they would show as ``:func:export``.
This hook turns each into the code span of its target (the last component for ``~``) and a
trailing ``::`` (an rST literal-block marker) into ``:``. No network, no state.
"""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:func|meth|class|mod|attr|data|exc|obj|const):<code>(~?)([^<]*)</code>")
_LITERAL_MARKER = re.compile(r"::</p>")


def _role(match: re.Match[str]) -> str:
    target = match.group(2)
    if match.group(1):
        target = target.rsplit(".", 1)[-1]
    return f"<code>{target}</code>"


def on_page_content(html: str, **_: Any) -> str:
    """Rewrite the roles left in the rendered HTML of a page."""
    return _LITERAL_MARKER.sub(":</p>", _ROLE.sub(_role, html))
