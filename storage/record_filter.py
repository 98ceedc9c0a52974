"""A server-side record filter: a ``pyarrow.compute`` expression over a record's fields.

Why here: the filter runs where the records are — on the partition's in-memory Arrow batches
and inside Parquet reads of sealed segments — so records it drops never leave the partition.
This module is plain pyarrow (no Ray, no parser): the SQL-like text form is parsed into the same
expression by ``ray_broker.filter_syntax``.

The expression sees a *filter view* of each record:

==================  ==========  ===================================================
field               type        what
==================  ==========  ===================================================
``offset``          int64       the record's offset
``timestamp``       int64       ms since the epoch
``key``             binary      null when the record has no key
``value``           binary      null for a tombstone
``headers.<name>``  binary      the first header called ``<name>``, null if absent
==================  ==========  ===================================================

Binary fields compare with ``bytes`` or ``str`` literals (Arrow casts), and ``match_like``,
``starts_with`` and friends work on them. A record for which the expression is null (a missing
header compared with anything) does not match, as in SQL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ray_broker.errors import InvalidFilter

HEADER_PREFIX = "headers."
# The record columns a filter may name directly, with the type the filter sees.
BASE_FIELDS: dict[str, pa.DataType] = {
    "offset": pa.int64(),
    "timestamp": pa.int64(),
    "key": pa.binary(),
    "value": pa.binary(),
}
# A filter names at most this many distinct fields (each header is one): the view is built per
# batch, so an expression naming thousands of headers would make every read slow.
FILTER_MAX_FIELDS = 32
_MISSING_FIELD = re.compile(r"No match for FieldRef\.Name\((.*?)\) in ")
# The compute functions a filter may call. A filter runs on every fetch of every consumer that
# uses it, so only cheap, total functions: nothing that divides (a zero fails every fetch) or
# grows its input (``binary_repeat(value, 2e7)`` cost 4.3 s of partition CPU per fetch).
ALLOWED_FUNCTIONS = frozenset(
    {
        "invert", "and", "or", "and_kleene", "or_kleene", "xor", "and_not", "and_not_kleene",
        "equal", "not_equal", "less", "less_equal", "greater", "greater_equal",
        "is_null", "is_valid", "is_in", "if_else", "coalesce", "true_unless_null",
        "match_like", "match_substring", "match_substring_regex", "starts_with", "ends_with",
        "count_substring", "find_substring", "binary_length", "utf8_length",
        "utf8_lower", "utf8_upper", "ascii_lower", "ascii_upper", "utf8_slice_codeunits",
        "binary_slice", "add", "add_checked", "subtract", "subtract_checked", "multiply",
        "multiply_checked", "negate", "negate_checked", "abs", "abs_checked", "cast",
        "bit_wise_and", "bit_wise_or", "bit_wise_xor",
    }
)  # fmt: skip
# Bounds every literal a filter carries (patterns, value sets): the expression's text form.
FILTER_MAX_EXPRESSION_CHARS = 16_384
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')
_CALL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\(")
# Ordinary records (the first and one far on, in 2039): a filter must evaluate on them, or it
# would fail every fetch — ``offset * 2**62`` overflows on the second.
_SAMPLE_VALUES: dict[str, list[Any]] = {
    "offset": [0, 2**40],
    "timestamp": [0, 2**41],
    "key": [b"", b"k" * 16],
    "value": [b"", b"v" * 100],
}


def header_column(headers: pa.ChunkedArray | pa.Array, name: str) -> pa.Array:
    """The value of the first header called ``name`` per record (null where there is none)."""
    if isinstance(headers, pa.ChunkedArray):
        headers = headers.combine_chunks() if headers.num_chunks else pa.array([], headers.type)
    rows = len(headers)
    flat = pc.list_flatten(headers)
    if len(flat) == 0:
        return pa.nulls(rows, pa.binary())
    hits = pc.fill_null(pc.equal(flat.field("key"), name), False)
    if not pc.any(hits).as_py():
        return pa.nulls(rows, pa.binary())
    parents = pc.list_parent_indices(headers).to_numpy()
    hit_mask = hits.to_numpy(zero_copy_only=False)
    hit_rows = parents[hit_mask]
    values = pc.filter(flat.field("value"), hits)
    positions = np.full(rows, -1, dtype=np.int64)
    # Reversed so the first header of a name wins when a record repeats it.
    positions[hit_rows[::-1]] = np.arange(len(hit_rows) - 1, -1, -1)
    return pc.take(values, pa.array(positions, mask=positions < 0))


@dataclass(frozen=True)
class RecordFilter:
    """A checked filter: the expression, the fields it reads and how it was written.

    Build one with ``RecordFilter.of(expression)`` (which checks it against the filter view) or
    ``ray_broker.filter_syntax.parse(text)``; both raise ``InvalidFilter`` for a bad filter.
    """

    expression: pc.Expression
    fields: tuple[str, ...]
    text: str = ""

    @classmethod
    def of(cls, expression: pc.Expression, text: str = "") -> RecordFilter:
        """Check ``expression`` against the filter view and learn which fields it reads.

        Raises:
            InvalidFilter: not an expression, an unknown field, types that do not compare, or a
                result that is not boolean.
        """
        if not isinstance(expression, pc.Expression):
            raise InvalidFilter(
                f"a filter is a pyarrow.compute.Expression or a filter string, "
                f"got {type(expression).__name__}",
                filter=repr(expression)[:200],
            )
        try:
            rendered = str(expression)
        except RecursionError:
            raise InvalidFilter("a filter nested too deeply", filter=text[:200]) from None
        shown = text or rendered
        _check_calls(rendered, shown)
        names: list[str] = []
        for _attempt in range(FILTER_MAX_FIELDS + 1):
            try:
                _view_schema(names).empty_table().filter(expression)
            except pa.ArrowInvalid as exc:
                missing = _MISSING_FIELD.search(str(exc))
                if missing is None:
                    raise InvalidFilter(f"filter {shown!r}: {exc}", filter=shown) from None
                name = missing.group(1)
                if name not in BASE_FIELDS and not (
                    name.startswith(HEADER_PREFIX) and len(name) > len(HEADER_PREFIX)
                ):
                    raise InvalidFilter(
                        f"filter {shown!r} names the unknown field {name!r}; fields are "
                        f"{', '.join(BASE_FIELDS)} and headers.<name>",
                        filter=shown,
                    ) from None
                if name in names:  # the view has it: this is some other binding failure
                    raise InvalidFilter(f"filter {shown!r}: {exc}", filter=shown) from None
                names.append(name)
                continue
            except (pa.ArrowException, TypeError, ValueError, RecursionError) as exc:
                raise InvalidFilter(
                    f"filter {shown!r} does not type-check: {exc}", filter=shown
                ) from None
            _check_on_a_sample(expression, names, shown)
            return cls(expression, tuple(names), text or rendered)
        raise InvalidFilter(
            f"filter {shown!r} names more than {FILTER_MAX_FIELDS} fields", filter=shown
        )

    @property
    def headers(self) -> tuple[str, ...]:
        return tuple(n[len(HEADER_PREFIX) :] for n in self.fields if n.startswith(HEADER_PREFIX))

    @property
    def columns(self) -> list[str]:
        """The record columns the filter reads (``headers`` for any header field), plus
        ``offset``: what a Parquet read must decode to evaluate it."""
        needed = {"offset"}
        for name in self.fields:
            needed.add("headers" if name.startswith(HEADER_PREFIX) else name)
        return sorted(needed)

    @property
    def prunes_row_groups(self) -> bool:
        """Whether Parquet row-group statistics can rule row groups out: only for filters
        over stored columns (a header's value has no statistics of its own)."""
        return not self.headers

    def view(self, table: pa.Table) -> pa.Table:
        """``table`` with the header fields the filter reads added as columns."""
        for name in self.headers:
            table = table.append_column(
                HEADER_PREFIX + name, header_column(table.column("headers"), name)
            )
        return table

    def mask(self, table: pa.Table) -> np.ndarray:
        """Row positions of ``table`` that match (``table`` has at least ``columns``)."""
        view = self.view(table).append_column(
            "__row", pa.array(np.arange(table.num_rows, dtype=np.int64))
        )
        return view.filter(self.expression).column("__row").to_numpy()

    def apply(self, table: pa.Table) -> pa.Table:
        """The rows of ``table`` that match, in order, with ``table``'s columns."""
        if table.num_rows == 0:
            return table
        if not self.headers:
            return table.filter(self.expression)
        return self.view(table).filter(self.expression).select(table.column_names)

    def __reduce__(self) -> tuple[Any, ...]:
        return RecordFilter, (self.expression, self.fields, self.text)


def _check_calls(rendered: str, shown: str) -> None:
    """Raises InvalidFilter for a filter too long or calling a function not allowed."""
    if len(rendered) > FILTER_MAX_EXPRESSION_CHARS:
        raise InvalidFilter(
            f"a filter expression is at most {FILTER_MAX_EXPRESSION_CHARS} characters as text, "
            f"this one {len(rendered)}",
            filter=shown[:200],
        )
    called = set(_CALL.findall(_QUOTED.sub('""', rendered)))
    refused = sorted(called - ALLOWED_FUNCTIONS)
    if refused:
        raise InvalidFilter(
            f"filter {shown[:200]!r} calls {', '.join(refused)}, which filters may not use "
            "(allowed: comparisons, boolean logic, is_in, null tests, LIKE and substring "
            "matching, lengths, add/subtract/multiply, cast)",
            filter=shown[:200],
        )


def _check_on_a_sample(expression: pc.Expression, names: list[str], shown: str) -> None:
    """Raises InvalidFilter when ``expression`` fails on one ordinary record: a filter that
    type-checks on an empty table but divides by zero or overflows fails every fetch."""
    sample = pa.table(
        {
            n: pa.array(_SAMPLE_VALUES.get(n, [b"", b"h"]), BASE_FIELDS.get(n, pa.binary()))
            for n in names
        }
        or {"__nothing": pa.nulls(2)}
    )
    try:
        sample.filter(expression)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise InvalidFilter(
            f"filter {shown[:200]!r} fails on an ordinary record: {exc}", filter=shown[:200]
        ) from None


def _view_schema(names: list[str]) -> pa.Schema:
    columns = [pa.field(n, BASE_FIELDS.get(n, pa.binary())) for n in names]
    return pa.schema(columns or [pa.field("__nothing", pa.null())])


def checked_filter(value: Any) -> RecordFilter | None:
    """What a partition accepts as a fetch's filter: None or a ``RecordFilter``, re-checked
    (a caller that bypasses the client may send anything).

    Raises:
        InvalidFilter
    """
    if value is None:
        return None
    if not isinstance(value, RecordFilter):
        raise InvalidFilter(
            f"a fetch filter is a RecordFilter, got {type(value).__name__}",
            filter=repr(value)[:200],
        )
    key = (value.text, str(value.expression), value.fields)
    if key in _CHECKED:
        return value
    checked = RecordFilter.of(value.expression, value.text)
    if len(_CHECKED) >= CHECKED_FILTERS_KEPT:
        _CHECKED.pop(next(iter(_CHECKED)))
    _CHECKED[(checked.text, str(checked.expression), checked.fields)] = None
    return checked


# Filters a partition has checked (each fetch carries its consumer's filter; checking one costs
# ~0.6 ms). Keyed by the expression's full text, so an altered filter is checked again.
CHECKED_FILTERS_KEPT = 256
_CHECKED: dict[tuple[str, str, tuple[str, ...]], None] = {}
