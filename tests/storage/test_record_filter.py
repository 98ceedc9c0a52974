"""Server-side filters: the text form means what SQL means, and a filtered read of a log —
in-memory segments and Parquet segments with pushdown — returns exactly what filtering the
unfiltered read on the client returns, while moving past every record it examined."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ray_broker.errors import InvalidFilter
from ray_broker.filter_syntax import compile_filter, parse
from ray_broker.storage.record_filter import RecordFilter, header_column
from ray_broker.storage.schema import HEADER_TYPE

# --- a model of the language: each generated filter is text plus a Python predicate -----------


@dataclass
class Row:
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]

    def field(self, name: str) -> Any:
        if name.startswith("headers."):
            wanted = name[len("headers.") :]
            return next((v for k, v in self.headers if k == wanted), None)
        return getattr(self, name)


def _and(a: Any, b: Any) -> Any:
    if a is False or b is False:
        return False
    return None if a is None or b is None else True


def _or(a: Any, b: Any) -> Any:
    if a is True or b is True:
        return True
    return None if a is None or b is None else False


def _not(a: Any) -> Any:
    return None if a is None else not a


def _like(value: bytes | None, pattern: str) -> Any:
    if value is None:
        return None
    regex = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.fullmatch(regex.encode(), value, re.DOTALL) is not None


TEXT_FIELDS = ["key", "value", "headers.type", "headers.region"]
INT_FIELDS = ["offset", "timestamp"]
WORDS = ["a", "ab", "b", "order", "vip1", "vip2", "x"]
COMPARISONS = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    ">=": lambda a, b: a >= b,
}


def _null_safe(op: Any) -> Any:
    return lambda a, b: None if a is None or b is None else op(a, b)


@st.composite
def predicates(draw: Any) -> tuple[str, Any]:
    kind = draw(st.sampled_from(["cmp_text", "cmp_int", "like", "in", "between", "null"]))
    if kind == "cmp_text":
        name, word = draw(st.sampled_from(TEXT_FIELDS)), draw(st.sampled_from(WORDS))
        op = draw(st.sampled_from(list(COMPARISONS)))
        fn = _null_safe(COMPARISONS[op])
        return f"{name} {op} '{word}'", lambda r: fn(r.field(name), word.encode())
    if kind == "cmp_int":
        name, number = draw(st.sampled_from(INT_FIELDS)), draw(st.integers(0, 60))
        op = draw(st.sampled_from(list(COMPARISONS)))
        fn = COMPARISONS[op]
        return f"{name} {op} {number}", lambda r: fn(r.field(name), number)
    if kind == "like":
        name = draw(st.sampled_from(TEXT_FIELDS))
        pattern = draw(st.sampled_from(["vip%", "%b", "a_", "%", "o%r"]))
        negated = draw(st.booleans())
        text = f"{name} {'NOT ' if negated else ''}LIKE '{pattern}'"
        return text, lambda r: (_not if negated else (lambda v: v))(_like(r.field(name), pattern))
    if kind == "in":
        name = draw(st.sampled_from(TEXT_FIELDS))
        words = draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=3))
        negated = draw(st.booleans())
        listed = ", ".join(f"'{w}'" for w in words)

        def member(r: Row) -> Any:
            value = r.field(name)
            return None if value is None else value in {w.encode() for w in words}

        text = f"{name} {'NOT ' if negated else ''}IN ({listed})"
        return text, lambda r: _not(member(r)) if negated else member(r)
    if kind == "between":
        low = draw(st.integers(0, 40))
        high = low + draw(st.integers(0, 30))
        return f"offset BETWEEN {low} AND {high}", lambda r: low <= r.offset <= high
    name = draw(st.sampled_from(TEXT_FIELDS))
    negated = draw(st.booleans())
    text = f"{name} IS {'NOT ' if negated else ''}NULL"
    return text, lambda r: (r.field(name) is not None) if negated else (r.field(name) is None)


def conditions() -> st.SearchStrategy[tuple[str, Any]]:
    def extend(inner: st.SearchStrategy[tuple[str, Any]]) -> st.SearchStrategy[tuple[str, Any]]:
        def combine(parts: tuple[tuple[str, Any], str, tuple[str, Any]]) -> tuple[str, Any]:
            (lt, lf), op, (rt, rf) = parts
            join = _and if op == "AND" else _or
            return f"({lt}) {op} ({rt})", lambda r: join(lf(r), rf(r))

        def negate(part: tuple[str, Any]) -> tuple[str, Any]:
            text, fn = part
            return f"NOT ({text})", lambda r: _not(fn(r))

        return st.one_of(
            st.tuples(inner, st.sampled_from(["AND", "OR"]), inner).map(combine),
            inner.map(negate),
        )

    return st.recursive(predicates(), extend, max_leaves=5)


rows_strategy = st.lists(
    st.builds(
        lambda key, value, headers, ts: (key, value, headers, ts),
        st.one_of(st.none(), st.sampled_from([w.encode() for w in WORDS])),
        st.one_of(st.none(), st.sampled_from([w.encode() for w in WORDS])),
        st.lists(
            st.tuples(st.sampled_from(["type", "region", "other"]), st.sampled_from(WORDS)),
            max_size=3,
        ).map(lambda hs: [(k, v.encode()) for k, v in hs]),
        st.integers(0, 60),
    ),
    min_size=1,
    max_size=60,
)


def _records(rows: list[tuple[Any, ...]]) -> pa.Table:
    return pa.table(
        {
            "key": pa.array([r[0] for r in rows], pa.binary()),
            "value": pa.array([r[1] for r in rows], pa.binary()),
            "headers": pa.array(
                [[{"key": k, "value": v} for k, v in r[2]] for r in rows], HEADER_TYPE
            ),
            "timestamp": pa.array([r[3] for r in rows], pa.int64()),
        }
    )


def _model_rows(table: pa.Table) -> list[Row]:
    return [
        Row(
            r["offset"],
            r["timestamp"],
            r["key"],
            r["value"],
            [(h["key"], h["value"]) for h in r["headers"] or []],
        )
        for r in table.to_pylist()
    ]


def _filtered_read_all(log: Any, flt: RecordFilter, **limits: int) -> list[int]:
    """Read the whole log through the filter, as a consumer would, fetch after fetch."""
    offsets: list[int] = []
    position = log.log_start_offset
    while position < log.log_end_offset:
        table, next_offset = log.read_filtered(position, log.log_end_offset, flt, **limits)
        assert next_offset > position, "a filtered read must make progress"
        got = table.column("offset").to_pylist()
        assert all(position <= o < next_offset for o in got)
        offsets.extend(got)
        position = next_offset
    return offsets


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=rows_strategy, condition=conditions(), seal=st.booleans(), data=st.data())
def test_filtered_reads_equal_a_client_side_filter(make_log, rows, condition, seal, data) -> None:
    text, predicate = condition
    log = make_log(**{"segment.bytes": 1024, "segment.row.group.records": 4})
    try:
        for start in range(0, len(rows), 7):
            log.append(_records(rows[start : start + 7]))
        if seal:
            log.roll()
            log.seal_pending()
        everything = log.read(0, 10_000)
        expected = [r.offset for r in _model_rows(everything) if predicate(r) is True]
        flt = parse(text)
        # The model and pyarrow agree on what the text means...
        assert flt.apply(everything).column("offset").to_pylist() == expected, text
        # ...and the pushed-down, step-by-step read returns the same, whatever the limits.
        limits = {
            "max_records": data.draw(st.integers(1, 20)),
            "max_examined": data.draw(st.integers(1, 50)),
        }
        assert _filtered_read_all(log, flt, **limits) == expected, (text, limits)
    finally:
        log.close()


def test_row_groups_ruled_out_by_statistics_are_not_read(make_log) -> None:
    log = make_log(**{"segment.row.group.records": 100})
    for start in range(0, 1000, 100):
        log.append(pa.table({"value": [b"v%d" % i for i in range(start, start + 100)]}))
    log.roll()
    log.seal_pending()
    segment = log._sealed[0]
    flt = parse("offset BETWEEN 450 AND 460")
    assert segment._row_groups_matching(flt) == frozenset({4})
    table, next_offset = log.read_filtered(0, log.log_end_offset, flt)
    assert table.column("offset").to_pylist() == list(range(450, 461))
    assert next_offset == 1000
    log.close()


def test_pyarrow_expressions_and_header_fields() -> None:
    table = pa.table(
        {
            "offset": [0, 1, 2],
            "key": pa.array([b"vip1", b"x", None]),
            "headers": [[{"key": "type", "value": b"order"}], [], [{"key": "t", "value": b"y"}]],
        }
    )
    flt = compile_filter(pc.field("headers.type") == b"order")
    assert flt.fields == ("headers.type",) and flt.columns == ["headers", "offset"]
    assert flt.apply(table).column("offset").to_pylist() == [0]
    assert header_column(table.column("headers"), "t").to_pylist() == [None, None, b"y"]
    assert compile_filter(pc.match_like(pc.field("key"), "vip%")).apply(table).num_rows == 1


@pytest.mark.parametrize(
    ("text", "position", "words"),
    [
        ("timestamp = 'yesterday'", 13, "cannot compare int with string"),
        ("key = 1", 7, "cannot compare binary with int"),
        ("colour = 'red'", 1, "unexpected 'colour'"),
        ("key = 'a' AND", 14, "ends too early"),
        ("key LIKE 5", 10, "unexpected '5'"),
        ("offset IN (1, 'x')", 15, "offset is int, this is string"),
        ("1 = 1", 1, "needs a field"),
        ("key = 'a' ; DROP TABLE x", 11, "unexpected ';'"),
        ("__import__('os')", 1, "unexpected"),
    ],
)
def test_bad_filter_text_names_the_position(text: str, position: int, words: str) -> None:
    with pytest.raises(InvalidFilter) as caught:
        parse(text)
    assert caught.value.position == position, str(caught.value)
    assert words in str(caught.value)
    assert caught.value.filter == text


@pytest.mark.parametrize(
    "bad",
    [
        pc.field("colour") == 1,
        pc.field("timestamp") == "x",
        pc.field("offset"),  # not a condition
        "x" * 5000,
        42,
    ],
)
def test_bad_filters_raise_invalid_filter(bad: Any) -> None:
    with pytest.raises(InvalidFilter):
        compile_filter(bad)


def test_a_filter_pickles_for_the_trip_to_the_partition() -> None:
    import pickle

    flt = parse("headers.type = 'order' AND key LIKE 'vip%'")
    again = pickle.loads(pickle.dumps(flt))
    assert again.text == flt.text and again.fields == flt.fields
    assert again.expression.equals(flt.expression)


@pytest.mark.parametrize(
    "expression",
    [
        pc.divide_checked(pc.field("offset"), 0) > 0,
        pc.binary_length(pc.binary_repeat(pc.field("value"), 20_000_000)) > 0,
        pc.multiply_checked(pc.field("offset"), 2**62) > 4,
    ],
    ids=["divide-by-zero", "binary-repeat", "overflow-on-a-later-offset"],
)
def test_a_filter_that_would_fail_every_fetch_is_refused_up_front(expression) -> None:
    with pytest.raises(InvalidFilter):
        RecordFilter.of(expression)


def test_allowed_functions_still_make_filters() -> None:
    made = RecordFilter.of(
        pc.and_kleene(
            pc.match_like(pc.field("value"), "%(order)%"),
            pc.is_in(pc.field("key"), value_set=pa.array([b"a(", b"b"])),
        )
    )
    assert set(made.fields) == {"value", "key"}


@pytest.mark.parametrize(
    "text", ["NOT " * 1000 + "offset = 1", "value = '\ud800'"], ids=["deep", "lone-surrogate"]
)
def test_filter_strings_that_break_the_parser_are_typed_refusals(text: str) -> None:
    from ray_broker.filter_syntax import parse

    with pytest.raises(InvalidFilter):
        parse(text)
