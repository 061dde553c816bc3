"""Posture rules in the JSON shape of Cloudflare's ``client_certificate_v2`` device posture rule.

Validation checks every field and reports every problem at once, one line per
problem, each naming the field and what is allowed.
"""

from __future__ import annotations

import posixpath
import re
import uuid
from collections.abc import Callable, Iterable
from typing import Any, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)

from certposture.errors import InputError
from collector.platforms import SUPPORTED, UNSUPPORTED

OPERATING_SYSTEMS = ("windows", "linux", "mac")
PLATFORMS = ("windows", "linux", "mac", "ios", "android", "chromeos")
EXTENDED_KEY_USAGES = {"clientAuth": "1.3.6.1.5.5.7.3.2", "emailProtection": "1.3.6.1.5.5.7.3.4"}
TRUST_STORES = ("system", "user")
VARIABLES = ("serial_number", "hostname")

ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_VARIABLE = re.compile(r"\$\{([^}]*)\}")
_DURATION = re.compile(r"^[1-9][0-9]{0,8}[smhd]\Z")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Locations(_Model):
    paths: list[str] | None = None
    trust_stores: list[Literal["system", "user"]] | None = None

    @field_validator("paths")
    @classmethod
    def _absolute_paths(cls, paths: list[str] | None) -> list[str] | None:
        for path in paths or []:
            if not path.startswith("/"):
                raise ValueError(f"path {path!r} is not absolute; give the full path starting with /")
            if "\x00" in path:
                raise ValueError(f"path {path!r} contains a NUL character; remove it")
            # The collector reports normalized absolute paths and the policy compares text,
            # so "/a/../b" or "/a//b" would never match a certificate.
            normalized = posixpath.normpath(path)
            if normalized.startswith("//"):
                # POSIX lets a leading "//" mean something else, so normpath keeps it; Linux does not.
                normalized = "/" + normalized.lstrip("/")
            if normalized != path.rstrip("/") and path != "/":
                raise ValueError(f"path {path!r} is not normalized; write {normalized!r}")
        return paths


class RuleInput(_Model):
    certificate_id: str = Field(min_length=1)
    operating_system: Literal["windows", "linux", "mac"]
    check_private_key: StrictBool

    @field_validator("operating_system", mode="before")
    @classmethod
    def _supported_os(cls, value: object) -> object:
        _reject_unsupported_platform(value)
        return value

    cn: str | None = None
    extended_key_usage: list[Literal["clientAuth", "emailProtection"]] | None = None
    subject_alternative_names: list[str] | None = None
    locations: Locations | None = None

    @field_validator("cn")
    @classmethod
    def _cn_variables(cls, value: str | None) -> str | None:
        if value:
            _check_variables(value)
        return value

    @field_validator("subject_alternative_names")
    @classmethod
    def _san_variables(cls, values: list[str] | None) -> list[str] | None:
        for value in values or []:
            if not value:
                raise ValueError("empty string; remove it or give a DNS name, email, URI or IP address")
            _check_variables(value)
        return values

    @model_validator(mode="after")
    def _locations_fit_os(self) -> RuleInput:
        if self.locations is None:
            return self
        if self.locations.paths and self.operating_system != "linux":
            raise ValueError(
                f"locations.paths applies to linux rules only, not {self.operating_system}; "
                "use locations.trust_stores"
            )
        if self.locations.trust_stores and self.operating_system == "linux":
            raise ValueError(
                "locations.trust_stores applies to windows and mac rules only; "
                "on linux use locations.paths, or leave locations empty to search /etc/pki/nssdb"
            )
        if self.operating_system == "mac" and "user" in (self.locations.trust_stores or []):
            raise ValueError(
                "locations.trust_stores 'user' exists on windows only; "
                "mac rules read the System keychain: use ['system'] or leave trust_stores out"
            )
        return self


class MatchEntry(_Model):
    platform: Literal["windows", "linux", "mac", "ios", "android", "chromeos"]

    @field_validator("platform", mode="before")
    @classmethod
    def _supported_platform(cls, value: object) -> object:
        _reject_unsupported_platform(value)
        return value


class Rule(_Model):
    id: str | None = Field(default=None, pattern=ID_PATTERN)
    name: str = Field(min_length=1)
    description: str | None = None
    type: Literal["client_certificate_v2"]
    schedule: str | None = None
    expiration: str | None = None
    match: list[MatchEntry] | None = None
    input: RuleInput

    @field_validator("schedule", "expiration")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value and not _DURATION.match(value):
            raise ValueError(
                f"{value!r} is not a duration; use a number of at most 9 digits and a unit s, m, h or d, such as 5m"
            )
        return value

    @model_validator(mode="after")
    def _match_fits_os(self) -> Rule:
        for entry in self.match or []:
            if entry.platform != self.input.operating_system:
                raise ValueError(
                    f"match platform {entry.platform!r} differs from input.operating_system "
                    f"{self.input.operating_system!r}; make them equal"
                )
        return self


def _reject_unsupported_platform(value: object) -> None:
    # Cloudflare's posture API accepts these platforms, but it has no client certificate check for them.
    if value in UNSUPPORTED:
        raise ValueError(
            f"client certificate checks are not supported on {value}; "
            f"supported operating systems: {', '.join(SUPPORTED)}"
        )


def _check_variables(template: str) -> None:
    for name in _VARIABLE.findall(template):
        if name not in VARIABLES:
            raise ValueError(
                f"unknown variable ${{{name}}} in {template!r}; allowed: ${{serial_number}}, ${{hostname}}"
            )
    if "${" in _VARIABLE.sub("", template):
        raise ValueError(f"unterminated variable in {template!r}; write ${{serial_number}} or ${{hostname}}")


def parse_rules_document(raw: bytes, source: str) -> list[dict[str, Any]]:
    """Parse a JSON file holding one rule or a list of rules, without validating the rules."""
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise InputError(
            f"{source}: invalid JSON: {error}; pass one rule object or a list of rules"
        ) from None
    if isinstance(document, dict) and isinstance(document.get("result"), dict | list):
        # A response body of Cloudflare's API wraps the rule (or rules) in "result".
        document = document["result"]
    if isinstance(document, dict):
        return [document]
    if isinstance(document, list) and document and all(isinstance(item, dict) for item in document):
        return document
    raise InputError(f"{source}: expected a rule object or a non-empty list of rule objects")


def validate_rules(
    documents: Iterable[dict[str, Any]],
    certificate_exists: Callable[[str], bool],
) -> tuple[list[dict[str, Any]], list[str]]:
    """Validate rule documents; return the normalized rules and one message per problem.

    Rules without an ``id`` get a new UUID. ``certificate_exists`` returns whether a
    signing certificate id is stored.
    """
    rules: list[dict[str, Any]] = []
    problems: list[str] = []
    seen_ids: set[str] = set()
    for index, document in enumerate(documents):
        prefix = f"rule {index}" + (
            f" ({document['name']!r})" if isinstance(document.get("name"), str) else ""
        )
        try:
            rule = Rule.model_validate(document)
        except ValidationError as error:
            problems.extend(f"{prefix}: {line}" for line in _format_validation_error(error))
            continue

        certificate_id = rule.input.certificate_id
        if not certificate_exists(certificate_id):
            problems.append(
                f"{prefix}: input.certificate_id: signing certificate {certificate_id!r} is not stored; "
                f"add it with `certposture ca add --id {certificate_id} FILE` or pick one from `certposture ca list`"
            )
        rule_id = rule.id or str(uuid.uuid4())
        if rule_id in seen_ids:
            problems.append(
                f"{prefix}: id: {rule_id!r} appears twice in the input; give each rule its own id"
            )
        seen_ids.add(rule_id)
        normalized = rule.model_dump(mode="json", exclude_none=True)
        normalized = {"id": rule_id, **{key: value for key, value in normalized.items() if key != "id"}}
        rules.append(normalized)
    return rules, problems


def _format_validation_error(error: ValidationError) -> list[str]:
    lines = []
    for item in error.errors(include_url=False):
        parts = [str(part) for part in item["loc"] if not str(part).startswith("function-")]
        # A field name comes from the input, so one with control characters is shown quoted.
        location = ".".join(part if part.isprintable() else repr(part) for part in parts) or "rule"
        kind = item["type"]
        if kind == "missing":
            message = "required field is missing"
        elif kind == "extra_forbidden":
            message = f"unknown field; allowed fields here: {_allowed_fields(item['loc'])}"
        elif kind == "literal_error":
            allowed = item.get("ctx", {}).get("expected", "")
            message = f"{item['input']!r} is not allowed; allowed values: {allowed}"
        elif kind == "value_error":
            message = str(item["msg"]).removeprefix("Value error, ")
        elif kind in _TYPE_MESSAGES:
            message = f"{_TYPE_MESSAGES[kind]} (got {_json_type(item['input'])})"
        elif kind == "string_pattern_mismatch":
            message = f"{item['input']!r} is not a valid id; use letters, digits, '-' and '_' (at most 64)"
        else:
            message = f"{item['msg']} (got {item['input']!r})"
        lines.append(f"{location}: {message}")
    return lines


_TYPE_MESSAGES = {
    "model_type": "must be a JSON object",
    "dict_type": "must be a JSON object",
    "list_type": "must be a list",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
}


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return "null" if value is None else type(value).__name__


def _allowed_fields(location: tuple[int | str, ...]) -> str:
    model: type[BaseModel] = Rule
    for part in location[:-1]:
        if isinstance(part, int):
            continue
        annotation = model.model_fields[str(part)].annotation if str(part) in model.model_fields else None
        nested = _model_in(annotation)
        if nested is None:
            break
        model = nested
    return ", ".join(model.model_fields)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in getattr(annotation, "__args__", ()):
        found = _model_in(argument)
        if found is not None:
            return found
    return None
