"""Text that comes from data (CT names, subjects, reports, metric names, log values) shown as
text, never as markup or code.

Each output kind escapes in one place: HTML through Jinja2's autoescape (`report.py`, the
viewer's template), Markdown through `markdown_text` (the report's Markdown environment), figures
through `viz/figure.py: save_png` (no mathtext, no TeX). This module holds what they share:
`visible`, which makes characters that change how text displays (line breaks, bidirectional
overrides, other control characters) visible as `\\uXXXX` escapes, so a name cannot reorder or
break the line it is shown in.
"""

from __future__ import annotations

import unicodedata
from typing import Any

# Characters that make Markdown more than styled text: code, HTML and entities, links and
# images (`[`, `]`: a `(` is a link target only after `]`), table cells, math (`$` in GitHub's
# renderer), escapes. Emphasis characters only change the style. (CommonMark lets any ASCII
# punctuation be backslash-escaped.)
_MARKDOWN_SPECIAL = set("\\`<>[]|&$")


def visible(value: Any) -> str:
    """`str(value)` with control and bidirectional-formatting characters (Unicode categories Cc,
    Cf: newlines, tabs, U+202E ...) written as `\\uXXXX` escapes."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == " " else _escape(c) for c in text)


def _escape(c: str) -> str:
    if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") or not c.isprintable():
        return f"\\u{ord(c):04x}"
    return c


def markdown_text(value: Any) -> str:
    """`value` as literal Markdown text: visible characters, markup characters backslash-escaped
    (so `<script>`, `*`, `|` or `[x](y)` in a CT name stay text, also inside a table cell)."""
    return "".join(f"\\{c}" if c in _MARKDOWN_SPECIAL else c for c in visible(value))
