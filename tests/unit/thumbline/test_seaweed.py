"""The durable broker's storage, without starting it: credentials, ports, the binary."""

from __future__ import annotations

import json
import os
import socket
import stat

from thumbline.children import port_free
from thumbline.seaweed import PORT_FLAGS, _load_identity, sigv4_headers, weed_binary


def test_credentials_are_made_once_per_data_dir_in_an_owner_only_file(tmp_path):
    path = tmp_path / "seaweedfs.json"
    first = _load_identity(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first.secret_key) >= 40 and first.secret_key not in repr(first)
    again = _load_identity(path)
    assert (again.access_key, again.secret_key, again.ports) == (
        first.access_key, first.secret_key, first.ports,
    )  # fmt: skip


def test_every_port_is_chosen_distinct_and_free_and_moves_when_one_is_taken(tmp_path):
    path = tmp_path / "seaweedfs.json"
    ports = _load_identity(path).ports
    assert set(ports) == set(PORT_FLAGS)
    every = [*ports.values(), ports["admin.port"] + 10_000]  # weed's worker dials admin + 10000
    assert len(set(every)) == len(every) and all(port_free(p) for p in every)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ports["s3.port"]))
        taken.listen()
        moved = _load_identity(path)
    assert moved.ports["s3.port"] != ports["s3.port"]
    assert moved.secret_key == json.loads(path.read_text())["secret_key"]


def test_an_unreadable_file_gets_new_credentials(tmp_path):
    path = tmp_path / "seaweedfs.json"
    path.write_text("{not json")
    assert _load_identity(path).access_key.startswith("tl")


def test_the_weed_program_comes_with_the_wheel():
    path = weed_binary()
    assert os.access(path, os.X_OK) and os.path.basename(path) == "weed"


def test_requests_are_signed_with_aws_signature_v4():
    headers = sigv4_headers("HEAD", "127.0.0.1:8333", "/tansu", access_key="AK", secret_key="SK")
    auth = headers["Authorization"]
    assert auth.startswith("AWS4-HMAC-SHA256 Credential=AK/")
    assert "/us-east-1/s3/aws4_request" in auth
    assert "SignedHeaders=host;x-amz-content-sha256;x-amz-date" in auth
    assert "SK" not in auth
