"""The SQL sandbox's rules, on ``EXPLAIN AST`` trees captured from chDB 4.4 (ClickHouse 26.9).

Each tree is what ``client.command("EXPLAIN AST " + canonical)`` returned
(TabSeparated text: quotes come escaped).
"""

from __future__ import annotations

import pytest

from thumbline.errors import SqlRefused
from thumbline.sqltext import controls_outside_strings, output_clause
from thumbline.sqltree import (
    Catalog,
    judge,
    parse_tree,
    quoted_identifiers_are_plain,
    unescape_tsv,
)

CATALOG = Catalog(
    "thumbline",
    readable=frozenset({"feedback", "traces", "api_keys", "weekly_quality_review"}),
    refused=frozenset({"host_file"}),
    writable=frozenset({"feedback", "traces", "api_keys"}),
    databases=frozenset({"system", "default", "thumbline", "information_schema"}),
    denied_functions=frozenset({"file", "dictget", "hascolumnintable"}),
)

SELECT_JOIN = """SelectWithUnionQuery (children 1)
 ExpressionList (children 1)
  SelectQuery (children 3)
   ExpressionList (children 2)
    Identifier f.label
    Function count (children 1)
     ExpressionList
   TablesInSelectQuery (children 2)
    TablesInSelectQueryElement (children 1)
     TableExpression (children 1)
      TableIdentifier thumbline.feedback (alias f)
    TablesInSelectQueryElement (children 2)
     TableExpression (children 1)
      TableIdentifier traces (alias t)
     TableJoin (children 1)
      ExpressionList (children 1)
       Identifier trace_id
   Function in (children 1)
    ExpressionList (children 2)
     Identifier f.trace_id
     Identifier api_keys"""

TABLE_FUNCTION = """SelectWithUnionQuery (children 1)
 ExpressionList (children 1)
  SelectQuery (children 2)
   ExpressionList (children 1)
    Asterisk
   TablesInSelectQuery (children 1)
    TablesInSelectQueryElement (children 1)
     TableExpression (children 1)
      Function url (children 1)
       ExpressionList (children 1)
        Literal \\'http://127.0.0.1:9/\\'"""

SCALAR_FILE = """SelectWithUnionQuery (children 1)
 ExpressionList (children 1)
  SelectQuery (children 1)
   ExpressionList (children 1)
    Function FILE (alias leak) (children 1)
     ExpressionList (children 1)
      Literal \\'/etc/hostname\\'"""

OUTFILE = """SelectWithUnionQuery (children 3)
 ExpressionList (children 1)
  SelectQuery (children 1)
   ExpressionList (children 1)
    Literal UInt64_1
 Literal \\'/tmp/x\\'
 Identifier CSV"""

IN_SYSTEM = """SelectWithUnionQuery (children 1)
 ExpressionList (children 1)
  SelectQuery (children 2)
   ExpressionList (children 1)
    Literal UInt64_1
   Function in (children 1)
    ExpressionList (children 2)
     Literal \\'x\\'
     Identifier system.tables"""

KILL = """KillQueryQuery Literal_UInt64_1 ASYNC (children 1)
 Literal UInt64_1"""

SETTINGS = """SelectWithUnionQuery (children 1)
 ExpressionList (children 1)
  SelectQuery (children 2)
   ExpressionList (children 1)
    Literal UInt64_1
   Set"""

APPLY = """SelectWithUnionQuery (children 1)
 ExpressionList (children 1)
  SelectQuery (children 1)
   ExpressionList (children 1)
    ColumnsRegexpMatcher (children 1)
     ColumnsTransformerList (children 1)
      ColumnsApplyTransformer"""

EXPLAIN = """Explain EXPLAIN (children 1)
 SelectWithUnionQuery (children 1)
  ExpressionList (children 1)
   SelectQuery (children 2)
    ExpressionList (children 1)
     Asterisk
    TablesInSelectQuery (children 1)
     TablesInSelectQueryElement (children 1)
      TableExpression (children 1)
       TableIdentifier weekly_quality_review"""

DESCRIBE = """DescribeQuery (children 1)
 TableExpression (children 1)
  TableIdentifier thumbline.feedback"""

KEY_INSERT = """InsertQuery   (children 4)
 Identifier thumbline
 Identifier api_keys
 ExpressionList (children 2)
  Identifier key_id
  Identifier scope
 SelectWithUnionQuery (children 1)
  ExpressionList (children 1)
   SelectQuery (children 1)
    ExpressionList (children 2)
     Literal \\'0123456789abcdef\\'
     Literal \\'admin\\'"""

INSERT_FUNCTION = """InsertQuery   (children 2)
 Function file (children 1)
  ExpressionList (children 2)
   Literal \\'/tmp/x\\'
   Literal \\'CSV\\'
 SelectWithUnionQuery (children 1)
  ExpressionList (children 1)
   SelectQuery (children 1)
    ExpressionList (children 1)
     Literal UInt64_1"""

INSERT_INFILE = """InsertQuery   (children 3)
 Literal \\'/etc/passwd\\'
 Identifier thumbline
 Identifier feedback"""


def verdict(text: str, *, write: bool = False) -> str:
    return judge(parse_tree(text), CATALOG, write=write).kind


def refusal(text: str, *, write: bool = False) -> str:
    with pytest.raises(SqlRefused) as info:
        judge(parse_tree(text), CATALOG, write=write)
    assert "the SQL sandbox runs one SELECT" in str(info.value)
    return info.value.reason


def test_a_join_of_thumbline_tables_is_a_select_naming_its_tables():
    result = judge(parse_tree(SELECT_JOIN), CATALOG)
    assert result.kind == "select"
    assert result.tables == {"feedback", "traces", "api_keys"}  # api_keys by `IN api_keys`


def test_explain_and_describe_of_thumbline_tables_are_accepted():
    assert verdict(EXPLAIN) == "explain"
    assert verdict(DESCRIBE) == "describe"


@pytest.mark.parametrize(
    ("tree", "reason"),
    [
        (TABLE_FUNCTION, "table_function"),
        (SCALAR_FILE, "function"),
        (OUTFILE, "output"),
        (IN_SYSTEM, "table"),
        (KILL, "statement"),
        (SETTINGS, "settings"),
        (APPLY, "construct"),
        (KEY_INSERT, "write"),  # an INSERT outside write mode
    ],
)
def test_escapes_are_refused_naming_the_rule(tree: str, reason: str):
    assert refusal(tree) == reason


def test_tables_outside_the_database_or_refused_views_are_refused():
    for name in ("system.tables", "default./etc/passwd", "INFORMATION_SCHEMA.TABLES",
                 "thumbline.host_file", "host_file", "/etc/passwd", "thumbline.nope"):  # fmt: skip
        tree = DESCRIBE.replace("thumbline.feedback", name)
        assert refusal(SELECT_JOIN.replace("traces (alias t)", f"{name} (alias t)")) == "table"
        assert refusal(tree) == "statement"  # DESCRIBE takes known tables only


def test_a_name_in_another_database_is_refused_whatever_its_case():
    for name in ("system.tables", "SYSTEM.tables", "Default.x", "information_schema.tables"):
        assert refusal(IN_SYSTEM.replace("system.tables", name)) == "table"
    assert verdict(IN_SYSTEM.replace("system.tables", "thumbline.api_keys")) == "select"


def test_a_with_name_resolves_in_the_database_and_passes():
    assert verdict(SELECT_JOIN.replace("traces (alias t)", "recent (alias t)")) == "select"


def test_write_mode_takes_the_key_insert_and_nothing_else():
    assert verdict(KEY_INSERT, write=True) == "insert"
    assert refusal(INSERT_FUNCTION, write=True) == "write"
    assert refusal(INSERT_INFILE, write=True) == "write"
    unqualified = KEY_INSERT.replace("InsertQuery   (children 4)\n Identifier thumbline\n",
                                     "InsertQuery   (children 3)\n")  # fmt: skip
    assert refusal(unqualified, write=True) == "write"
    assert refusal(KEY_INSERT.replace("api_keys", "host_file"), write=True) == "write"
    assert refusal(KILL, write=True) == "statement"
    assert verdict(SELECT_JOIN, write=True) == "select"  # reads still run in the sandbox


def test_a_tree_whose_counts_do_not_add_up_is_refused():
    for broken in (
        SELECT_JOIN.replace("SelectQuery (children 3)", "SelectQuery (children 4)"),
        SELECT_JOIN + "\nSelectWithUnionQuery (children 1)",  # a second statement
        SELECT_JOIN.replace("     Identifier api_keys", "      Identifier api_keys"),
        SELECT_JOIN.replace("Identifier trace_id", "Identifier trace\tid"),  # a raw tab
        "",
    ):
        with pytest.raises(SqlRefused):
            parse_tree(broken)


def test_an_alias_cannot_forge_children_for_its_node():
    forged = SCALAR_FILE.replace(
        "    Function FILE (alias leak) (children 1)",
        "    Literal UInt64_1 (alias x) (children 2)",  # an alias `x) (children 2`
    )
    with pytest.raises(SqlRefused):
        parse_tree(forged)


def test_escaped_quotes_and_backslashes_come_back_as_text():
    assert unescape_tsv("Literal \\'it\\\\\\'s\\'") == "Literal 'it\\'s'"
    assert unescape_tsv("a\\tb\\nc") == "a\tb\nc"


@pytest.mark.parametrize(
    ("canonical", "plain"),
    [
        ("SELECT 'a\\nb' AS `x`", True),  # an escape in a string is fine
        ("SELECT 1 AS `a\\nb`", False),  # a line break in a name is not
        ("SELECT 1 AS `a\\`b`", False),
        ("SELECT '`' AS x, `y`", True),
        ("SELECT 'unclosed", False),
    ],
)
def test_names_with_escapes_are_found_in_the_canonical_text(canonical: str, plain: bool):
    assert quoted_identifiers_are_plain(canonical) is plain


@pytest.mark.parametrize(
    ("canonical", "found"),
    [
        ("SELECT 'a\x07b\x7f' FROM t WHERE x = 1", False),  # a filter value's own bytes
        ("SELECT 1\nFROM t", False),  # the formatter's own line breaks
        ("SELECT 1 AS `a\x07`", True),
        ("SELECT 1\x07", True),
        ("SELECT 'it\\'s', 2\x0c", True),  # an escaped quote does not end the string
    ],
)
def test_control_characters_are_found_outside_string_literals_only(canonical: str, found: bool):
    assert controls_outside_strings(canonical) is found


def test_a_literal_keeps_its_control_characters_but_no_line_break():
    tree = "SelectWithUnionQuery (children 1)\n ExpressionList (children 1)\n  Literal 'a\x07b'"
    assert parse_tree(tree).children[0].children[0].text == "'a\x07b'"
    with pytest.raises(SqlRefused):
        parse_tree(tree.replace("Literal", "Identifier"))
    with pytest.raises(SqlRefused):
        parse_tree(tree.replace("\x07", "\\r"))  # TSV's escaped carriage return


@pytest.mark.parametrize(
    ("canonical", "clause"),
    [
        ("SELECT 1\nUNION DISTINCT\nSELECT 2\nINTO OUTFILE '/tmp/x' TRUNCATE", "INTO OUTFILE"),
        ("SELECT 1\nUNION DISTINCT\nSELECT 2\nSETTINGS max_threads = 1", "SETTINGS"),
        ("SELECT 1\nFORMAT CSV", "FORMAT"),
        ("SELECT 'INTO OUTFILE', `FORMAT` FROM t", None),  # quoted: text, not clauses
        ("SELECT format('{}', 1), formatDateTime(now(), '%F')", None),
        ("SELECT 1 AS settings_count", None),
    ],
)
def test_output_clauses_are_found_in_the_canonical_text(canonical: str, clause: str | None):
    assert output_clause(canonical) == clause
