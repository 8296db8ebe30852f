"""Production's SQL sandbox user: docker-compose.yml provisions it as the README says.

Docker does not run here, so the files are read: the clickhouse container gets
the users.d file and the password, the user may SELECT on thumbline only with
readonly=1 and thumbline's default limits, and thumbline connects as it.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from thumbline.sandbox import limits
from thumbline.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
USERS_D = ROOT / "deploy" / "clickhouse" / "users.d" / "thumbline-reader.xml"


def users() -> ET.Element:
    return ET.parse(USERS_D).getroot()  # noqa: S314 (our own file)


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


def test_the_clickhouse_container_gets_the_reader_user_and_its_password():
    clickhouse = compose()["clickhouse"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in clickhouse["volumes"]}
    inside = mounts["./deploy/clickhouse/users.d/thumbline-reader.xml"]
    assert inside.startswith("/etc/clickhouse-server/users.d/") and USERS_D.exists()
    user = users().find("users/thumbline_reader")
    assert user is not None
    password = user.find("password")
    assert password is not None and password.get("from_env") in clickhouse["environment"]


def test_the_reader_may_select_on_thumbline_only_readonly_within_the_limits():
    root = users()
    user = root.find("users/thumbline_reader")
    assert user is not None
    grants = [q.text or "" for q in user.findall("grants/query")]
    assert grants == ["GRANT SELECT ON thumbline.*"]  # no SOURCES, no other database
    assert user.findtext("profile") == "thumbline_reader"
    profile = root.find("profiles/thumbline_reader")
    assert profile is not None
    values = {child.tag: child.text for child in profile if child.tag != "constraints"}
    assert values.pop("readonly") == "1"
    assert values == limits(load_settings())  # the same limits as the embedded default
    # Grafana may set max_execution_time, never above the limit, and nothing else.
    changeable = profile.findall("constraints/*")
    assert [c.tag for c in changeable] == ["max_execution_time"]
    assert changeable[0].findtext("max") == values["max_execution_time"]
    assert changeable[0].find("changeable_in_readonly") is not None


def test_thumbline_in_compose_runs_outside_sql_as_the_reader():
    env = compose()["gateway"]["environment"]
    reader = urlsplit(re.sub(r"\$\{[^}]+\}", "pw", env["THUMBLINE_CLICKHOUSE_READER_URL"]))
    main = urlsplit(re.sub(r"\$\{[^}]+\}", "pw", env["THUMBLINE_CLICKHOUSE_URL"]))
    assert reader.username == "thumbline_reader" and reader.hostname == main.hostname
    assert env["THUMBLINE_CLICKHOUSE_DATABASE"] == "thumbline"


def test_the_readme_documents_the_sandbox_and_its_settings():
    readme = (ROOT / "README.md").read_text()
    security = readme.split("\n### Security\n", 1)[1].split("\n### ", 1)[0]
    assert "#### SQL" in security
    configuration = (ROOT / "docs" / "configuration.md").read_text()
    for name in ("THUMBLINE_SQL_MAX_SECONDS", "THUMBLINE_SQL_MAX_RESULT_ROWS",
                 "THUMBLINE_SQL_MAX_RESULT_BYTES", "THUMBLINE_SQL_MAX_MEMORY_BYTES",
                 "THUMBLINE_CLICKHOUSE_READER_URL", "THUMBLINE_GATEWAY_SQL_WORKERS"):  # fmt: skip
        assert f"`{name}`" in configuration, name
        assert name in security, name
