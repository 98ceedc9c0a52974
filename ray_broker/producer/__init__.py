"""The producer, by concept: ``producer`` (the public API), ``accumulator`` (batching, linger,
sequences, retries: plain and clock-driven), ``sender`` (the I/O thread), ``batch`` (the queued
units and their futures), ``partitioner`` and ``records`` (checks of what callers pass)."""

from ray_broker.producer.batch import BatchFuture, RecordFuture
from ray_broker.producer.producer import Producer

__all__ = ["BatchFuture", "Producer", "RecordFuture"]
