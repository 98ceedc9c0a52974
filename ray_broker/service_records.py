"""What ``ray-broker start`` leaves for later commands on this machine: one record per broker
namespace (``~/.ray_broker/service-<namespace>.json``), so two brokers started here never
overwrite each other, and ``status``/``stop`` can name the one they act on.

A record is a hint, not the truth: the cluster it names may be gone (the machine rebooted,
``ray stop`` ran); commands that find it dead forget it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import quote

SERVICE_DIR = Path.home() / ".ray_broker"
_PREFIX = "service-"


def _directory(directory: Path | None) -> Path:
    return SERVICE_DIR if directory is None else directory


@dataclass(frozen=True)
class ServiceRecord:
    """One broker ``start`` started: where it runs, and whether ``start`` started that Ray
    (then the last ``stop`` at that address stops Ray too)."""

    address: str
    namespace: str
    data_dir: str
    started_ray: bool
    job_api: str | None = None

    @staticmethod
    def path_for(namespace: str, directory: Path | None = None) -> Path:
        # Quoted: a namespace is any string Ray accepts, a file name is not.
        return _directory(directory) / f"{_PREFIX}{quote(namespace, safe='')}.json"

    def save(self, directory: Path | None = None) -> None:
        path = self.path_for(self.namespace, directory)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self)))

    def forget(self, directory: Path | None = None) -> None:
        self.path_for(self.namespace, directory).unlink(missing_ok=True)

    def describe(self) -> str:
        """How commands name this broker to a person."""
        return f"namespace {self.namespace!r} at {self.address} (data in {self.data_dir})"

    @classmethod
    def load(cls, namespace: str, directory: Path | None = None) -> ServiceRecord | None:
        return cls._read(cls.path_for(namespace, directory))

    @classmethod
    def all(cls, directory: Path | None = None) -> list[ServiceRecord]:
        """Every broker started on this machine, by namespace."""
        found = (cls._read(path) for path in _directory(directory).glob(f"{_PREFIX}*.json"))
        return sorted((r for r in found if r is not None), key=lambda r: r.namespace)

    @classmethod
    def _read(cls, path: Path) -> ServiceRecord | None:
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):  # none, or unreadable: as if none
            return None


def others_at(address: str, namespace: str, directory: Path | None = None) -> list[ServiceRecord]:
    """The other brokers whose records name the Ray at ``address``."""
    return [
        r for r in ServiceRecord.all(directory) if r.address == address and r.namespace != namespace
    ]


def shared_local_ray(directory: Path | None = None) -> str | None:
    """The address of a Ray that ``start`` started here for another namespace: a new namespace
    joins it rather than starting a second Ray on the same machine."""
    for record in ServiceRecord.all(directory):
        if record.started_ray:
            return record.address
    return None
