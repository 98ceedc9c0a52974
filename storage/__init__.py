"""The storage engine: a partition's log as a plain pyarrow library (no Ray, no threads)."""

from ray_broker.storage.config import LogConfig
from ray_broker.storage.log import Log, RecoveryReport
from ray_broker.storage.schema import FORMAT_VERSION, RECORD_SCHEMA

__all__ = ["FORMAT_VERSION", "RECORD_SCHEMA", "Log", "LogConfig", "RecoveryReport"]
