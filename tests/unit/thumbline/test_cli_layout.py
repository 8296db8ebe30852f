"""The inbox's columns at a terminal's width, without a store."""

from __future__ import annotations

from thumbline.cli.read import fit_columns


def test_the_inbox_cuts_the_comment_first_and_leaves_out_whole_id_columns_never_parts():
    natural = {"time": 20, "trace": 32, "label": 7, "comment": 120, "user": 25,
               "session": 20, "project/model": 40}  # fmt: skip
    wide = fit_columns(natural, 400)
    assert wide == natural
    at_120 = fit_columns(natural, 120)
    assert sum(at_120.values()) + 2 * (len(at_120) - 1) <= 120
    assert {k: at_120[k] for k in ("time", "trace", "label")} == {
        "time": 20, "trace": 32, "label": 7}  # fmt: skip
    for name in ("user", "session"):  # an id column is whole or left out
        assert at_120.get(name, natural[name]) == natural[name]
    at_80 = fit_columns(natural, 80)
    assert set(at_80) == {"time", "trace", "label", "comment"} and at_80["comment"] >= 10
