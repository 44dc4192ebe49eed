"""Terminal output that stored text cannot take over: control characters and bidi overrides are
shown as escapes.

A view description, an approver's name or an audit entry is text someone else wrote. Printed as
is, an ESC sequence could rewrite the screen (hide a line of ``audit show``) and a bidi override
could make a name read backwards. Every string the CLI prints goes through :func:`escape`.
"""

from __future__ import annotations

import re
from typing import Any

from rich.console import Console

_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def escape(text: str) -> str:
    """`text` with control characters (tab and newline aside) and bidi controls as ``\\xNN`` / ``\\uNNNN``.

    >>> escape("ok\\x1b[2Jgone \\u202eevil")
    'ok\\\\x1b[2Jgone \\\\u202eevil'
    >>> escape("two\\nlines\\tand a tab")
    'two\\nlines\\tand a tab'
    """
    return _UNSAFE.sub(
        lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}", text
    )


class SafeConsole(Console):
    """A rich Console whose every string (print arguments, table cells) is escaped first."""

    def render_str(self, text: str, **kwargs: Any) -> Any:
        return super().render_str(escape(text), **kwargs)
