"""Gateway rules in the JSON shape of Cloudflare Gateway rules, compiled for ``policies/certposture/gateway.rego``.

A rule's ``identity`` and ``device_posture`` fields contain filter expressions
in a subset of Cloudflare's wirefilter syntax. Rego has no recursion, so each
expression is parsed here and compiled to disjunctive normal form: a list of
conjunctions, each a list of literals, where the expression is true when
every literal of at least one conjunction is true.

Supported expressions (FIELD[*] only on the list fields, STRING in double quotes):

- ``any(device_posture.checks.passed[*] in {"id1" "id2"})``, the same with
  ``failed``, and ``any(F[*] == "id")``;
- ``any(identity.groups.name[*] in {"eng" "ops"})``, ``any(identity.groups.name[*] == "eng")``,
  and the short forms ``identity.groups.name == "eng"`` and ``identity.groups.name in {…}``;
- ``identity.email == "a@example.com"`` and ``identity.email in {"a@example.com" "b@example.com"}``;
- ``not``/``!``, ``and``/``&&``, ``or``/``||`` and parentheses, where ``not``
  binds tighter than ``and``, which binds tighter than ``or``; ``eq`` is ``==``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import orjson

from certposture.errors import InputError

logger = logging.getLogger(__name__)

MAX_EXPRESSION_LENGTH = 10_000
MAX_NESTING_DEPTH = 50
MAX_CONJUNCTIONS = 256
DEFAULT_ACTIONS = ("allow", "block")
# JSON readers that store numbers as 64-bit floats (JavaScript's, for one) round integers above 2**53,
# so precedences stay below it.
MAX_PRECEDENCE = 2**53

# Fields that contain a list, compared element by element inside any(…), and fields that contain one string.
LIST_FIELDS = ("device_posture.checks.passed", "device_posture.checks.failed", "identity.groups.name")
SCALAR_FIELDS = ("identity.email",)
# Cloudflare documents identity.groups.name == "x" without any(…); the other list fields need any(…).
_SHORT_FORM_FIELDS = ("identity.groups.name",)
# The fields each rule property may use.
PROPERTY_FIELDS = {
    "identity": ("identity.email", "identity.groups.name"),
    "device_posture": ("device_posture.checks.passed", "device_posture.checks.failed"),
}

SUPPORTED_SYNTAX = (
    'any(F[*] in {"a" "b"}), any(F[*] == "a") where F is '
    + ", ".join(LIST_FIELDS[:-1])
    + f" or {LIST_FIELDS[-1]}; "
    + 'identity.email == "a", identity.email in {"a" "b"}, '
    + 'identity.groups.name == "a", identity.groups.name in {"a" "b"}; '
    + "operators not (!), and (&&), or (||) and parentheses"
)

_KEYWORD_OPERATORS = {"and": "and", "or": "or", "not": "not", "eq": "==", "in": "in"}
_SYMBOL_OPERATORS = {"&&": "and", "||": "or", "!": "not", "==": "=="}
# Operators of the Cloudflare Rules language that this subset rejects by name.
_UNSUPPORTED_KEYWORDS = ("xor", "ne", "lt", "le", "gt", "ge", "contains", "matches", "wildcard", "strict")
_UNSUPPORTED_SYMBOLS = ("^^", "!=", "<=", ">=", "<", ">", "~")


@dataclass(frozen=True)
class Token:
    """One token of a filter expression; ``column`` is the 1-based column of its first character."""

    kind: str  # "name", "string", "operator", "punct" or "end"
    text: str
    column: int
    value: str = ""


@dataclass(frozen=True)
class Literal:
    field: str
    op: str  # "any_in", "eq" or "in"
    values: tuple[str, ...]


@dataclass(frozen=True)
class Not:
    operand: Node


@dataclass(frozen=True)
class And:
    operands: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    operands: tuple[Node, ...]


Node = Literal | Not | And | Or


class FilterSyntaxError(InputError):
    """Error for a filter expression outside the supported subset, with the 1-based ``column`` of the problem."""

    def __init__(self, message: str, column: int, text: str) -> None:
        super().__init__(message)
        self.column = column
        self.text = text


def _syntax_error(context: str, column: int, text: str | None, problem: str) -> FilterSyntaxError:
    """Build the one-line error; ``text`` is the input from ``column`` on, or None at the end of the input."""
    if text is None:
        where = "at the end of the expression"
    else:
        where = f"at {text if len(text) <= 40 else text[:40] + '…'!r}"
    return FilterSyntaxError(
        f"{context}: column {column}: {problem} {where}; supported: {SUPPORTED_SYNTAX}",
        column,
        text or "",
    )


def tokenize(expression: str, context: str) -> list[Token]:
    """Split ``expression`` into tokens, ending with an ``end`` token; raise FilterSyntaxError on a bad character."""
    tokens: list[Token] = []
    position = 0
    length = len(expression)
    while position < length:
        char = expression[position]
        column = position + 1

        if char.isspace():
            position += 1
        elif char == '"':
            value, position = _read_string(expression, position, context)
            tokens.append(Token("string", expression[column - 1 : position], column, value))
        elif char.isascii() and (char.isalpha() or char == "_"):
            end = position
            while (
                end < length
                and expression[end].isascii()
                and (expression[end].isalnum() or expression[end] in "_.")
            ):
                end += 1
            tokens.append(Token("name", expression[position:end], column))
            position = end
        elif expression.startswith("[*]", position):
            tokens.append(Token("punct", "[*]", column))
            position += 3
        elif char in "(){}":
            tokens.append(Token("punct", char, column))
            position += 1
        else:
            symbol = _match_symbol(expression, position)
            if symbol is None:
                raise _syntax_error(context, column, expression[position:], f"unexpected character {char!r}")
            tokens.append(Token("operator", symbol, column))
            position += len(symbol)
    tokens.append(Token("end", "", length + 1))
    return tokens


def _match_symbol(expression: str, position: int) -> str | None:
    for symbol in sorted((*_SYMBOL_OPERATORS, *_UNSUPPORTED_SYMBOLS), key=len, reverse=True):
        if expression.startswith(symbol, position):
            return symbol
    return None


def _read_string(expression: str, start: int, context: str) -> tuple[str, int]:
    """Read the double-quoted string at ``start``; return its value and the position after the closing quote.

    Like the Cloudflare Rules language, only ``\\"`` and ``\\\\`` are escapes.
    """
    characters: list[str] = []
    position = start + 1
    while position < len(expression):
        char = expression[position]
        if char == '"':
            return "".join(characters), position + 1
        if char == "\\":
            escaped = expression[position + 1 : position + 2]
            if escaped not in ('"', "\\"):
                raise _syntax_error(
                    context,
                    position + 1,
                    expression[position:],
                    'invalid escape in string, only \\" and \\\\ are escapes',
                )
            characters.append(escaped)
            position += 2
        else:
            characters.append(char)
            position += 1
    raise _syntax_error(context, start + 1, expression[start:], 'unterminated string, a closing " is missing')


class _Parser:
    """Recursive-descent parser over the tokens of one expression; ``depth`` bounds parentheses and ``not``."""

    def __init__(self, expression: str, context: str) -> None:
        self.expression = expression
        self.context = context
        self.tokens = tokenize(expression, context)
        self.index = 0
        self.depth = 0

    def parse(self) -> Node:
        if self.tokens[0].kind == "end":
            raise _syntax_error(self.context, 1, self.expression, "empty expression")
        node = self._or()
        token = self._peek()
        if token.kind != "end":
            raise self._error(token, "unexpected text after the end of the expression")
        return node

    def _peek(self) -> Token:
        return self.tokens[self.index]

    def _advance(self) -> Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def _error(self, token: Token, problem: str) -> FilterSyntaxError:
        text = self.expression[token.column - 1 :] if token.kind != "end" else None
        return _syntax_error(self.context, token.column, text, problem)

    def _operator(self, token: Token) -> str | None:
        """Return the canonical operator (``and``, ``or``, ``not``, ``==``, ``in``) that ``token`` spells."""
        if token.kind == "name":
            return _KEYWORD_OPERATORS.get(token.text)
        if token.kind == "operator":
            return _SYMBOL_OPERATORS.get(token.text)
        return None

    def _enter(self, token: Token) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING_DEPTH:
            raise self._error(token, f"nesting deeper than {MAX_NESTING_DEPTH} levels of parentheses and not")

    def _or(self) -> Node:
        operands = [self._and()]
        while self._operator(self._peek()) == "or":
            self._advance()
            operands.append(self._and())
        return operands[0] if len(operands) == 1 else Or(tuple(operands))

    def _and(self) -> Node:
        operands = [self._unary()]
        while self._operator(self._peek()) == "and":
            self._advance()
            operands.append(self._unary())
        return operands[0] if len(operands) == 1 else And(tuple(operands))

    def _unary(self) -> Node:
        token = self._peek()
        if self._operator(token) == "not":
            self._advance()
            self._enter(token)
            operand = self._unary()
            self.depth -= 1
            return Not(operand)
        return self._primary()

    def _primary(self) -> Node:
        token = self._peek()
        if token.kind == "end" or self._operator(token) is not None:
            raise self._error(token, "expected a comparison, any(…), not or a parenthesis")
        following = self.tokens[self.index + 1]
        if token.kind == "punct" and token.text == "(":
            self._advance()
            self._enter(token)
            node = self._or()
            self._expect(")", "a closing parenthesis is missing")
            self.depth -= 1
            return node
        if token.kind == "name" and following.text == "(":
            if token.text != "any":
                raise self._error(token, f"unknown function {token.text!r}, only any(…) is supported")
            return self._any()
        if token.kind == "name":
            return self._comparison()
        raise self._error(token, "expected a comparison, any(…), not or a parenthesis")

    def _expect(self, text: str, problem: str) -> Token:
        token = self._peek()
        if token.kind == "string" or token.text != text:
            raise self._error(token, problem)
        return self._advance()

    def _any(self) -> Node:
        self._advance()
        self._expect("(", "expected ( after any")
        field_token = self._field(LIST_FIELDS)
        self._expect("[*]", f"expected [*] after {field_token.text} inside any(…)")
        literal = self._compare(field_token.text, element=True)
        self._expect(")", "a closing parenthesis of any(…) is missing")
        return literal

    def _comparison(self) -> Node:
        field_token = self._field((*SCALAR_FIELDS, *LIST_FIELDS))
        if field_token.text in LIST_FIELDS and field_token.text not in _SHORT_FORM_FIELDS:
            raise self._error(
                field_token,
                f"{field_token.text} is a list, so compare it inside any({field_token.text}[*] in {{…}})",
            )
        return self._compare(field_token.text, element=field_token.text in LIST_FIELDS)

    def _field(self, allowed: tuple[str, ...]) -> Token:
        token = self._peek()
        if token.kind != "name" or token.text not in allowed:
            raise self._error(
                token, f"unknown field {token.text or '(none)'!r}, expected one of {', '.join(allowed)}"
            )
        return self._advance()

    def _compare(self, field: str, *, element: bool) -> Literal:
        token = self._peek()
        operator = self._operator(token)
        if operator == "==":
            self._advance()
            value = self._string()
            return Literal(field, "any_in" if element else "eq", (value,))
        if operator == "in":
            self._advance()
            return Literal(field, "any_in" if element else "in", self._set())
        if token.text in _UNSUPPORTED_KEYWORDS or token.text in _UNSUPPORTED_SYMBOLS:
            raise self._error(
                token, f"unsupported operator {token.text!r}, only == (eq) and in are supported"
            )
        raise self._error(token, f"expected == or in after {field}")

    def _string(self) -> str:
        token = self._peek()
        if token.kind != "string":
            raise self._error(token, "expected a string in double quotes")
        self._advance()
        return token.value

    def _set(self) -> tuple[str, ...]:
        self._expect("{", "expected { to start a set of strings")
        values: list[str] = []
        while self._peek().kind == "string":
            value = self._advance().value
            if value not in values:
                values.append(value)
        if not values:
            raise self._error(self._peek(), "expected a string in the set; a set needs at least one string")
        self._expect("}", "expected } to close the set, with strings separated by spaces")
        return tuple(values)


def parse_filter(expression: str, context: str = "expression") -> Node:
    """Parse one filter expression; raise FilterSyntaxError naming ``context``, the column and the text."""
    if len(expression) > MAX_EXPRESSION_LENGTH:
        raise FilterSyntaxError(
            f"{context}: the expression has {len(expression)} characters, more than the maximum "
            f"{MAX_EXPRESSION_LENGTH}; split the rule",
            MAX_EXPRESSION_LENGTH + 1,
            expression[MAX_EXPRESSION_LENGTH:],
        )
    return _Parser(expression, context).parse()


def to_dnf(node: Node, context: str = "expression") -> list[list[dict[str, Any]]]:
    """Compile ``node`` to disjunctive normal form, pushing ``not`` down to the literals (De Morgan)."""
    return [
        [_literal_json(literal, negated) for literal, negated in conjunction]
        for conjunction in _dnf(node, False, context)
    ]


_Conjunction = tuple[tuple[Literal, bool], ...]


def _dnf(node: Node, negated: bool, context: str) -> list[_Conjunction]:
    if isinstance(node, Literal):
        return [((node, negated),)]
    if isinstance(node, Not):
        return _dnf(node.operand, not negated, context)

    parts = [_dnf(operand, negated, context) for operand in node.operands]
    # not (a and b) is (not a) or (not b), so a negated And combines like an Or, and the reverse.
    if isinstance(node, Or) != negated:
        combined = [conjunction for part in parts for conjunction in part]
        _check_size(len(combined), context)
        return combined

    product: list[_Conjunction] = [()]
    for part in parts:
        _check_size(len(product) * len(part), context)
        product = [left + right for left in product for right in part]
    return product


def _check_size(size: int, context: str) -> None:
    if size > MAX_CONJUNCTIONS:
        raise InputError(
            f"{context}: the expression expands to more than {MAX_CONJUNCTIONS} alternatives "
            "when written as an or of ands; simplify it or split it into several rules"
        )


def _literal_json(literal: Literal, negated: bool) -> dict[str, Any]:
    return {"field": literal.field, "op": literal.op, "values": list(literal.values), "negated": negated}


def compile_filter(expression: str, context: str = "expression") -> list[list[dict[str, Any]]]:
    """Parse ``expression`` and return its disjunctive normal form, as the Gateway policy reads it."""
    return to_dnf(parse_filter(expression, context), context)


def load_gateway_document(raw: bytes, source: str) -> dict[str, Any]:
    """Validate a Gateway rules document and return the value for ``data.certposture_config.gateway``.

    ``raw`` is a JSON list of rules, a Cloudflare API response ``{"result": [...]}``
    or ``{"default_action": "allow"|"block", "rules": [...]}``. Rules come back
    sorted by precedence. Other Cloudflare fields such as ``filters`` are
    ignored, but an enabled rule with a ``traffic``, ``schedule`` or
    ``expiration`` condition is rejected, because certposture cannot evaluate
    it. Raises InputError for the first problem found.
    """
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise InputError(f"{source}: not valid JSON: {error}") from None

    default_action = "allow"
    if isinstance(document, list):
        rules = document
    elif isinstance(document, dict) and "rules" in document:
        unknown = sorted(set(document) - {"rules", "default_action"})
        if unknown:
            raise InputError(
                f"{source}: unknown top-level field(s) {', '.join(unknown)}; expected rules and default_action"
            )
        rules = document["rules"]
        default_action = document.get("default_action", "allow")
        if default_action not in DEFAULT_ACTIONS:
            raise InputError(
                f"{source}: default_action {default_action!r} is invalid; expected one of {', '.join(DEFAULT_ACTIONS)}"
            )
    elif isinstance(document, dict) and "result" in document:
        # A Cloudflare API response: only its envelope fields may stand beside result, so that a
        # default_action written here is not silently dropped.
        unknown = sorted(set(document) - {"result", "success", "errors", "messages", "result_info"})
        if unknown:
            raise InputError(
                f"{source}: unknown field(s) {', '.join(unknown)} beside result; "
                'use {"default_action": ..., "rules": [...]} to set a default action'
            )
        rules = document["result"]
    else:
        raise InputError(
            f'{source}: expected a list of Gateway rules, {{"result": [...]}} or {{"default_action": ..., "rules": [...]}}'
        )
    if not isinstance(rules, list):
        raise InputError(f"{source}: the rules must be a JSON list, not {type(rules).__name__}")

    loaded = [_load_rule(rule, f"{source}: rule {index + 1}") for index, rule in enumerate(rules)]
    _check_unique(loaded, source)
    _reject_unevaluated_conditions(rules, source)
    _reject_mixed_traffic_types(rules, source)
    # Precedences are unique, so this order is total. The policy also breaks ties by list order,
    # for documents that did not pass through this function.
    loaded.sort(key=lambda rule: rule["precedence"])
    return {"default_action": default_action, "rules": loaded}


_ACTION = re.compile(r"[a-z][a-z0-9_]*")


def _load_rule(rule: Any, context: str) -> dict[str, Any]:
    if not isinstance(rule, dict):
        raise InputError(f"{context}: expected a JSON object, not {type(rule).__name__}")
    rule_id = _required_string(rule, "id", context)
    context = f"{context} (id {rule_id})"
    name = _required_string(rule, "name", context)
    action = _required_string(rule, "action", context)
    if not _ACTION.fullmatch(action):
        # Cloudflare's actions are lower-case words; "BLOCK" or "block " would otherwise count as allowed.
        raise InputError(
            f"{context}: action {action!r} is invalid; Gateway actions are lower-case words such as block or allow"
        )

    precedence = rule.get("precedence")
    if not isinstance(precedence, int) or isinstance(precedence, bool) or abs(precedence) >= MAX_PRECEDENCE:
        raise InputError(
            f"{context}: precedence {orjson.dumps(precedence).decode()} is invalid; expected an integer below 2**53"
        )
    enabled = rule.get("enabled", True)
    if not isinstance(enabled, bool):
        raise InputError(f"{context}: enabled {enabled!r} is invalid; expected true or false")

    loaded: dict[str, Any] = {
        "id": rule_id,
        "name": name,
        "precedence": precedence,
        "action": action,
        "enabled": enabled,
        "identity": None,
        "device_posture": None,
        "source": {},
    }
    for prop, fields in PROPERTY_FIELDS.items():
        expression = rule.get(prop)
        # Cloudflare's API returns "" for a rule without this condition.
        if expression is None or expression == "":
            continue
        if not isinstance(expression, str):
            raise InputError(
                f"{context}: {prop} must be a filter expression string, not {type(expression).__name__}"
            )
        dnf = compile_filter(expression, f"{context} {prop}")
        _check_fields(dnf, prop, fields, context)
        loaded[prop] = dnf
        loaded["source"][prop] = expression
    return loaded


def _required_string(rule: dict[str, Any], key: str, context: str) -> str:
    value = rule.get(key)
    if not isinstance(value, str) or not value:
        raise InputError(f"{context}: {key} {value!r} is invalid; expected a non-empty string")
    return value


def _check_fields(dnf: list[list[dict[str, Any]]], prop: str, fields: tuple[str, ...], context: str) -> None:
    for conjunction in dnf:
        for literal in conjunction:
            if literal["field"] not in fields:
                raise InputError(
                    f"{context} {prop}: field {literal['field']} is not allowed here; "
                    f"{prop} may use {', '.join(fields)}"
                )


def _check_unique(rules: list[dict[str, Any]], source: str) -> None:
    """Reject two rules with one id, or with one precedence, which would make the winning rule ambiguous."""
    ids: set[str] = set()
    first_by_precedence: dict[int, str] = {}
    for rule in rules:
        if rule["id"] in ids:
            raise InputError(f"{source}: two rules have id {rule['id']}; give each rule its own id")
        ids.add(rule["id"])
        other = first_by_precedence.setdefault(rule["precedence"], rule["id"])
        if other != rule["id"]:
            raise InputError(
                f"{source}: rules {other} and {rule['id']} share precedence {rule['precedence']}; "
                "Cloudflare requires a unique precedence per rule, so renumber one of them"
            )


# Rule fields that limit when a rule applies and that certposture cannot evaluate. Ignoring one
# would let an allow rule match more than intended and hide a block rule below it.
_UNEVALUATED_CONDITIONS = ("traffic", "schedule", "expiration")


def _reject_mixed_traffic_types(rules: list[Any], source: str) -> None:
    # Cloudflare evaluates DNS, HTTP and network rules as separate stages, so one precedence order
    # over all of them could let a DNS allow rule hide an HTTP block rule.
    enabled = [rule for rule in rules if isinstance(rule, dict) and rule.get("enabled", True) is not False]
    kinds = {tuple(sorted(str(kind) for kind in rule.get("filters") or [])) for rule in enabled}
    if len(kinds) > 1:
        listed = "; ".join(", ".join(kind) or "(none)" for kind in sorted(kinds))
        raise InputError(
            f"{source}: the rules filter different traffic types ({listed}), which Cloudflare evaluates "
            "as separate stages; decide with the rules of one type at a time"
        )
    sessions = [
        rule.get("id")
        for rule in enabled
        if isinstance(rule.get("rule_settings"), dict)
        and isinstance(rule["rule_settings"].get("check_session"), dict)
        and rule["rule_settings"]["check_session"].get("enforce")
    ]
    if sessions:
        raise InputError(
            f"{source}: rule(s) {', '.join(str(rule_id) for rule_id in sessions)} enforce a session check, "
            "which certposture cannot evaluate; remove rule_settings.check_session or disable the rule"
        )


def _reject_unevaluated_conditions(rules: list[Any], source: str) -> None:
    for field in _UNEVALUATED_CONDITIONS:
        with_condition = [
            rule.get("id")
            for rule in rules
            if isinstance(rule, dict) and rule.get(field) and rule.get("enabled", True) is not False
        ]
        if with_condition:
            raise InputError(
                f"{source}: rule(s) {', '.join(str(rule_id) for rule_id in with_condition)} have a condition {field}, "
                "which certposture cannot evaluate; remove it or disable the rule to decide "
                "on identity and device posture only"
            )
