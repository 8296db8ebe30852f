"""Files only for their owner: the umask of thumbline's processes and the data dir's modes.

The data dir holds every comment and user id (the chDB store), the broker's
and the helpers' logs and the run file with the SQL endpoint's token. Every
entrypoint that can create files there (``thumbline up``, every CLI command,
a join helper) sets the umask to :data:`PRIVATE_UMASK` before it creates any,
and ``thumbline up`` removes the group and other bits of what exists at start
(:func:`make_private`), for stores an older version or a shell left readable.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

logger = logging.getLogger(__name__)

#: New folders 0700, new files 0600. Child processes (the broker, helpers) inherit it.
PRIVATE_UMASK = 0o077


def private_umask() -> int:
    """Set the process's umask to :data:`PRIVATE_UMASK`; return the one it replaces."""
    return os.umask(PRIVATE_UMASK)


def make_private(root: Path) -> int:
    """Remove group and other bits from ``root`` and everything under it.

    Folders become 0700 and files keep only their owner's bits (0644 becomes
    0600). Symlinks are neither changed nor followed, so nothing outside
    ``root`` is touched; ``root`` itself may be a link (the user chose it).
    An entry that cannot be changed (another user's) is skipped and logged.

    Returns:
        How many files and folders were changed.
    """
    if not root.exists():
        return 0
    changed, failed = 0, []
    # Top-down: a folder is closed before its entries are changed, so once it is
    # private nobody else can swap an entry for a link between lstat and chmod.
    for folder, dirs, files in os.walk(root.resolve(), followlinks=False):
        for path in [folder, *(os.path.join(folder, name) for name in [*dirs, *files])]:
            try:
                mode = os.lstat(path).st_mode
                if stat.S_ISDIR(mode):
                    wanted = (stat.S_IMODE(mode) & ~0o077) | 0o700
                elif stat.S_ISREG(mode):
                    wanted = stat.S_IMODE(mode) & ~0o077
                else:  # symlinks, sockets, fifos: not ours to change
                    continue
                if wanted != stat.S_IMODE(mode):
                    os.chmod(path, wanted)
                    changed += 1
            except OSError as exc:
                failed.append(f"{path} ({exc.strerror})")
    if failed:
        logger.warning(
            "%d entries under %s stay readable by other users: %s",
            len(failed), root, ", ".join(failed[:5]) + (" ..." if len(failed) > 5 else ""),
        )  # fmt: skip
    return changed
