"""Atomic file writes: a reader sees the old file or the new one, never a half-written file.

Every writer goes through a temporary file in the target's folder (same file system) and ``os.replace``,
which is atomic on POSIX and Windows. A process killed mid-write (even SIGKILL) leaves the previous file
intact and at most a stray hidden ``.<name>.<pid>.<thread>.tmp`` beside it; an exception removes it. No
fsync: the guarantee is against interrupted processes, not power loss.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` atomically, on error it is removed.

    Use it for writers that want a file name (``torch.save``, ``PIL.Image.save``, ``tifffile.imwrite``)::

        with atomic_path(out / "best.ckpt") as tmp:
            torch.save(state, tmp)

    Args:
        path: the final file; its folder is created if missing.

    Yields:
        A path in the same folder, unique to this process and thread (created with the default permissions
        by whoever writes it).

    Raises:
        OSError: the folder cannot be created or the rename fails (the temporary file is removed).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`) and return ``path`` as a ``Path``.

    Raises:
        OSError: the folder cannot be created or written.
    """
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (see :func:`atomic_path`) and return ``path``.

    Raises:
        OSError: the folder cannot be created or written.
    """
    return atomic_write_bytes(path, text.encode("utf-8"))
