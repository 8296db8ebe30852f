"""make_private: group and other bits removed under a root, links neither changed nor followed."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from thumbline.files import PRIVATE_UMASK, make_private, private_umask


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_folders_become_0700_and_files_keep_only_their_owners_bits(tmp_path):
    root, outside = tmp_path / "data", tmp_path / "outside"
    (root / "chdb" / "store").mkdir(parents=True)
    outside.mkdir()
    for path, bits in ((root / "broker.log", 0o644), (root / "chdb" / "store" / "a.bin", 0o664),
                       (root / "run.sh", 0o755), (outside / "theirs", 0o644)):  # fmt: skip
        path.write_text("x")
        path.chmod(bits)
    for folder in (root, root / "chdb", root / "chdb" / "store", outside):
        folder.chmod(0o755)  # noqa: S103 (what a shell's umask leaves)
    (root / "link").symlink_to(outside / "theirs")
    (root / "dir-link").symlink_to(outside, target_is_directory=True)

    assert make_private(root) == 6  # 3 folders, 3 files
    assert [mode(root / p) for p in ("", "chdb", "chdb/store")] == [0o700] * 3
    assert [mode(root / p) for p in ("broker.log", "chdb/store/a.bin", "run.sh")] == [
        0o600, 0o600, 0o700
    ]  # fmt: skip
    assert mode(outside) == 0o755 and mode(outside / "theirs") == 0o644
    assert make_private(root) == 0  # nothing left to fix


def test_a_missing_root_is_nothing_to_fix(tmp_path):
    assert make_private(tmp_path / "absent") == 0


def test_the_umask_makes_new_files_private(tmp_path):
    old = private_umask()
    try:
        (tmp_path / "new").write_text("x")
        (tmp_path / "dir").mkdir()
    finally:
        os.umask(old)
    assert PRIVATE_UMASK == 0o077
    assert mode(tmp_path / "new") == 0o600 and mode(tmp_path / "dir") == 0o700
