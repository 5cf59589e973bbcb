"""Checks the small SQL expressions YAML may carry (check, where, computed) before they reach DDL.

YAML authors are trusted, but a typo or a stray ';' should be a load error naming the
model, not a half-applied migration. Every bare word must be a column of the model or a
known keyword or function.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

KEYWORDS = frozenset({
    "and", "or", "not", "in", "is", "null", "true", "false", "like", "ilike", "between",
    "case", "when", "then", "else", "end", "coalesce", "lower", "upper", "abs", "round",
    "length", "trim", "nullif", "cast", "as",
})

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>'(?:[^']|'')*')
      | (?P<comment>--|/\*|\*/)
      | (?P<number>\d+(?:\.\d+)?)
      | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<op><>|!=|<=|>=|\|\||[-+*/%=<>(),])
    )""",
    re.VERBOSE,
)


def check_expression(expression: str, columns: Iterable[str]) -> None:
    """Raise ValueError unless the expression uses only known columns, literals and operators."""
    known = set(columns)
    pos, depth = 0, 0
    text = expression.rstrip()
    if not text:
        raise ValueError("expression is empty")
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match:
            raise ValueError(f"cannot read expression {expression!r} at {text[pos:]!r}")
        word, op = match.group("word"), match.group("op")
        if match.group("comment"):  # a comment hides the rest from this check, not from the database
            raise ValueError(f"expression {expression!r} holds an SQL comment ({match.group('comment')!r}); "
                             "remove it")
        if word and word not in known and word.lower() not in KEYWORDS:
            raise ValueError(
                f"expression {expression!r} names {word!r}, which is not a column of this model"
            )
        if op == "(":
            depth += 1
        elif op == ")":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced ')' in expression {expression!r}")
        pos = match.end()
    if depth:
        raise ValueError(f"unbalanced '(' in expression {expression!r}")
