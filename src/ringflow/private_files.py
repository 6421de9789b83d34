"""What ringflow writes is the service's own: owner-only files (0600) and directories (0700).

The database holds hashed tokens and every call's numbers, recordings hold what people said,
and ``data_dir/secret_key`` signs recording links; none of it is for other local users. The
process umask makes every new file and directory owner-only whatever the shell's umask was
(SQLite gives its WAL and shared-memory files the database file's mode), and a start-up pass
tightens what an older version or a careless copy left readable.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from ringflow.config import Settings

log = logging.getLogger(__name__)

UMASK = 0o077


def owner_only() -> None:
    """From now on, files and directories this process creates are its owner's only."""
    os.umask(UMASK)


def tighten(settings: Settings) -> None:
    """Make the data directory 0700 and the SQLite database files 0600 if they are looser."""
    targets = [(Path(settings.data_dir), 0o700)]
    if (db := settings.sqlite_path()) is not None:
        targets += [(Path(f"{db}{suffix}"), 0o600) for suffix in ("", "-wal", "-shm", "-journal")]
    for path, mode in targets:
        try:
            current = stat.S_IMODE(path.stat().st_mode)
            if current & ~mode:
                path.chmod(current & mode)
                log.warning(
                    "%s was readable by other users (%o): now %o", path, current, current & mode
                )
        except FileNotFoundError:
            continue
        except PermissionError as exc:  # not ours: say so rather than fail to start
            log.warning("cannot make %s owner-only: %s", path, exc)
