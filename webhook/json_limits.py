"""Parse JSON that will be stored and published again: finite numbers, bounded nesting.

Python's ``json`` reads ``NaN``, ``Infinity`` and ``-Infinity``, which are not JSON:
a document holding one cannot be published as JSON. Nor can one holding a number
too large for a double (``1e400``), which it reads as infinity. And a value nested a few
hundred levels deep parses, then makes a later step (marshmallow, the encoder,
the build) exceed Python's recursion limit; a few thousand levels exceed it while
parsing. Both are refused here, as ``ValueError`` subclasses, so that callers that
already turn "not JSON" into an answer handle them too.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable


class NonFiniteNumber(ValueError):
    """The text holds ``NaN``, ``Infinity`` or ``-Infinity``.

    ``constant`` is what the text holds and ``why`` says what is wrong with it,
    to be shown together: "NaN, which is not a JSON number".
    """

    why = "which is not a JSON number"

    def __init__(self, constant: str):
        super().__init__(f"{constant}, {self.why}")
        self.constant = constant


class NumberOutOfRange(NonFiniteNumber):
    """The text holds a number beyond a double's range (``1e400``), which reads as infinity."""

    why = "which is beyond the range of a double-precision number"
    # A number's text has no bound of its own: what is shown of it has.
    _SHOWN = 40

    def __init__(self, text: str):
        super().__init__(text if len(text) <= self._SHOWN else text[:self._SHOWN] + "...")


class JsonTooDeep(ValueError):
    """The text nests arrays and objects deeper than allowed."""


def _refuse_constant(constant: str):
    raise NonFiniteNumber(constant)


def _finite_float(text: str) -> float:
    # What json.loads would make of the text, unless that is infinity.
    value = float(text)
    if math.isinf(value):
        raise NumberOutOfRange(text)
    return value


def loads_finite(text: str | bytes | bytearray,
                 object_hook: Callable[[dict], object] | None = None) -> object:
    """Parse JSON refusing non-finite numbers; a RecursionError of the parser is JsonTooDeep.

    Refused: ``NaN``, ``Infinity`` and ``-Infinity`` (NonFiniteNumber), and a
    number that would read as infinity (NumberOutOfRange, a NonFiniteNumber).
    """
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float,
                          object_hook=object_hook)
    except RecursionError:
        # The C parser guards its recursion: this is a clean refusal, not a crash.
        raise JsonTooDeep("nested too deeply to parse") from None


def loads_bounded(text: str | bytes | bytearray, max_depth: int) -> object:
    """Parse JSON as ``loads_finite`` does, refusing nesting deeper than ``max_depth`` levels."""
    value = loads_finite(text)
    if depth_exceeds(value, max_depth):
        raise JsonTooDeep(f"nested deeper than {max_depth} levels")
    return value


def depth_exceeds(value: object, max_depth: int) -> bool:
    """Tell whether arrays and objects nest deeper than ``max_depth`` in ``value``.

    A scalar has depth 0, ``[]`` and ``{}`` depth 1. Walked with a stack, not
    recursion, so any depth the parser accepted can be measured.
    """
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > max_depth:
            return True
        stack.extend((child, depth + 1) for child in children
                     if isinstance(child, (dict, list)))
    return False
