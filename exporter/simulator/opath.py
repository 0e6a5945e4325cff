"""A small OPATH filter language for ``Get-Queue -Filter`` (and later cmdlets).

Supported: comparisons ``Prop -op value`` with ``-eq -ne -gt -ge -lt -le -like -notlike``, joined by
``-and``, parentheses, and ``-not``. Values are quoted strings ('x' or "x"), numbers, ``$true``,
``$false``, ``$null`` or bare words. Get-Queue documents ``-and`` as the only combinator, so ``-or``
is rejected like Exchange rejects invalid syntax. Strings compare case-insensitively, numbers
numerically, ``-like`` uses PowerShell wildcards (``*`` and ``?``).
"""

from __future__ import annotations

import datetime
import fnmatch
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

__all__ = ["FilterError", "Predicate", "compile_filter"]

Getter = Callable[[str], Any]
Predicate = Callable[[Getter], bool]

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<lparen>\() | (?P<rparen>\)) |
        (?P<op>-(?:eq|ne|gt|ge|lt|le|like|notlike|and|or|not)\b) |
        '(?P<sq>(?:[^']|'')*)' | "(?P<dq>(?:[^"]|"")*)" |
        (?P<var>\$(?:true|false|null)\b) |
        (?P<word>[^\s()'"]+)
    )""",
    re.VERBOSE | re.IGNORECASE,
)
_COMPARISONS = ("-eq", "-ne", "-gt", "-ge", "-lt", "-le", "-like", "-notlike")


class FilterError(ValueError):
    """The filter text is not valid OPATH for this cmdlet; ``position`` is a 0-based offset."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(message)
        self.position = position


@dataclass
class _Token:
    kind: str
    text: str
    value: Any
    pos: int


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise FilterError("Invalid filter syntax.", pos)
        start = match.start(match.lastgroup or 0)
        kind = match.lastgroup or ""
        raw = match.group(kind)
        if kind == "sq":
            tokens.append(_Token("value", raw, raw.replace("''", "'"), start - 1))
        elif kind == "dq":
            tokens.append(_Token("value", raw, raw.replace('""', '"'), start - 1))
        elif kind == "var":
            tokens.append(_Token("value", raw, {"$true": True, "$false": False, "$null": None}[raw.lower()], start))
        elif kind == "op":
            tokens.append(_Token("op", raw.lower(), None, start))
        else:
            tokens.append(_Token(kind, raw, raw, start))
        pos = match.end()
    return tokens


def _coerce_pair(actual: Any, expected: Any) -> tuple[Any, Any]:
    """Make the two sides comparable: numbers, datetimes or case-folded text."""
    if actual is None or expected is None:
        return actual, expected
    if isinstance(actual, bool):
        return actual, str(expected).lower() in ("true", "1", "$true")
    if isinstance(actual, int | float):
        try:
            return float(actual), float(expected)
        except (TypeError, ValueError):
            return str(actual).casefold(), str(expected).casefold()
    if isinstance(actual, datetime.datetime):
        try:
            parsed = datetime.datetime.fromisoformat(str(expected))
        except ValueError:
            return str(actual).casefold(), str(expected).casefold()
        if parsed.tzinfo is None and actual.tzinfo is not None:
            parsed = parsed.replace(tzinfo=actual.tzinfo)
        return actual, parsed
    return str(actual).casefold(), str(expected).casefold()


def _compare(op: str, actual: Any, expected: Any) -> bool:
    if op in ("-like", "-notlike"):
        text = "" if actual is None else str(actual)
        hit = fnmatch.fnmatchcase(text.casefold(), str(expected).casefold().replace("[", "[[]"))
        return hit if op == "-like" else not hit
    left, right = _coerce_pair(actual, expected)
    if op == "-eq":
        return bool(left == right)
    if op == "-ne":
        return bool(left != right)
    if left is None or right is None:
        return False
    try:
        if op == "-gt":
            return bool(left > right)
        if op == "-ge":
            return bool(left >= right)
        if op == "-lt":
            return bool(left < right)
        return bool(left <= right)
    except TypeError:
        return False


class _Parser:
    def __init__(self, text: str, properties: Collection[str]) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0
        self.properties = {p.lower(): p for p in properties}

    def peek(self) -> _Token | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> _Token:
        token = self.peek()
        if token is None:
            raise FilterError("Invalid filter syntax.", len(self.text))
        self.i += 1
        return token

    def parse(self) -> Predicate:
        predicate = self.expression()
        token = self.peek()
        if token is not None:
            raise FilterError("Invalid filter syntax.", token.pos)
        return predicate

    def expression(self) -> Predicate:
        terms = [self.term()]
        while (token := self.peek()) is not None and token.kind == "op" and token.text in ("-and", "-or"):
            if token.text == "-or":
                raise FilterError("Invalid filter syntax.", token.pos)
            self.take()
            terms.append(self.term())
        if len(terms) == 1:
            return terms[0]
        return lambda get: all(term(get) for term in terms)

    def term(self) -> Predicate:
        token = self.take()
        if token.kind == "lparen":
            inner = self.expression()
            closing = self.take()
            if closing.kind != "rparen":
                raise FilterError("Invalid filter syntax.", closing.pos)
            return inner
        if token.kind == "op" and token.text == "-not":
            inner_term = self.term()
            return lambda get: not inner_term(get)
        if token.kind != "word":
            raise FilterError("Invalid filter syntax.", token.pos)
        name = self.properties.get(token.text.lower())
        if name is None:
            raise FilterError(f'The property "{token.text}" is not a filterable property.', token.pos)
        op = self.take()
        if op.kind != "op" or op.text not in _COMPARISONS:
            raise FilterError("Invalid filter syntax.", op.pos)
        value_token = self.take()
        if value_token.kind not in ("value", "word"):
            raise FilterError("Invalid filter syntax.", value_token.pos)
        expected = value_token.value
        operator = op.text
        return lambda get: _compare(operator, get(name), expected)


def compile_filter(text: str, properties: Collection[str]) -> Predicate:
    """Compile ``text`` to a predicate over a property getter; raises :class:`FilterError`."""
    if not text.strip():
        raise FilterError("Invalid filter syntax.", 0)
    return _Parser(text, properties).parse()
