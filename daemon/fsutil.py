"""Small file-system helpers shared by the modules that write files beside the database."""

import os
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """Make a new directory entry (a link or rename) durable, where the file system allows."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot sync a directory; the file itself is synced
    finally:
        os.close(fd)
