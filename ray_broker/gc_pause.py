"""Keeping Python's cyclic garbage collector out of the way of records.

**Freezing the loaded heap.** What is alive once a broker connection or actor has started —
Ray, pyarrow and the broker's own modules, several hundred thousand objects — lives as long as
the process, yet every full collection scans all of it: 60–90 ms on the benchmark box, every
few seconds under load. In a consumer that pause was the end-to-end p99 (a 2k msg/s run's
worst records all arrived during one); in a partition actor it holds every produce and fetch.
``freeze_loaded_heap`` moves those objects into the permanent generation once per process
(``gc.freeze``, as CPython recommends for long-lived start-up state), so full collections
scan only what was made since.

**Pausing around bursts.**
Building thousands of small objects (``Record``s on ``poll()``, share-group deliveries in a
partition actor) triggers collection after every 700 allocations, and now and then a full
collection over the whole heap — a pause of 100+ ms in a partition actor holding a large log.
The objects made there are not cyclic garbage, so collecting during the burst finds nothing;
pausing makes one young collection afterwards instead of dozens (and far fewer full ones).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

_frozen = False


def freeze_loaded_heap() -> None:
    """Freeze what is alive now, once per process (see the module docstring)."""
    global _frozen
    if not _frozen:
        _frozen = True
        # No collection first: it would cost a full pause at every actor's start, for the
        # little cyclic garbage alive right now (frozen with the rest, never freed).
        gc.freeze()


@contextmanager
def collector_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
