"""What a broker owns in its data directory, and nothing more (no Ray here).

* **One owner.** The Controller holds an exclusive ``flock`` on ``<data_dir>/.lock`` (naming its
  namespace and pid) for as long as its process lives; a second broker pointed at the same
  directory is refused with ``DataDirInUse`` instead of appending to the same metadata log. The
  lock dies with the process, so a restarted Controller takes it over.
* **Internal state outside the topic namespace**, under ``<data_dir>/__internal/`` (topic names
  starting with ``__`` are reserved). Data of the earlier layout (``<data_dir>/__cluster_metadata``)
  is moved there once.
* **Topic directories are claimed, not adopted.** Creating a topic writes a marker naming its
  topic id; a directory that exists without the broker's marker belongs to someone else and is
  refused. Deleting a topic removes only the broker's own files.
* **Private files.** Broker processes create files 0600 and directories 0700 (``umask``).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import secrets
import shutil
import socket
from pathlib import Path

from ray_broker.config import INTERNAL_DIR
from ray_broker.errors import DataDirInUse, KafkaStorageError

LOCK_FILE = ".lock"
TOPIC_MARKER = ".ray_broker_topic"
PRIVATE_UMASK = 0o077


def make_private() -> None:
    """Files this process creates from now on are readable by their owner only."""
    os.umask(PRIVATE_UMASK)


class DataDirLock:
    """An exclusive, process-lifetime lock on a data directory."""

    def __init__(self, data_dir: Path, namespace: str) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / LOCK_FILE
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            owner = self._read_owner()
            os.close(self._fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise KafkaStorageError(f"cannot lock {self.path}: {exc}") from None
            raise DataDirInUse(
                f"data directory {data_dir} is in use by the broker of namespace "
                f"{owner.get('namespace', '?')!r} (pid {owner.get('pid', '?')} on "
                f"{owner.get('host', '?')}); give this broker another data_dir or connect to "
                "that namespace"
            ) from None
        owner = {"namespace": namespace, "pid": os.getpid(), "host": socket.gethostname()}
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, json.dumps(owner).encode(), 0)

    def _read_owner(self) -> dict[str, object]:
        try:
            return json.loads(os.pread(self._fd, 4096, 0) or b"{}")
        except (OSError, ValueError):
            return {}

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = -1


def internal_token(data_dir: Path) -> str:
    """The secret the Controller and its partitions share (``__internal/controller.token``,
    mode 0600), created once; it survives restarts so restarted actors keep talking."""
    path = data_dir / INTERNAL_DIR / "controller.token"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.write_text(secrets.token_hex(32))
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    return path.read_text().strip()


def internal_dir(data_dir: Path, name: str) -> Path:
    """``<data_dir>/__internal/<name>/partition=0``: where the broker's own logs live."""
    return data_dir / INTERNAL_DIR / name / "partition=0"


def claim_topic_dir(data_dir: Path, name: str, topic_id: str) -> None:
    """Make ``<data_dir>/<name>`` the directory of topic ``topic_id``.

    A leftover of an earlier topic of the same name (the broker's marker, another id) is
    cleared of the broker's files first.

    Raises:
        KafkaStorageError: the directory exists and is not the broker's.
    """
    directory = data_dir / name
    if directory.exists():
        marker = directory / TOPIC_MARKER
        if not marker.is_file():
            raise KafkaStorageError(
                f"directory {directory} exists and was not made by ray-broker; the broker will "
                f"not adopt it (or later delete it). Move it away or choose another topic name"
            )
        if marker.read_text().strip() != topic_id:
            release_topic_dir(data_dir, name)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / TOPIC_MARKER).write_text(topic_id)


def release_topic_dir(data_dir: Path, name: str) -> None:
    """Delete a topic's files: its ``partition=*`` directories and its marker; the directory
    itself only if nothing else is left in it."""
    directory = data_dir / name
    if not directory.is_dir():
        return
    for child in directory.iterdir():
        if child.is_dir() and child.name.startswith("partition="):
            shutil.rmtree(child, ignore_errors=True)
    (directory / TOPIC_MARKER).unlink(missing_ok=True)
    if not any(directory.iterdir()):
        directory.rmdir()
