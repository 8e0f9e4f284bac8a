"""Check documents against the IIIF Presentation 3 JSON schema kept in tests/schemas."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Mapping
from pathlib import Path

from jsonschema import Draft7Validator
from jsonschema.exceptions import ValidationError

SCHEMA = Path(__file__).parent / "schemas" / "iiif_3_0.schema.json"
SHOWN_ERRORS = 5


@functools.cache
def _validator() -> Draft7Validator:
    """Load and check the schema once per test session."""
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema, format_checker=Draft7Validator.FORMAT_CHECKER)


def _leaves(error: ValidationError) -> Iterator[ValidationError]:
    """Yield the innermost errors of the oneOf/anyOf branches the instance was meant for."""
    if not error.context:
        yield error
        return
    branches: dict[object, list[ValidationError]] = {}
    for child in error.context:
        branches.setdefault(child.relative_schema_path[0], []).append(child)
    # Classes are told apart by "type": a branch that rejects the instance's own
    # type was never the intended one, and its errors are noise.
    meant = [branch for branch in branches.values() if not any(map(_rejects_type, branch))]
    for branch in meant or branches.values():
        for child in branch:
            yield from _leaves(child)


def _rejects_type(error: ValidationError) -> bool:
    """Tell whether an error rejects the "type" of the instance its branch was tried on."""
    return list(error.relative_path) == ["type"] and error.validator in ("pattern", "const", "enum")


def _describe(error: ValidationError) -> str:
    """Format one error as "path: message"."""
    path = "/".join(str(part) for part in error.absolute_path) or "(root)"
    return f"{path}: {error.message[:300]}"


def assert_valid_iiif(document: Mapping) -> None:
    """Fail with the first schema errors unless `document` is valid Presentation 3."""
    errors = list(_validator().iter_errors(document))
    if not errors:
        return
    leaves = list(dict.fromkeys(_describe(leaf) for error in errors for leaf in _leaves(error)))
    shown = "\n  ".join(leaves[:SHOWN_ERRORS])
    raise AssertionError(f"not valid IIIF Presentation 3 ({len(leaves)} errors):\n  {shown}")
