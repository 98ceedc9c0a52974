"""How ``ray-broker tail`` reads and shows a log topic: ``--since`` durations, and a record
written by ``ray_broker.logging`` as one coloured line (anything else is shown as it is)."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from rich.text import Text

from ray_broker.errors import InvalidConfig

LEVEL_STYLES = {
    "DEBUG": "dim",
    "INFO": "green",
    "WARNING": "yellow",
    "ERROR": "bold red",
    "CRITICAL": "bold white on red",
}
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*")
_UNIT_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, None: 1_000}


def since_ms(text: str) -> int:
    """``"10m"``, ``"90s"``, ``"2h"``, ``"1d"``, ``"500ms"`` (a bare number is seconds) → ms.

    Raises:
        InvalidConfig: anything else.
    """
    found = _DURATION.fullmatch(text)
    if not found:
        raise InvalidConfig(f"--since is a duration like 10m, 90s, 2h or 1d, got {text!r}")
    return int(float(found.group(1)) * _UNIT_MS[found.group(2)])


def parsed(value: bytes | None) -> dict[str, Any] | None:
    """The JSON document of a log record, or None for a value that is not one."""
    if not value:
        return None
    try:
        found = json.loads(value)
    except ValueError:
        return None
    return found if isinstance(found, dict) and "message" in found else None


def line(value: bytes | None) -> Text:
    """``12:00:01.250 ERROR checkout payment: card declined`` (+ the exception, indented)."""
    document = parsed(value)
    if document is None:
        return Text((value or b"").decode("utf-8", errors="replace"))
    level = str(document.get("level", ""))
    style = LEVEL_STYLES.get(level, "")
    shown = Text()
    ts = document.get("ts")
    if isinstance(ts, int):
        shown.append(datetime.fromtimestamp(ts / 1000).strftime("%H:%M:%S.%f")[:-3] + " ", "dim")
    shown.append(f"{level:<8} ", style)
    shown.append(f"{document.get('service', '')} ", "cyan")
    shown.append(f"{document.get('logger', '')}: ", "dim")
    shown.append(str(document.get("message", "")), style if level in ("ERROR", "CRITICAL") else "")
    if document.get("exception"):
        shown.append("\n    " + str(document["exception"]).replace("\n", "\n    "), "red")
    return shown
