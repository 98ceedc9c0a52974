"""Broker actors convert Python lists to Arrow without pyarrow importing pandas.

pyarrow imports pandas the first time it converts a Python list, only to ask whether the list
is a pandas object. Every partition is its own Ray worker process, so that one question cost
each partition actor ~0.25 s of CPU and 31 MiB of resident memory (186 → 155 MiB measured) for
a library the broker never uses.

Refusing the import once, during pyarrow's probe, makes pyarrow answer "not a pandas object"
for lists from then on; pyarrow's own pandas conversions (``to_pandas``, ``from_pandas``) still
import pandas on demand, so nothing stops working in the process. Only the broker's own actors
call this — never a user's process, which may well hand pyarrow pandas objects.
"""

from __future__ import annotations

import importlib.abc
import sys
import threading
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

_lock = threading.Lock()
_probed = False


class _RefusePandas(importlib.abc.MetaPathFinder):
    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None = None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        if fullname == "pandas" or fullname.startswith("pandas."):
            raise ImportError("ray-broker actors skip pyarrow's pandas probe")
        return None


def skip_pandas_probe() -> None:
    """Let pyarrow settle its "is pandas here?" probe without importing pandas (idempotent;
    a no-op where pandas is already imported)."""
    global _probed
    with _lock:
        if _probed or "pandas" in sys.modules:
            return
        import pyarrow as pa

        refuse = _RefusePandas()
        sys.meta_path.insert(0, refuse)
        try:
            pa.array([0])  # the first list conversion runs the probe
        finally:
            sys.meta_path.remove(refuse)
        _probed = True
