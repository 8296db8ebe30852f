"""Lexical checks on ClickHouse's canonical text of a statement (``formatQuery`` output).

The sandbox judges a statement by the tree ``EXPLAIN AST`` prints
(:mod:`thumbline.sqltree`), but that printout leaves some clauses out: for a
``UNION DISTINCT`` it shows neither ``INTO OUTFILE`` nor ``SETTINGS`` (found by
the property test: such a query wrote a file). The canonical text has every
clause, with keywords upper case and comments gone, so these checks read it,
outside its quoted parts, as a second look at what the tree may hide.
"""

from __future__ import annotations

import re

#: Clauses that send a result elsewhere or change how it is made; never in the sandbox.
_OUTPUT = re.compile(r"\b(INTO\s+OUTFILE|FROM\s+INFILE|FORMAT|SETTINGS|COMPRESSION)\b(?!\s*\()")


def unquoted(canonical: str) -> str:
    """``canonical`` with every quoted part (strings, quoted names) blanked out."""
    out: list[str] = []
    quote: str | None = None
    escaped = False
    for ch in canonical:
        if escaped:
            escaped = False
            out.append(" ")
        elif quote is not None:
            if ch == "\\" and quote == "'":
                escaped = True
            elif ch == quote:
                quote = None
            out.append(" ")
        elif ch in "'`\"":
            quote = ch
            out.append(" ")
        else:
            out.append(ch)
    return "".join(out)


def output_clause(canonical: str) -> str | None:
    """The first output or settings clause of the statement, if it has one (e.g. ``FORMAT``)."""
    match = _OUTPUT.search(unquoted(canonical))
    return " ".join(match.group(1).split()) if match else None


def controls_outside_strings(canonical: str) -> bool:
    """Whether ``formatQuery`` output holds a control character (but a line break)
    outside its string literals; inside them ClickHouse keeps all but line breaks raw."""
    quote: str | None = None
    escaped = False
    for ch in canonical:
        if escaped:
            escaped = False
        elif quote == "'" and ch == "\\":
            escaped = True
        elif ch in "'`\"" and quote in (None, ch):
            quote = None if quote else ch
        elif quote != "'" and (ord(ch) < 0x20 and ch != "\n" or ch == "\x7f"):
            return True
    return False
