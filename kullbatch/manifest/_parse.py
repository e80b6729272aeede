"""JSON text -> a document, with limits: nothing a manifest or a request body holds can crash
the parser or make it work without end.

- Nesting deeper than `MAX_DEPTH` is refused before `json` recurses into it (5,000 levels would
  otherwise end in RecursionError).
- A number of more than `MAX_DIGITS` digits is refused (Python refuses to convert one at 4,300
  digits with a ValueError, far from the parser; a long one costs quadratic time).

Both are a ManifestError naming the field where they stand (``images[0].id``).
"""

from __future__ import annotations

import json
import re
from typing import NoReturn

from kullbatch.manifest._base import ManifestError, clip

MAX_DEPTH = 64
MAX_DIGITS = 100
_SHOWN_LEVELS = 8  # a field too deep is named by its first levels

# strings (whose brackets do not count) and brackets, in document order
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"(\s*:)?|[\[\]{},]')
_STRINGS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')  # unrolled: a run, not a match per character
_BRACKETS = re.compile(r"[\[\]{}]")


class _HugeNumber:
    """A number too long to convert, found later by its place in the document."""

    def __init__(self, digits: int) -> None:
        self.digits = digits


def parse_json(text: str, name: str) -> object:
    """The document in `text`, or a ManifestError naming `name` and the place of the problem."""
    if _deepest(_STRINGS.sub("", text)) > MAX_DEPTH:
        _fail(name, _too_deep_at(text), f"nested deeper than {MAX_DEPTH} levels")
    huge: list[_HugeNumber] = []

    def integer(digits: str) -> int | _HugeNumber:
        if len(digits.lstrip("-")) > MAX_DIGITS:
            number = _HugeNumber(len(digits.lstrip("-")))
            huge.append(number)
            return number
        return int(digits)

    try:
        document: object = json.loads(text, parse_int=integer)
    except json.JSONDecodeError as exc:
        _fail(name, f"line {exc.lineno}, column {exc.colno}", f"malformed JSON: {exc.msg}")
    except (ValueError, RecursionError) as exc:  # a float beyond reach, or the like
        _fail(name, None, clip(f"cannot be read as JSON: {exc}"))
    found = _find_huge(document, "") if huge else None
    if found is not None:
        place, number = found
        problem = f"a number of {number.digits} digits; at most {MAX_DIGITS} are accepted"
        _fail(name, clip(place or "top level"), problem)
    return document


def _fail(name: str, location: str | None, problem: str) -> NoReturn:
    raise ManifestError(name, location, problem)


def _deepest(skeleton: str) -> int:
    depth = deepest = 0
    for char in _BRACKETS.findall(skeleton):
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _too_deep_at(text: str) -> str:
    """The field where the nesting passes the limit, as ``images[0].metadata.a``."""
    frames: list[list[str | int]] = []  # per open container: its current key or index
    for match in _TOKENS.finditer(text):
        piece = match.group(0)
        if match.group(1) is not None:  # an object's key
            if frames and isinstance(frames[-1][0], str):
                frames[-1][0] = piece[1 : piece.rindex('"')]
        elif piece in {"[", "{"}:
            if len(frames) >= MAX_DEPTH:
                break
            frames.append([0 if piece == "[" else ""])
        elif piece in {"]", "}"}:
            if frames:
                frames.pop()
        elif piece == "," and frames and isinstance(frames[-1][0], int):
            frames[-1][0] += 1
    return _dotted([frame[0] for frame in frames]) or "top level"


def _dotted(path: list[str | int]) -> str:
    text = ""
    for part in path[:_SHOWN_LEVELS]:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text + ("…" if len(path) > _SHOWN_LEVELS else "")


def _find_huge(value: object, place: str) -> tuple[str, _HugeNumber] | None:
    """Where the first number too long stands (nesting is already bounded)."""
    if isinstance(value, _HugeNumber):
        return place, value
    children: list[tuple[str, object]] = []
    if isinstance(value, dict):
        children = [(f"{place}.{key}" if place else str(key), item) for key, item in value.items()]
    elif isinstance(value, list):
        children = [(f"{place}[{index}]", item) for index, item in enumerate(value)]
    for child_place, child in children:
        found = _find_huge(child, child_place)
        if found is not None:
            return found
    return None
