"""Names from a seizure as they may be shown: which characters are never shown as such."""

from __future__ import annotations

__all__ = ["UNSAFE", "escape", "shown"]

#: code points that a name may use to drive a terminal or to make a listing lie: C0 and C1
#: controls and DEL (cursor moves, clearing, escape sequences), the line and paragraph separators
#: and the bidirectional controls (``evil\u202egpj.exe`` shows as ``evilexe.jpg``). A fixed list,
#: so evidence paths do not change with the Unicode version of the Python that walks.
UNSAFE: tuple[int, ...] = (
    *range(0x20),
    *range(0x7F, 0xA0),
    0x061C,
    0x200E,
    0x200F,
    0x2028,
    0x2029,
    *range(0x202A, 0x202F),
    *range(0x2066, 0x206A),
)


def escape(code: int) -> str:
    """``\\xNN`` for each UTF-8 byte of one code point."""
    return "".join(f"\\x{b:02x}" for b in chr(code).encode("utf-8"))


_TABLE = {c: escape(c) for c in UNSAFE}


def shown(value: object, *, keep_newlines: bool = False) -> str:
    """``value`` as text with every unsafe character as ``\\xNN``."""
    text = str(value)
    if keep_newlines:
        return "\n".join(part.translate(_TABLE) for part in text.split("\n"))
    return text.translate(_TABLE)
