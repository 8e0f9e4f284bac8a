"""Check documents against the IIIF Presentation 3 JSON schema kept in tests/schemas.

The schema lists only the core ``behavior`` vocabulary, while Presentation 3
lets an extension define more values. A document that declares a known
extension's context in its ``@context`` is checked with that extension's values
taken out of its behaviors first; every other value still has to be core.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Mapping
from pathlib import Path

from jsonschema import Draft7Validator
from jsonschema.exceptions import ValidationError

SCHEMA = Path(__file__).parent / "schemas" / "iiif_3_0.schema.json"
#: Extension context -> the behavior values it defines. The born-digital one is
#: what the DLCS declares for file-only assets ("placeholder" canvases and the
#: "original" rendering); its terms are in that context document.
EXTENSION_BEHAVIORS = {
    "https://iiif.wellcomecollection.org/extensions/born-digital/context.json":
        frozenset({"placeholder", "original"}),
}
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


def _without_extension_behaviors(value: object, defined: frozenset[str]) -> object:
    """Return a copy of the document whose behavior lists leave out the ``defined`` values."""
    if isinstance(value, list):
        return [_without_extension_behaviors(item, defined) for item in value]
    if not isinstance(value, dict):
        return value
    return {key: ([v for v in item if v not in defined]
                  if key == "behavior" and isinstance(item, list)
                  else _without_extension_behaviors(item, defined))
            for key, item in value.items()}


def assert_valid_iiif(document: Mapping) -> None:
    """Fail with the first schema errors unless `document` is valid Presentation 3."""
    context = document.get("@context")
    declared = context if isinstance(context, list) else [context]
    defined = frozenset().union(*(EXTENSION_BEHAVIORS.get(entry, ()) for entry in declared
                                  if isinstance(entry, str)))
    if defined:
        document = _without_extension_behaviors(document, defined)
    errors = list(_validator().iter_errors(document))
    if not errors:
        return
    leaves = list(dict.fromkeys(_describe(leaf) for error in errors for leaf in _leaves(error)))
    shown = "\n  ".join(leaves[:SHOWN_ERRORS])
    raise AssertionError(f"not valid IIIF Presentation 3 ({len(leaves)} errors):\n  {shown}")
