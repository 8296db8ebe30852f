"""ClickHouse DDL as numbered, versioned migrations.

Each ``NNNN_name.sql`` file holds statements separated by ``;`` at the end of
a line, with ``{db}`` standing for the database. A migration is never edited
after release: add a new file instead (the runner refuses a changed checksum).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str
    checksum: str

    def statements(self, database: str) -> list[str]:
        """The migration's statements for ``database``, comments removed."""
        lines = [ln for ln in self.sql.splitlines() if not ln.lstrip().startswith("--")]
        text = "\n".join(lines).replace("{db}", database)
        return [s.strip() for s in re.split(r";\s*$", text, flags=re.M) if s.strip()]


def load() -> list[Migration]:
    """Every migration shipped with this version of thumbline, oldest first."""
    found: list[Migration] = []
    for entry in resources.files(__name__).iterdir():
        match = _NAME.match(entry.name)
        if match:
            sql = entry.read_text(encoding="utf-8")
            found.append(
                Migration(
                    version=int(match.group(1)),
                    name=match.group(2),
                    sql=sql,
                    checksum=hashlib.sha256(sql.encode()).hexdigest()[:16],
                )
            )
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two migrations share a version: {versions}")
    return found
