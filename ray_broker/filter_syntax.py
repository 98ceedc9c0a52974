"""The SQL-like filter language, parsed by a grammar (lark) into a ``pyarrow.compute`` expression.

Why a language next to pyarrow expressions: the CLI and non-Python users cannot build an
``Expression``, and RocketMQ/JMS users know selectors written like SQL ``WHERE`` clauses::

    headers.type = 'order' AND key LIKE 'vip%'
    timestamp >= 1767225600000 AND NOT value IS NULL
    headers['content-type'] IN ('json', 'avro') OR offset BETWEEN 10 AND 20

Fields are those of ``storage/record_filter.py``'s filter view (``offset``, ``timestamp``,
``key``, ``value``, ``headers.<name>`` or ``headers['<name>']``). Keywords are case-insensitive;
strings are single-quoted (``''`` is a quote); numbers are integers. Operators: ``= == != <>
< <= > >=``, ``[NOT] LIKE`` (``%`` any run, ``_`` one character), ``[NOT] IN (…)``,
``[NOT] BETWEEN … AND …``, ``IS [NOT] NULL``, ``AND``, ``OR``, ``NOT`` and parentheses.

Every error — a syntax error, an unknown field, a string compared with a timestamp — raises
``InvalidFilter`` naming the 1-based column where it is. Nothing is ever ``eval``-ed.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, VisitError

from ray_broker.errors import InvalidFilter
from ray_broker.storage.record_filter import BASE_FIELDS, HEADER_PREFIX, RecordFilter

# A filter string longer than this is refused before parsing (it travels with every fetch).
FILTER_MAX_CHARS = 4096

_GRAMMAR = r"""
?start: disjunction
?disjunction: conjunction (_OR conjunction)*
?conjunction: negation (_AND negation)*
?negation: NOT negation -> not_
         | predicate
?predicate: operand COMPARISON operand          -> compare
          | operand NOT? _LIKE STRING            -> like
          | operand NOT? _IN "(" literal ("," literal)* ")" -> in_
          | operand NOT? _BETWEEN operand _AND operand -> between
          | operand _IS NOT? _NULL               -> is_null
          | "(" disjunction ")"
?operand: field | literal
field: BASE_FIELD                               -> base_field
     | _HEADERS "." HEADER_NAME                  -> header_field
     | _HEADERS "[" STRING "]"                   -> header_field
?literal: STRING                                -> string
        | SIGNED_INT                            -> number
        | TRUE                                  -> true
        | FALSE                                 -> false

COMPARISON: "==" | "=" | "!=" | "<>" | "<=" | ">=" | "<" | ">"
BASE_FIELD.2: /(offset|timestamp|key|value)\b/i
HEADER_NAME: /[A-Za-z_][A-Za-z0-9_\-]*/
STRING: /'(?:[^']|'')*'/
NOT.2: /not\b/i
_OR.2: /or\b/i
_AND.2: /and\b/i
_LIKE.2: /like\b/i
_IN.2: /in\b/i
_BETWEEN.2: /between\b/i
_IS.2: /is\b/i
_NULL.2: /null\b/i
TRUE.2: /true\b/i
FALSE.2: /false\b/i
_HEADERS.2: /headers\b/i

%import common.SIGNED_INT
%import common.WS
%ignore WS
"""


_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FIELDS_HINT = " (fields are offset, timestamp, key, value and headers.<name>)"


@functools.cache
def _parser() -> Lark:
    return Lark(_GRAMMAR, parser="lalr", propagate_positions=True, maybe_placeholders=False)


@dataclass(frozen=True)
class _Typed:
    """An operand while it is checked: its expression, its kind and where it was written."""

    value: Any  # a pc.Expression for fields, a Python value for literals
    kind: str  # "int", "binary", "string", "bool"
    column: int
    is_field: bool = False
    text: str = ""


class _Problem(Exception):
    def __init__(self, message: str, column: int) -> None:
        super().__init__(message)
        self.column = column


def _comparable(left: _Typed, right: _Typed) -> bool:
    textual = {"binary", "string"}
    return left.kind == right.kind or {left.kind, right.kind} <= textual


def _as_argument(operand: _Typed, other: _Typed) -> Any:
    """An operand as an Arrow argument typed for comparing with ``other``."""
    if operand.is_field:
        return operand.value
    if operand.kind == "string" and other.kind == "binary":
        return pa.scalar(operand.value.encode(), pa.binary())
    return pa.scalar(operand.value)


_OPERATORS = {
    "=": pc.equal,
    "==": pc.equal,
    "!=": pc.not_equal,
    "<>": pc.not_equal,
    "<": pc.less,
    "<=": pc.less_equal,
    ">": pc.greater,
    ">=": pc.greater_equal,
}


@v_args(inline=True)
class _ToExpression(Transformer):  # type: ignore[misc]
    def base_field(self, token: Token) -> _Typed:
        name = str(token).lower()
        kind = "int" if BASE_FIELDS[name] == pa.int64() else "binary"
        return _Typed(pc.field(name), kind, token.column, True, name)

    def header_field(self, token: Token) -> _Typed:
        name = _unquote(token) if token.type == "STRING" else str(token)
        if not name:
            raise _Problem("a header name is not empty", token.column)
        return _Typed(pc.field(HEADER_PREFIX + name), "binary", token.column, True, name)

    def string(self, token: Token) -> _Typed:
        return _Typed(_unquote(token), "string", token.column)

    def number(self, token: Token) -> _Typed:
        value = int(token)
        if not -(2**63) <= value < 2**63:
            raise _Problem(f"{token} does not fit in 64 bits", token.column)
        return _Typed(value, "int", token.column)

    def true(self, token: Token) -> _Typed:
        return _Typed(True, "bool", token.column)

    def false(self, token: Token) -> _Typed:
        return _Typed(False, "bool", token.column)

    def compare(self, left: _Typed, operator: Token, right: _Typed) -> pc.Expression:
        if not (left.is_field or right.is_field):
            raise _Problem("a comparison needs a field on one side", left.column)
        if not _comparable(left, right):
            culprit = right if left.is_field else left
            raise _Problem(
                f"cannot compare {left.kind} with {right.kind} "
                f"({'field ' + left.text if left.is_field else 'a value'} "
                f"{operator} {'field ' + right.text if right.is_field else 'a value'})",
                culprit.column,
            )
        function = _OPERATORS[str(operator)]
        return function(_as_argument(left, right), _as_argument(right, left))

    def like(self, operand: _Typed, *rest: Token) -> pc.Expression:
        negated = len(rest) == 2
        pattern = rest[-1]
        _need_field(operand, "LIKE")
        if operand.kind != "binary":
            raise _Problem(
                f"LIKE needs a text field, {operand.text} is {operand.kind}", operand.column
            )
        expression = pc.match_like(operand.value, _unquote(pattern))
        return ~expression if negated else expression

    def in_(self, operand: _Typed, *rest: Any) -> pc.Expression:
        negated = isinstance(rest[0], Token) and rest[0].type == "NOT"
        values = list(rest[1:] if negated else rest)
        _need_field(operand, "IN")
        for value in values:
            if not _comparable(operand, value):
                raise _Problem(
                    f"{operand.text} is {operand.kind}, this is {value.kind}", value.column
                )
        if operand.kind == "binary":
            items = pa.array([str(v.value).encode() for v in values], pa.binary())
        else:
            items = pa.array(
                [v.value for v in values], pa.int64() if operand.kind == "int" else None
            )
        # SQL's three-valued logic: a missing value is in no list and outside none of them.
        found = pc.is_in(operand.value, value_set=items)
        expression = pc.if_else(operand.value.is_valid(), found, pa.scalar(None, pa.bool_()))
        return ~expression if negated else expression

    def between(self, operand: _Typed, *rest: Any) -> pc.Expression:
        negated = isinstance(rest[0], Token) and rest[0].type == "NOT"
        low, high = rest[1:] if negated else rest
        _need_field(operand, "BETWEEN")
        for bound in (low, high):
            if not _comparable(operand, bound):
                raise _Problem(
                    f"{operand.text} is {operand.kind}, this is {bound.kind}", bound.column
                )
        expression = pc.greater_equal(operand.value, _as_argument(low, operand)) & pc.less_equal(
            operand.value, _as_argument(high, operand)
        )
        return ~expression if negated else expression

    def is_null(self, operand: _Typed, *rest: Token) -> pc.Expression:
        _need_field(operand, "IS NULL")
        expression = operand.value.is_null()
        return ~expression if rest else expression

    def not_(self, _keyword: Token, operand: Any) -> pc.Expression:
        return ~operand

    def conjunction(self, *parts: Any) -> pc.Expression:
        return functools.reduce(pc.and_kleene, parts)

    def disjunction(self, *parts: Any) -> pc.Expression:
        return functools.reduce(pc.or_kleene, parts)


def _need_field(operand: _Typed, what: str) -> None:
    if not operand.is_field:
        raise _Problem(f"{what} applies to a field, not a value", operand.column)


def _unquote(token: Token | str) -> str:
    return str(token)[1:-1].replace("''", "'")


def parse(text: str) -> RecordFilter:
    """The filter ``text`` as a checked ``RecordFilter``.

    Raises:
        InvalidFilter: with ``position`` the 1-based column of the problem.
    """
    if not isinstance(text, str):
        raise InvalidFilter(f"a filter string is a str, got {type(text).__name__}")
    if len(text) > FILTER_MAX_CHARS:
        raise InvalidFilter(
            f"a filter is at most {FILTER_MAX_CHARS} characters, this one {len(text)}",
            filter=text[:200],
            position=FILTER_MAX_CHARS + 1,
        )
    if "\n" in text or "\r" in text:
        text = " ".join(text.split())  # positions are columns of one line
    try:
        tree = _parser().parse(text)
        result = _ToExpression().transform(tree)
    except VisitError as exc:
        problem = exc.orig_exc
        if isinstance(problem, _Problem):
            raise _invalid(text, str(problem), problem.column) from None
        # A literal Python cannot turn into a value (a lone surrogate cannot be UTF-8).
        printable = text[:200].encode("utf-8", "backslashreplace").decode("utf-8")
        raise InvalidFilter(
            f"bad filter: {type(problem).__name__}: {problem}", filter=printable
        ) from None
    except RecursionError:  # "NOT NOT NOT ..." deeper than Python's stack
        raise InvalidFilter("a filter nested too deeply", filter=text[:200]) from None
    except UnexpectedEOF:
        raise _invalid(text, "the filter ends too early", len(text) + 1) from None
    except UnexpectedCharacters as exc:
        word = _WORD.match(text, exc.pos_in_stream)
        found = word.group(0) if word else text[exc.pos_in_stream]
        raise _invalid(text, f"unexpected {found!r}{_FIELDS_HINT}", exc.column) from None
    except UnexpectedInput as exc:
        token = getattr(exc, "token", None)
        if token is None or token.type == "$END":
            raise _invalid(text, "the filter ends too early", len(text) + 1) from None
        hint = _FIELDS_HINT if _WORD.fullmatch(str(token)) else ""
        raise _invalid(text, f"unexpected {str(token)!r}{hint}", exc.column) from None
    return RecordFilter.of(result, text)


def _invalid(text: str, message: str, column: int) -> InvalidFilter:
    column = max(int(column or 1), 1)
    pointer = " " * (column - 1) + "^"
    return InvalidFilter(
        f"bad filter at column {column}: {message}\n  {text}\n  {pointer}",
        filter=text,
        position=column,
    )


def compile_filter(spec: Any) -> RecordFilter | None:
    """A consumer's ``filter=`` option as a checked filter: None, a filter string, a
    ``pyarrow.compute.Expression`` or an already compiled ``RecordFilter``.

    Raises:
        InvalidFilter
    """
    if spec is None:
        return None
    if isinstance(spec, RecordFilter):
        return RecordFilter.of(spec.expression, spec.text)
    if isinstance(spec, str):
        return parse(spec)
    return RecordFilter.of(spec)
