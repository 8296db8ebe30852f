"""Generated SQL for the sandbox's property tests: thumbline's tables mixed with escapes.

Each query is built from fragments; a fragment that reaches outside the
database (a table function, a system table, a denied function, a settings or
output clause, a second statement) is recorded, so a test can require that
such a query is refused. Fragments inside comments or string literals are
harmless and recorded as nothing.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from hypothesis import strategies as st


@dataclass(frozen=True)
class Generated:
    sql: str
    escapes: tuple[str, ...]  # what in it reaches outside; empty: thumbline's tables only


@dataclass(frozen=True)
class Places:
    database: str
    canary: Path  # a file outside the store whose content must never come back
    out: Path  # a file that must never appear
    view: str  # a view of the database over a table function


def _good_sources(p: Places) -> list[str]:
    db = p.database
    return [f"{db}.feedback", "feedback", f"{db}.traces FINAL", f"{db}.feedback_latest",
            f"(SELECT trace_id, label FROM {db}.feedback)", "`feedback`", '"traces"',
            f"{db}.weekly_quality_review"]  # fmt: skip


def _bad_sources(p: Places) -> dict[str, str]:
    c = p.canary
    return {
        "file()": f"file('{c}', 'LineAsString')", "fIlE()": f"fIlE('{c}', 'LineAsString')",
        "url()": "url('http://127.0.0.1:9/', 'CSV', 'a String')",
        "system.tables": "system.tables", "INFORMATION_SCHEMA": "INFORMATION_SCHEMA.TABLES",
        "default.path": f"default.`{c}`", "a path": f"`{c}`",
        "a bad view": f"{p.database}.{p.view}",
        "the bad view bare": p.view, "numbers()": "numbers(3)", "merge()": "merge('system', '.*')",
        "remote()": "remote('127.0.0.1', system.one)", "view()": f"view(SELECT file('{c}'))",
        "a wrapped file()": f"(SELECT * FROM file('{c}', 'LineAsString'))",
    }  # fmt: skip


def _good_expressions(p: Places) -> list[str]:
    return ["count()", "1", "'x'", "lower('ÄB')", f"'file(\\'{p.canary}\\')'", "length('€')",
            "toString(now())", "'é' AS `ünï`", "[1, 2][1]", "(1, 'a').2", "trace_id"]  # fmt: skip


def _bad_expressions(p: Places) -> dict[str, str]:
    c = p.canary
    return {
        "file(x)": f"file('{c}')", "FILE(x)": f"FILE('{c}')",
        "file in a lambda": f"arrayMap(x -> file(x), ['{c}'])",
        "dictGet": "dictGet('d', 'a', toUInt64(1))",
        "hasColumnInTable": "hasColumnInTable('system', 'tables', 'name')",
        "getServerSetting": "getServerSetting('path')",
        "a system subquery": "(SELECT count() FROM system.tables)",
        "IN system.tables": "'x' IN system.tables",
        "a file subquery": f"(SELECT * FROM file('{c}', 'LineAsString') LIMIT 1)",
    }  # fmt: skip


def _bad_suffixes(p: Places) -> dict[str, str]:
    return {
        "INTO OUTFILE": f" INTO OUTFILE '{p.out}'",
        "INTO OUTFILE TRUNCATE": f" INTO OUTFILE '{p.out}' TRUNCATE",
        "FORMAT": " FORMAT CSV", "SETTINGS": " SETTINGS max_threads = 1",
        "a truncating SETTINGS": " SETTINGS engine_file_truncate_on_insert = 1",
        "a second statement": f"; SELECT file('{p.canary}')", "KILL": "; KILL QUERY WHERE 1",
    }  # fmt: skip


def _bad_statements(p: Places) -> dict[str, str]:
    db = p.database
    return {
        "INSERT INTO FUNCTION": f"INSERT INTO FUNCTION file('{p.out}', 'CSV') SELECT 1",
        "KILL QUERY": "KILL QUERY WHERE 1", "SYSTEM": "SYSTEM DROP DNS CACHE",
        "CREATE": f"CREATE TABLE {db}.fuzz_made (a UInt8) ENGINE = Memory",
        "DROP": f"DROP TABLE IF EXISTS {db}.fuzz_nothing",
        "INSERT": f"INSERT INTO {db}.dead_letters SELECT * FROM {db}.dead_letters",
    }  # fmt: skip


def _pick(
    draw: st.DrawFn, odds: random.Random, good: list[str], bad: dict[str, str], bad_odds: float
) -> tuple[str, str]:
    """A fragment and the escape it carries ('' for a good one).

    The odds come from a Random that Hypothesis drew: its own floats favour 0
    and 1, which made nearly every query an escape and left few to answer.
    """
    if odds.random() < bad_odds:
        name = draw(st.sampled_from(sorted(bad)))
        return bad[name], name
    return draw(st.sampled_from(good)), ""


@st.composite
def _select(draw: st.DrawFn, p: Places, depth: int, odds: random.Random) -> tuple[str, list[str]]:
    escapes: list[str] = []
    exprs = []
    for _ in range(draw(st.integers(1, 3))):
        expr, escape = _pick(draw, odds, _good_expressions(p), _bad_expressions(p), 0.04)
        exprs.append(expr)
        escapes += [escape] if escape else []
    if depth < 2 and draw(st.booleans()):
        inner, more = draw(_select(p, depth + 1, odds))
        source, escapes = f"({inner})", escapes + more
    else:
        source, escape = _pick(draw, odds, _good_sources(p), _bad_sources(p), 0.06)
        escapes += [escape] if escape else []
    keyword = draw(st.sampled_from(["SELECT", "select", "SeLeCt"]))
    where = draw(st.sampled_from(["", " WHERE 1", " WHERE label = 'bad'", " LIMIT 2"]))
    return f"{keyword} {', '.join(exprs)} FROM {source}{where}", escapes


@st.composite
def queries(draw: st.DrawFn, p: Places) -> Generated:
    """One generated query and the escapes in it."""
    odds = draw(st.randoms(use_true_random=False))
    if odds.random() < 0.03:
        name = draw(st.sampled_from(sorted(_bad_statements(p))))
        return Generated(_bad_statements(p)[name], (name,))
    selects = [draw(_select(p, 0, odds)) for _ in range(draw(st.integers(1, 3)))]
    joiner = draw(st.sampled_from([" UNION ALL ", " UNION DISTINCT ", " INTERSECT ", " EXCEPT "]))
    sql = joiner.join(s for s, _ in selects)
    escapes = [e for _, found in selects for e in found]
    if draw(st.booleans()):
        sql = f"WITH recent AS (SELECT * FROM {p.database}.feedback LIMIT 5) {sql}"
    suffix, escape = _pick(draw, odds, [""], _bad_suffixes(p), 0.06)
    sql += suffix
    escapes += [escape] if escape else []
    prefix = draw(st.sampled_from(["", "", "EXPLAIN ", "EXPLAIN SYNTAX ", "EXPLAIN PIPELINE "]))
    comment = draw(st.sampled_from(["", f"/* file('{p.canary}') */ ", "-- system.tables\n",
                                    "\n\t ", "/* ; KILL QUERY WHERE 1 */"]))  # fmt: skip
    return Generated(comment + prefix + sql, tuple(escapes))
