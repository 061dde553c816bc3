"""Load the ``--data`` documents of the Rego test runner and merge them into the engine's ``data``.

A document is a JSON or YAML file whose top level is an object. YAML aliases
and nesting deeper than regorus accepts are rejected before the document
reaches regorus.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import date, datetime
from pathlib import Path
from typing import Any

import yaml

from certposture.engine import describe_engine_error
from certposture.regofiles import MIB, RegoLoadError, read_text

# Data documents may be exported inventories, so they may be larger than policies.
MAX_DATA_FILE = 64 * MIB
# regorus parses data with serde_json, which rejects objects and arrays nested 128 levels deep
# (measured with gordon-to-regorus 0.13.0), so deeper documents are rejected before parsing ends.
MAX_DATA_DEPTH = 127


def engine_message(error: BaseException) -> str:
    """Return the regorus message as ``file:line:col: message`` without a final period, ready for "; fix"."""
    return describe_engine_error(error).rstrip().removesuffix(".")


def _data_file_too_large(path: Path, size: int) -> str:
    return f"{path} is {size} bytes, larger than the 64 MiB limit for data files; use a smaller data file"


def add_data(engine: Any, path: Path) -> None:
    document = load_data_document(path)
    if _nesting_depth(document) > MAX_DATA_DEPTH:
        raise RegoLoadError(_too_deep(str(path)))
    try:
        text = json.dumps(document, allow_nan=False, default=_yaml_scalar_to_json)
    except (TypeError, ValueError) as error:
        raise RegoLoadError(
            f"data file {path} contains a value that JSON cannot represent: {error}"
        ) from None
    try:
        engine.add_data_json(text)
    except RuntimeError as error:
        raise RegoLoadError(
            f"data file {path} cannot be merged into data: {engine_message(error)}; "
            "remove the conflicting value from one of the data files"
        ) from None


def load_data_document(path: Path) -> dict[str, Any]:
    """Parse a JSON or YAML data file whose top level is an object.

    ``.json`` files are parsed as JSON and ``.yaml``/``.yml`` files as YAML.
    Any other file is parsed as JSON when it is valid JSON, else as YAML.
    YAML aliases are rejected, and so is YAML nested deeper than :data:`MAX_DATA_DEPTH`.
    """
    text = read_text(path, MAX_DATA_FILE, _data_file_too_large)
    suffix = path.suffix.lower()
    if suffix == ".json":
        document = _parse_json(path, text)
    elif suffix in (".yaml", ".yml"):
        document = _parse_yaml(path, text)
    else:
        try:
            document = _parse_json(path, text)
        except RegoLoadError:
            document = _parse_yaml(path, text)
    if not isinstance(document, dict):
        raise RegoLoadError(
            f"data file {path} contains a {type(document).__name__}, not an object; "
            "the top level of a data document must be an object"
        )
    return document


def _parse_json(path: Path, text: str) -> Any:
    def reject_constant(name: str) -> None:
        raise ValueError(f"{name} is not valid JSON")

    try:
        return json.loads(text, parse_constant=reject_constant)
    except json.JSONDecodeError as error:
        raise RegoLoadError(f"{path}:{error.lineno}:{error.colno}: invalid JSON: {error.msg}") from None
    except RecursionError:
        # The json module gives up at about 1000 levels, far deeper than regorus accepts.
        raise RegoLoadError(_too_deep(str(path))) from None
    except ValueError as error:
        raise RegoLoadError(f"{path}: invalid JSON: {_first_clause(error)}") from None


def _parse_yaml(path: Path, text: str) -> Any:
    try:
        # _DataYamlLoader is a SafeLoader, so no tag can construct arbitrary Python objects.
        return yaml.load(text, Loader=_DataYamlLoader)
    except _YamlAliasError as error:
        raise RegoLoadError(
            f"{_yaml_position(path, error.mark)}: YAML alias *{error.anchor} is not supported in data files, "
            "because expanding aliases can turn a small file into a huge document; "
            "write the value out in full"
        ) from None
    except _YamlTooDeepError as error:
        raise RegoLoadError(_too_deep(_yaml_position(path, error.mark))) from None
    except yaml.MarkedYAMLError as error:
        raise RegoLoadError(
            f"{_yaml_position(path, error.problem_mark)}: invalid YAML: {error.problem}"
        ) from None
    except yaml.YAMLError as error:
        raise RegoLoadError(f"{path}: invalid YAML: {error}") from None


def _yaml_position(path: Path, mark: yaml.Mark | None) -> str:
    return f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)


def _too_deep(where: str) -> str:
    return (
        f"{where}: objects and arrays are nested more than {MAX_DATA_DEPTH} levels deep, "
        "more than regorus accepts; flatten the data document"
    )


def _first_clause(error: Exception) -> str:
    # Python's own advice, such as "use sys.set_int_max_str_digits()", does not apply to a data file.
    return str(error).split(";")[0]


class _YamlAliasError(Exception):
    def __init__(self, anchor: str, mark: yaml.Mark) -> None:
        super().__init__(anchor)
        self.anchor = anchor
        self.mark = mark


class _YamlTooDeepError(Exception):
    def __init__(self, mark: yaml.Mark) -> None:
        super().__init__("too deep")
        self.mark = mark


class _DataYamlLoader(yaml.SafeLoader):
    """SafeLoader that rejects aliases, limits nesting and reports invalid scalars with their position.

    Composing nodes one level at a time stops a deeply nested file at
    :data:`MAX_DATA_DEPTH` instead of at Python's recursion limit, and
    rejecting aliases stops "billion laughs" documents before they expand.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            alias = self._next_event()
            raise _YamlAliasError(str(alias.anchor), alias.start_mark)
        if not self.check_event(yaml.MappingStartEvent, yaml.SequenceStartEvent):
            return super().compose_node(parent, index)
        if self._depth >= MAX_DATA_DEPTH:
            raise _YamlTooDeepError(self._next_event().start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def _next_event(self) -> Any:
        return self.peek_event()  # type: ignore[no-untyped-call]

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as error:
            # Out-of-range dates and integers with more than 4300 digits raise these.
            raise yaml.constructor.ConstructorError(
                None, None, _first_clause(error), node.start_mark
            ) from None


def _nesting_depth(document: Any) -> int:
    """Return how many objects and arrays are nested in ``document``, counting the document itself.

    Walks iteratively, so a deep document cannot exhaust Python's stack, and
    stops once the depth exceeds :data:`MAX_DATA_DEPTH`.
    """
    deepest = 0
    pending: list[tuple[Any, int]] = [(document, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, dict):
            children: Iterable[Any] = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_DATA_DEPTH:
            break
        pending.extend((child, depth + 1) for child in children)
    return deepest


def _yaml_scalar_to_json(value: Any) -> str:
    # YAML reads unquoted dates as date objects; JSON (and OPA's YAML loader) keeps them as text.
    if isinstance(value, date | datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} value {value!r}")
