"""Tables at a terminal's width, without a store: free text is cut first, ids never."""

from __future__ import annotations

from thumbline.cli.inbox import INBOX
from thumbline.cli.layout import GAP, fit, fitted

NATURAL = {"time": 20, "trace": 32, "label": 7, "comment": 120, "feedback": 24, "by": 9,
           "user": 25, "session": 20, "project/model": 40}  # fmt: skip


def used(widths: dict[str, int]) -> int:
    return sum(widths.values()) + GAP * (len(widths) - 1)


def test_a_wide_terminal_shows_every_column_whole():
    assert fit(INBOX, NATURAL, 400) == NATURAL


def test_the_comment_is_cut_first_and_id_columns_are_whole_or_left_out():
    at_120 = fit(INBOX, NATURAL, 120)
    assert used(at_120) <= 120
    assert {k: at_120[k] for k in ("time", "trace", "label")} == {
        "time": 20, "trace": 32, "label": 7}  # fmt: skip
    for name in ("user", "session"):
        assert at_120.get(name, NATURAL[name]) == NATURAL[name]
    assert "session" not in at_120  # the first to go
    at_80 = fit(INBOX, NATURAL, 80)
    assert set(at_80) == {"time", "trace", "label", "comment"} and used(at_80) == 80


def test_room_left_after_a_column_goes_returns_to_the_free_text_comment_first():
    # cut to 10, 10 and 10: still 159 columns; session left out: 137; 3 go back to the comment
    widths = fit(INBOX, {**NATURAL, "comment": 30}, 140)
    assert "session" not in widths
    assert (widths["comment"], widths["feedback"], widths["project/model"], used(widths)) == (
        13, 10, 10, 140)  # fmt: skip


def test_cut_text_ends_in_an_ellipsis_and_the_ids_are_printed_whole():
    import io

    from rich.console import Console

    rows = [{"time": "2026-11-25T10:00:00Z", "trace": "t" * 32, "label": "bad",
             "comment": "c" * 200, "feedback": "thumb=down", "by": "end_user", "user": "u" * 25,
             "session": "s" * 20, "project/model": "p" * 40}]  # fmt: skip
    table, hidden = fitted(INBOX, rows, 80)
    console = Console(width=80, record=True, file=io.StringIO())
    console.print(table)
    lines = console.export_text().splitlines()
    assert len(lines) == 2 and "t" * 32 in lines[1] and lines[1].rstrip().endswith("…")
    assert hidden == ["feedback", "by", "user", "session", "project/model"]


def test_a_comment_that_looks_like_markup_is_printed_as_written():
    import io

    from rich.console import Console

    sneaky = "[/] closes nothing, [red]is not red[/red], [link=http://x]no link[/link]"
    rows = [{"time": "2026-11-25T10:00:00Z", "trace": "t1", "label": "bad", "comment": sneaky,
             "feedback": "thumb=down", "by": "end_user", "user": "u", "session": "s",
             "project/model": "p/m"}]  # fmt: skip
    table, _ = fitted(INBOX, rows, 400)
    console = Console(width=400, record=True, file=io.StringIO())
    console.print(table)  # a MarkupError here would end `thumbline inbox` for everyone
    assert sneaky in console.export_text()
