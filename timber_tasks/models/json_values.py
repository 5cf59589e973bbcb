"""Plain JSON data that every store keeps as given: no NaN, no NUL, valid Unicode, bounded nesting.

Jobs check their arguments with it at delay(); records check JSON columns and text with it
before a write, so a message that skipped delay() (the relay, a raw publish) is held to the
same rule. PostgreSQL refuses NUL in text and JSON has no NaN; SQLite would store either.
"""

from __future__ import annotations

import math
from typing import Any

MAX_DEPTH = 32  # nesting beyond this is no record; deeper JSON breaks recursive encoders and str()


def text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "contains a NUL character, which databases refuse in text"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone surrogate (not valid Unicode text)"
    return None


def value_problem(value: Any) -> tuple[list[str | int], str] | None:
    """(path inside value, what is wrong) for the first value that is not plain JSON data; None when all is."""
    stack: list[tuple[Any, list[str | int]]] = [(value, [])]
    while stack:
        item, path = stack.pop()
        if len(path) > MAX_DEPTH:
            return path[:MAX_DEPTH], f"nests deeper than {MAX_DEPTH} levels"
        if item is None or isinstance(item, bool | int):
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                return path, f"is {item!r}: JSON has no NaN or Infinity; send a finite number or null"
        elif isinstance(item, str):
            problem = text_problem(item)
            if problem:
                return path, problem
        elif isinstance(item, list | tuple):
            stack.extend((child, [*path, i]) for i, child in reversed(list(enumerate(item))))
        elif isinstance(item, dict):
            for key in item:
                if not isinstance(key, str):
                    return [*path, str(key)], f"has a {type(key).__name__} key; JSON object keys are strings"
                problem = text_problem(key)
                if problem:
                    return [*path, key], f"key {problem}"
            stack.extend((child, [*path, key]) for key, child in reversed(list(item.items())))
        else:
            return path, (f"is a {type(item).__name__}, not JSON data: send dates and times as ISO 8601 strings, "
                          "decimals as strings, sets as lists")
    return None


