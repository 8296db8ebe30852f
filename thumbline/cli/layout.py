"""Tables that fit the terminal: one line a row, free text cut first, ids never cut.

rich shrinks every column of a table that is too wide, ids and times included,
and wraps or drops what no longer fits; a trace id split over two lines cannot
be copied. Here each column says how it may give way: free text is cut (with
an ellipsis) down to a floor, in the order the columns list it; an optional
column is left out whole; every other column keeps its full width.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from rich.markup import escape
from rich.table import Table

#: Spaces between two columns.
GAP = 2


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    #: free text: may be cut down to this many characters (the first listed is cut first)
    cut_to: int | None = None
    #: optional: left out whole when the width is short, the lowest number first
    drop: int | None = None
    right: bool = False


def fit(columns: Sequence[Column], natural: Mapping[str, int], width: int) -> dict[str, int]:
    """The width of each column shown, so that a row fits ``width`` characters.

    Free text is cut first (down to its floor), then optional columns are left
    out whole; if what must stay is still wider, free text gives what it has
    left, and any room left over goes back to it, the first listed first.
    """
    widths = {c.name: natural[c.name] for c in columns}
    cuts = [c for c in columns if c.cut_to is not None]

    def excess() -> int:
        return sum(widths.values()) + GAP * (len(widths) - 1) - width

    for c in cuts:
        if excess() > 0:
            floor = min(natural[c.name], c.cut_to or 0)
            widths[c.name] = max(floor, widths[c.name] - excess())
    for c in sorted((c for c in columns if c.drop is not None), key=lambda c: c.drop or 0):
        if excess() <= 0:
            break
        del widths[c.name]
    for c in cuts:
        if excess() > 0 and c.name in widths:
            widths[c.name] = max(1, widths[c.name] - excess())
    for c in cuts:
        if excess() < 0 and c.name in widths:
            widths[c.name] = min(natural[c.name], widths[c.name] - excess())
    return widths


def cut(text: str, width: int) -> str:
    """``text`` on one line, at most ``width`` characters (the last an ellipsis if cut)."""
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def fitted(
    columns: Sequence[Column],
    rows: Sequence[Mapping[str, str]],
    width: int,
    *,
    styles: Mapping[str, Callable[[str], str]] | None = None,
    title: str | None = None,
) -> tuple[Table, list[str]]:
    """A table of ``rows`` (plain text per column name) that fits ``width``, and the names
    of the columns left out. ``styles`` give a cell's rich style from its text."""
    natural = {c.name: max([len(c.name), *(len(r[c.name]) for r in rows)]) for c in columns}
    widths = fit(columns, natural, width)
    table = Table(
        box=None, header_style="bold", pad_edge=False, padding=(0, GAP, 0, 0), title=title,
        title_justify="left",
    )  # fmt: skip
    shown = [c for c in columns if c.name in widths]
    for c in shown:
        table.add_column(
            c.name, width=widths[c.name], no_wrap=True, overflow="ellipsis",
            justify="right" if c.right else "left",
        )  # fmt: skip
    for row in rows:
        cells = []
        for c in shown:
            text = escape(cut(row[c.name], widths[c.name]))
            style = (styles or {}).get(c.name, lambda _: "")(row[c.name])
            cells.append(f"[{style}]{text}[/{style}]" if style else text)
        table.add_row(*cells)
    return table, [c.name for c in columns if c.name not in widths]
