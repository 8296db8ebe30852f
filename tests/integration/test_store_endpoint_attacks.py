"""The store endpoint under attack: nothing either user sends reaches beyond thumbline's
database or the host's files.

chDB runs inside the owner's process with its rights, so every escape a
ClickHouse server's grants would stop is tried here through the HTTP interface,
with both users (the writer, ``thumbline``, and the reader, ``thumbline_reader``):
files read and written (table functions, ``file()``, ``INTO OUTFILE``, engines,
dynamic disks, ``ATTACH ... FROM``, ``BACKUP``, dictionaries, schema settings),
the network, other databases and system tables, ``SYSTEM``, users and grants,
``KILL``, settings past the limits, and passwords that are wrong or travel in
the URL. Each is refused with a ClickHouse-shaped error (a 4xx status, its
code in ``X-ClickHouse-Exception-Code``, ``Code: N. DB::Exception: ...``) and
no file appears.
"""

from __future__ import annotations

import base64
import gzip
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import unique
from thumbline.settings import load_settings
from thumbline.sqlserver import SqlServer

WRITER, READER = "thumbline", "thumbline_reader"
PASSWORDS = {WRITER: "writer-secret-1-5b7e9c", READER: "reader-secret-2-0d4f1a"}


@dataclass(frozen=True)
class Answer:
    status: int
    code: str | None
    body: str


@dataclass(frozen=True)
class Endpoint:
    url: str
    database: str

    def send(
        self, sql: str = "", *, user: str = WRITER, password: str | None = None,
        params: dict[str, str] | None = None, method: str = "POST", body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:  # fmt: skip
        query = dict(params or {})
        if method == "GET":
            query["query"] = sql
        data = body if body is not None else (sql.encode() if method == "POST" else None)
        secret = PASSWORDS.get(user, "") if password is None else password
        auth = base64.b64encode(f"{user}:{secret}".encode()).decode()
        request = urllib.request.Request(  # noqa: S310 (loopback)
            f"{self.url}/?{urllib.parse.urlencode(query)}", data=data, method=method,
            headers={"Authorization": f"Basic {auth}", **(headers or {})},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
                return Answer(response.status, None, response.read().decode("utf-8", "replace"))
        except urllib.error.HTTPError as exc:
            with exc:
                return Answer(
                    exc.code, exc.headers.get("X-ClickHouse-Exception-Code"),
                    exc.read().decode("utf-8", "replace"),
                )  # fmt: skip


@pytest.fixture(scope="module")
def endpoint(store, store_settings, tmp_path_factory) -> Iterator[Endpoint]:
    """The session's store served by this process, as ``thumbline up`` serves it."""
    settings = load_settings(
        data_dir=tmp_path_factory.mktemp("endpoint"),
        clickhouse_url=store_settings.store_url,
        clickhouse_database=store_settings.clickhouse_database,
        sql_writer_password=PASSWORDS[WRITER],
        sql_reader_password=PASSWORDS[READER],
    )
    server = SqlServer(settings, writer=store).start()
    yield Endpoint(server.url, settings.clickhouse_database)
    server.stop()


def refused(answer: Answer) -> None:
    """A ClickHouse-shaped refusal: 4xx, its code in the header and the body."""
    assert 400 <= answer.status < 500, answer
    assert answer.code is not None and answer.code.isdigit(), answer
    assert answer.body.startswith(f"Code: {answer.code}. DB::Exception: "), answer


@pytest.fixture
def canary(tmp_path: Path) -> Path:
    """A file outside the store that no answer may contain."""
    path = tmp_path / "canary.txt"
    path.write_text("CANARY-8c1d\n")
    return path


ESCAPES = [
    "SELECT * FROM file('{canary}', 'LineAsString')",
    "SELECT file('{canary}')",
    "INSERT INTO FUNCTION file('{out}', 'TSV', 'a String') SELECT 'x'",
    "SELECT 1 INTO OUTFILE '{out}'",
    "SELECT * FROM url('http://127.0.0.1:9/', 'CSV', 'a String')",
    "SELECT * FROM s3('http://127.0.0.1:9/b/k.csv', 'CSV', 'a String')",
    "CREATE TABLE {db}.t_file (a String) ENGINE = File(LineAsString, '{canary}')",
    "CREATE TABLE {db}.t_disk (a UInt32) ENGINE = MergeTree ORDER BY a "
    "SETTINGS disk = disk(type = local, path = '{outdir}/')",
    "ATTACH TABLE {db}.t_attach FROM '{outdir}' (a UInt32) ENGINE = MergeTree ORDER BY a",
    "BACKUP TABLE {db}.feedback TO File('{out}')",
    "CREATE DICTIONARY {db}.d (a String) PRIMARY KEY a "
    "SOURCE(FILE(PATH '{canary}' FORMAT 'LineAsString')) LAYOUT(FLAT()) LIFETIME(0)",
    "SELECT * FROM system.users",
    "SELECT * FROM system.query_log",
    "SELECT * FROM default.`{canary}`",
    "CREATE DATABASE t_other",
    "CREATE TABLE default.t_x (a UInt32) ENGINE = Memory",
    "SYSTEM FLUSH LOGS",
    "SYSTEM SHUTDOWN",
    "CREATE USER t_mallory IDENTIFIED WITH plaintext_password BY 'x'",
    "GRANT ALL ON *.* TO default",
    "KILL QUERY WHERE 1",
    "SET max_execution_time = 100000",
    "USE system",
    "SELECT * FROM {db}.feedback "
    "SETTINGS max_execution_time = 100000, output_format_schema = '{out}'",
    "ALTER TABLE {db}.feedback FREEZE",
    "ALTER TABLE {db}.feedback MODIFY SETTING disk = 'default'",
    "RENAME TABLE {db}.feedback TO default.feedback",
    "CREATE FUNCTION t_f AS x -> x",
    "SHOW TABLES FROM default",
    "SHOW TABLES FROM system",
    "SHOW DATABASES",
    "TRUNCATE ALL TABLES FROM default",
    "TRUNCATE DATABASE {db}",
]


@pytest.mark.parametrize("user", [WRITER, READER])
@pytest.mark.parametrize("template", ESCAPES)
def test_each_escape_is_refused_for_both_users_and_writes_no_file(
    endpoint, user, template, canary, tmp_path
):
    out, outdir = tmp_path / "out.tsv", tmp_path / "outdir"
    sql = template.format(canary=canary, out=out, outdir=outdir, db=endpoint.database)
    answer = endpoint.send(sql, user=user)
    refused(answer)
    assert answer.code in ("497", "164"), answer  # the endpoint's refusal, not a side error
    assert "CANARY" not in answer.body
    assert not out.exists() and not outdir.exists()
    assert endpoint.send("SELECT count() FROM feedback").status == 200  # still serving


def test_inserts_with_data_reach_only_thumbline_tables(endpoint, tmp_path):
    for target in ("system.settings", "default.t_x", f"FUNCTION file('{tmp_path}/x', 'TSV')"):
        answer = endpoint.send(body=f"INSERT INTO {target} FORMAT TSV\nx\n".encode())
        refused(answer)
    assert list(tmp_path.iterdir()) == []


def test_the_reader_inserts_nothing(endpoint):
    db = endpoint.database
    answer = endpoint.send(
        body=f"INSERT INTO {db}.dead_letters (reason) FORMAT TSV\nx\n".encode(), user=READER
    )
    refused(answer)
    assert answer.code == "164"


def test_a_get_request_never_writes(endpoint):
    table = unique("get")
    answer = endpoint.send(
        f"CREATE TABLE {endpoint.database}.{table} (a UInt32) ENGINE = Memory", method="GET"
    )
    refused(answer)
    assert answer.code == "164"
    assert endpoint.send(f"EXISTS TABLE {endpoint.database}.{table}").body.strip() == "0"


@pytest.mark.parametrize(
    "setting",
    [
        {"output_format_schema": "/tmp/x.capnp"},
        {"format_schema": "/etc/passwd"},
        {"format_template_resultset": "/etc/passwd"},
        {"allow_ddl": "1"},
        {"readonly": "0", "user_files_path": "/"},
    ],
)
@pytest.mark.parametrize("user", [WRITER, READER])
def test_settings_that_reach_files_are_refused_in_the_url(endpoint, setting, user):
    answer = endpoint.send("SELECT 1", user=user, params=setting)
    refused(answer)
    assert answer.code == "164"


def test_the_reader_cannot_raise_its_limits(endpoint):
    answer = endpoint.send(
        "SELECT count() FROM numbers(10000000000)", user=READER,
        params={"max_execution_time": "100000", "max_result_rows": "0"},
    )  # fmt: skip
    refused(answer)


@pytest.mark.parametrize(
    ("user", "password"),
    [(WRITER, "wrong"), (READER, "writer-secret-1-5b7e9c"), ("default", ""), ("", "")],
)
def test_a_wrong_user_or_password_gets_authentication_failed(endpoint, user, password):
    answer = endpoint.send("SELECT 1", user=user, password=password)
    assert answer.status == 401 and answer.code == "516"
    assert all(p not in answer.body for p in PASSWORDS.values())


def test_the_clickhouse_headers_authenticate_too(endpoint):
    answer = endpoint.send(
        "SELECT 1", password="wrong",
        headers={"X-ClickHouse-User": READER, "X-ClickHouse-Key": PASSWORDS[READER],
                 "Authorization": ""},
    )  # fmt: skip
    assert answer == Answer(200, None, "1\n")


def test_a_password_in_the_url_is_refused_even_when_right(endpoint):
    answer = endpoint.send(
        "SELECT 1", password="", params={"user": WRITER, "password": PASSWORDS[WRITER]},
        headers={"Authorization": ""},
    )  # fmt: skip
    assert answer.status == 401 and "not in the URL" in answer.body


def test_a_body_past_the_bound_is_refused_unread(endpoint, monkeypatch):
    monkeypatch.setattr("thumbline.chwire.MAX_BODY_BYTES", 1024 * 1024)
    bomb = gzip.compress(b"SELECT 1 -- " + b"x" * (10 * 1024 * 1024))
    assert len(bomb) < 1024 * 1024  # small on the wire, over the bound once decompressed
    answer = endpoint.send(body=bomb, headers={"Content-Encoding": "gzip"})
    refused(answer)
    assert answer.code == "307"


def test_a_query_past_the_bound_is_refused(endpoint):
    answer = endpoint.send("SELECT 1 -- " + "x" * 1_100_000)
    refused(answer)
    assert answer.code == "307"


def test_other_databases_are_not_served(endpoint):
    answer = endpoint.send("SELECT 1", params={"database": "system"})
    refused(answer)
    assert answer.code == "81"


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT name FROM system.tables WHERE name IN (SELECT name FROM system.users)",
        "SELECT * FROM system.columns, file('{canary}', 'LineAsString')",
        "SELECT name, file('{canary}') FROM system.databases",
        "SELECT * FROM system.tables SETTINGS max_execution_time = 100000",
        "SELECT * FROM system.databases INTO OUTFILE '{canary}.out'",
    ],
)
def test_the_readers_catalog_reads_open_no_door(endpoint, sql, canary):
    answer = endpoint.send(sql.format(canary=canary), user=READER)
    refused(answer)
    assert "CANARY" not in answer.body
    assert not Path(f"{canary}.out").exists()


def test_requests_past_the_concurrency_bound_get_503_and_the_running_one_finishes(
    store, store_settings, tmp_path, monkeypatch
):
    monkeypatch.setattr("thumbline.chhttp.MAX_CONCURRENT", 1)
    settings = load_settings(
        data_dir=tmp_path, clickhouse_url=store_settings.store_url,
        clickhouse_database=store_settings.clickhouse_database,
        sql_writer_password=PASSWORDS[WRITER], sql_reader_password=PASSWORDS[READER],
    )  # fmt: skip
    server = SqlServer(settings, writer=store).start()
    try:
        endpoint = Endpoint(server.url, settings.clickhouse_database)
        with ThreadPoolExecutor(1) as pool:
            busy, deadline = None, time.monotonic() + 60
            while busy is None and time.monotonic() < deadline:
                slow = pool.submit(endpoint.send, "SELECT sleep(2.5)")
                while busy is None and not slow.done():  # a quick one meets the slow one
                    answer = endpoint.send("SELECT 1")
                    busy = answer if answer.status == 503 else None
                if slow.result().status == 503:  # the quick one held the slot: again
                    busy = None
            assert busy is not None, "no request was turned away while the slow one ran"
            assert busy.code == "202" and "too many requests" in busy.body
            assert slow.result().status == 200
        assert endpoint.send("SELECT 1").status == 200
    finally:
        server.stop()


def form(fields: dict[str, str], files: dict[str, bytes] | None = None) -> tuple[bytes, str]:
    """A multipart/form-data body, as clickhouse-connect sends a query with long parameters."""
    boundary = "b0undary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    for name, content in (files or {}).items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{name}.tsv"\r\n\r\n'.encode()
            + content
            + b"\r\n"
        )
    return b"".join(
        parts
    ) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


@pytest.mark.parametrize("user", [WRITER, READER])
def test_a_query_sent_as_a_form_is_judged_as_one_sent_in_the_url(endpoint, user, canary):
    body, kind = form({"query": f"SELECT * FROM file('{canary}', 'RawBLOB')"})
    refused(endpoint.send(user=user, body=body, headers={"Content-Type": kind}))
    body, kind = form({"query": "SELECT 1", "format_schema": "/etc/passwd"})
    answer = endpoint.send(user=user, body=body, headers={"Content-Type": kind})
    refused(answer)
    assert answer.code == "164"  # a setting in a form field is a setting in the URL
    body, kind = form({"query": "SELECT 1", "database": "system"})
    refused(endpoint.send(user=user, body=body, headers={"Content-Type": kind}))


def test_a_form_carrying_a_file_or_too_many_fields_is_refused(endpoint):
    body, kind = form({"query": "SELECT * FROM ext"}, files={"ext": b"1\n2\n"})
    refused(endpoint.send(body=body, headers={"Content-Type": kind}))
    body, kind = form({f"param_p{n}": "x" for n in range(1_001)} | {"query": "SELECT 1"})
    refused(endpoint.send(body=body, headers={"Content-Type": kind}))


def answer_to_headers_alone(url: str, head: str) -> bytes:
    """What the endpoint answers to a request's head whose body never comes (the head
    announces one): the status line and headers, or a timeout if it waits for the body."""
    host, port = urllib.parse.urlsplit(url).netloc.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        conn.sendall(head.encode())
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = conn.recv(4096)  # socket.timeout: the endpoint waits for the body
            if not chunk:
                break
            received += chunk
        return received


def test_a_stranger_is_turned_away_before_the_endpoint_reads_their_body(endpoint):
    # Nothing a wrong password sends may be held in memory: 100 MB announced, none sent.
    head = (
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n"
        f"Authorization: Basic {base64.b64encode(b'thumbline:wrong').decode()}\r\n\r\n"
    )
    reply = answer_to_headers_alone(endpoint.url, head)
    assert reply.startswith(b"HTTP/1.1 401 "), reply
    assert b"X-ClickHouse-Exception-Code: 516" in reply


def test_the_readers_body_is_bounded_by_the_size_of_a_query_before_it_is_read(endpoint):
    # The reader sends SQL only: a body of the writer's insert size is refused unread.
    secret = base64.b64encode(f"{READER}:{PASSWORDS[READER]}".encode()).decode()
    head = (
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n"
        f"Authorization: Basic {secret}\r\n\r\n"
    )
    reply = answer_to_headers_alone(endpoint.url, head)
    assert reply.startswith(b"HTTP/1.1 413 "), reply
    assert b"X-ClickHouse-Exception-Code: 307" in reply


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT key_id, secret_sha256 FROM system.databases, {db}.api_keys",
        "SELECT key_id FROM system.tables, api_keys",
        "SELECT d.name, k.key_id FROM system.columns AS c, system.databases AS d, api_keys AS k",
    ],
)
def test_the_readers_catalog_reads_name_no_table_of_thumbline(endpoint, store, sql):
    # The catalog path runs on the writer's rules: a thumbline table named in it would be
    # read outside the SQL sandbox.
    store.command(
        f"INSERT INTO {endpoint.database}.api_keys (key_id, secret_sha256, scope, project, "
        "annotator, name, created_at, version) SELECT 'k_catalog', 'c0ffee', 'admin', '', '', "
        "'catalog attack', now64(3), 1"
    )
    answer = endpoint.send(sql.format(db=endpoint.database), user=READER)
    refused(answer)
    assert "c0ffee" not in answer.body and "k_catalog" not in answer.body


@pytest.mark.parametrize("user", [WRITER, READER, "stranger"])
def test_a_query_id_cannot_add_headers_to_the_reply(endpoint, user):
    # query_id is echoed in X-ClickHouse-Query-Id: a line break in it would write headers
    # (and a body) of the sender's choosing into the reply, even to a wrong password.
    secret = base64.b64encode(f"{user}:{PASSWORDS.get(user, 'x')}".encode()).decode()
    query = urllib.parse.urlencode(
        {"query": "SELECT 1", "query_id": "q1\r\nX-Injected: yes\r\nSet-Cookie: a=b"}
    )
    head = f"GET /?{query} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {secret}\r\n\r\n"
    reply = answer_to_headers_alone(endpoint.url, head)
    lines = reply.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    assert lines[0].split(b" ")[1] in (b"400", b"401"), reply
    assert not any(line.lower().startswith((b"x-injected", b"set-cookie")) for line in lines)


def test_a_request_line_past_the_bound_gets_414_not_a_dropped_connection(endpoint):
    head = f"GET /?query=SELECT+1&query_id={'q' * 70_000} HTTP/1.1\r\nHost: x\r\n\r\n"
    assert answer_to_headers_alone(endpoint.url, head).startswith(b"HTTP/1.1 414 ")


@pytest.mark.parametrize("size", ["-1", "-10", "+10", "0x10", " "])
def test_a_chunk_whose_size_is_not_hex_digits_is_refused_before_more_is_read(endpoint, size):
    # int("-1", 16) is -1, and a read of -1 bytes reads until the peer closes: no bound.
    secret = base64.b64encode(f"{READER}:{PASSWORDS[READER]}".encode()).decode()
    head = (
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        f"Authorization: Basic {secret}\r\n\r\n{size}\r\nSELECT 1"
    )
    reply = answer_to_headers_alone(endpoint.url, head)
    assert reply.startswith(b"HTTP/1.1 500 "), reply  # ClickHouse's status for code 1001
    assert b"X-ClickHouse-Exception-Code: 1001" in reply


@pytest.fixture(scope="module")
def owner(store, store_settings, tmp_path_factory) -> Iterator[SqlServer]:
    """The session's store served with its token routes (/sql, /query, /insert)."""
    settings = load_settings(
        data_dir=tmp_path_factory.mktemp("owner"), clickhouse_url=store_settings.store_url,
        clickhouse_database=store_settings.clickhouse_database,
    )  # fmt: skip
    server = SqlServer(settings, writer=store).start()
    yield server
    server.stop()


@pytest.mark.parametrize("path", ["/sql", "/query", "/insert?table=feedback"])
@pytest.mark.parametrize("length", ["-1", "1e9", "0x10"])
def test_a_content_length_that_is_not_digits_is_refused_before_the_body_is_read(
    owner, path, length
):
    # rfile.read(-1) reads until the peer closes: however much it sends is held.
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n"
        f"Authorization: Bearer {owner.token}\r\n\r\nSELECT 1"
    )
    assert answer_to_headers_alone(owner.url, head).startswith(b"HTTP/1.1 400 ")


@pytest.mark.parametrize("length", ["-1", "1e9", "0x10"])
def test_the_clickhouse_route_answers_a_content_length_that_is_not_digits(endpoint, length):
    secret = base64.b64encode(f"{READER}:{PASSWORDS[READER]}".encode()).decode()
    head = (
        f"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n"
        f"Authorization: Basic {secret}\r\n\r\nSELECT 1"
    )
    reply = answer_to_headers_alone(endpoint.url, head)
    assert reply.startswith(b"HTTP/1.1 400 ") and b"Exception-Code: 36" in reply, reply
