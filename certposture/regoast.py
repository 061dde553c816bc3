"""Analyse the regorus AST of loaded Rego modules: rule names, references, calls and coverable lines.

Every function takes modules in the form of ``Engine.get_ast_as_json``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import regorus

from certposture.regofiles import RegoLoadError

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# regorus reports a call to a function it cannot resolve with this message (gordon-to-regorus 0.13.0).
_UNKNOWN_FUNCTION_MESSAGE = "could not find function"


def plain_rule_name(rule: dict[str, Any]) -> tuple[str, int, bool] | None:
    """Return the name, line and default flag of a complete rule with a plain name, else None.

    regorus AST: ``{"Spec": {"head": {"Compr": {"refr": ...}}}}`` for ``name if ...``
    and ``name := value``; ``{"Default": {"refr": ...}}`` for ``default name := value``.
    Functions have a ``Func`` head, partial sets a ``Set`` head, and partial
    objects and dotted heads a ``refr`` other than ``Var``.
    """
    if "Spec" in rule:
        head = rule["Spec"]["head"]
        refr = head["Compr"]["refr"] if "Compr" in head else None
        line = rule["Spec"]["span"]["line"]
        is_default = False
    elif "Default" in rule:
        refr = rule["Default"]["refr"]
        line = rule["Default"]["span"]["line"]
        is_default = True
    else:
        return None
    if refr is None or "Var" not in refr:
        return None
    name: str = refr["Var"]["value"]
    return name, int(line), is_default


def render_reference(refr: dict[str, Any]) -> str:
    """Render a package reference from the AST as Rego text, for example ``data.a.b["c-d"]``."""
    parts = _reference_parts(refr)
    if parts is None:
        raise RegoLoadError(f"package reference {json.dumps(refr)[:200]} is not supported")
    text = "data"
    for part in parts:
        text += f".{part}" if _IDENTIFIER.fullmatch(part) else f"[{json.dumps(part)}]"
    return text


def _reference_parts(refr: dict[str, Any]) -> tuple[str, ...] | None:
    """Return the names of a reference such as ``a.b["c-d"]`` as ``("a", "b", "c-d")``.

    Returns None for a reference with a computed part, such as ``a[x]``.
    """
    parts: list[str] = []
    node = refr
    while True:
        if "Var" in node:
            parts.append(node["Var"]["value"])
            break
        if "RefDot" in node:
            parts.append(node["RefDot"]["field"][1])
            node = node["RefDot"]["refr"]
        elif "RefBrack" in node and "String" in node["RefBrack"]["index"]:
            parts.append(node["RefBrack"]["index"]["String"]["value"])
            node = node["RefBrack"]["refr"]
        else:
            return None
    return tuple(reversed(parts))


# Unknown functions


def check_function_calls(modules: dict[str, dict[str, Any]], files: Sequence[str]) -> None:
    """Raise :class:`RegoLoadError` for the first call to a function that neither a module nor regorus defines.

    A name resolves as regorus resolves it: ``data.x.f`` as written, ``a.f``
    through an import of ``data.x`` as ``a``, and any other name relative to
    the caller's package. A name that no module defines is checked against
    the builtins of regorus. Rego has no syntax for a call with a computed
    name, so every call is checked.
    """
    functions = _defined_functions(modules.values())
    arities = _function_arities(modules.values())
    for file in files:
        module = modules[file]
        package = _reference_parts(module["ast"]["package"]["refr"]) or ()
        aliases = _import_aliases(module)
        calls = sorted(_calls(module["ast"]), key=lambda call: _position(_leftmost_span(call["fcn"])))
        for call in calls:
            name = _reference_parts(call["fcn"])
            if name is None:
                continue  # not reached for parsed Rego; regorus would report it when evaluating
            candidates = [package + name]
            if name[0] == "data":
                candidates = [name[1:]]
            elif name[0] in aliases:
                candidates.append(aliases[name[0]] + name[1:])
            defined = [candidate for candidate in candidates if candidate in functions]
            span = _leftmost_span(call["fcn"])
            if defined:
                _check_arity(file, span, ".".join(name), len(call["params"]), arities.get(defined[0], set()))
                continue
            if _is_builtin(name):
                continue
            described_name = ".".join(name)
            if name[0] in aliases:
                described_name += f", imported from data.{'.'.join(aliases[name[0]] + name[1:])},"
            raise RegoLoadError(
                f"{file}:{span['line']}:{span['col']}: function {described_name} is not defined in the loaded files "
                "and is not a regorus builtin; correct the name, or load the file that defines it"
            )


def _defined_functions(modules: Iterable[dict[str, Any]]) -> set[tuple[str, ...]]:
    """Return the paths (without ``data``) of every function and every default rule in ``modules``.

    regorus also calls a default rule like a function, so default rules count as defined.
    """
    functions = set()
    for module in modules:
        package = _reference_parts(module["ast"]["package"]["refr"]) or ()
        for rule in module["ast"]["rules"]:
            if "Default" in rule:
                refr = rule["Default"]["refr"]
            elif "Func" in rule.get("Spec", {}).get("head", {}):
                refr = rule["Spec"]["head"]["Func"]["refr"]
            else:
                continue
            parts = _reference_parts(refr)
            if parts is not None:
                functions.add(package + parts)
    return functions


def _function_arities(modules: Iterable[dict[str, Any]]) -> dict[tuple[str, ...], set[int]]:
    """Map the path (without ``data``) of every function defined with arguments to its argument counts."""
    arities: dict[tuple[str, ...], set[int]] = {}
    for module in modules:
        package = _reference_parts(module["ast"]["package"]["refr"]) or ()
        for rule in module["ast"]["rules"]:
            head = rule.get("Spec", {}).get("head", {})
            if "Func" not in head:
                continue
            parts = _reference_parts(head["Func"]["refr"])
            if parts is not None:
                arities.setdefault(package + parts, set()).add(len(head["Func"]["args"]))
    return arities


def _check_arity(file: str, span: dict[str, int], name: str, supplied: int, arities: set[int]) -> None:
    # A call may pass one more argument than the function takes, to bind its result (f(x, y) for y := f(x)).
    if not arities or any(supplied in (arity, arity + 1) for arity in arities):
        return
    expected = " or ".join(str(arity) for arity in sorted(arities))
    raise RegoLoadError(
        f"{file}:{span['line']}:{span['col']}: function {name} takes {expected} argument(s), "
        f"but the call passes {supplied}; correct the call"
    )


def _head_reference(rule: dict[str, Any]) -> dict[str, Any] | None:
    """Return the reference a rule's head defines (``f`` in ``f(x) := ...``), or None for a rule without one."""
    if "Default" in rule:
        head_fields: dict[str, Any] = rule["Default"]
    else:
        head = rule.get("Spec", {}).get("head", {})
        if not head:
            return None
        head_fields = next(iter(head.values()))
    refr: dict[str, Any] = head_fields["refr"]
    return refr


def rule_paths(module: dict[str, Any]) -> set[tuple[str, ...]]:
    """Return the path (without ``data``) of the document each rule of ``module`` defines: its package and first name."""
    package = _reference_parts(module["ast"]["package"]["refr"]) or ()
    paths = set()
    for rule in module["ast"]["rules"]:
        refr = _head_reference(rule)
        if refr is None:
            continue
        while "Var" not in refr:
            refr = next(iter(refr.values()))["refr"]
        paths.add((*package, refr["Var"]["value"]))
    return paths


def check_builtin_shadowing(module: dict[str, Any]) -> None:
    """Raise :class:`RegoLoadError` for a rule or function of ``module`` named like a regorus builtin.

    Such a definition replaces the builtin for every module of its package:
    a second file that defines ``sprintf`` in a condition's package turned
    that condition's reasons undefined, so the condition never failed.
    """
    for rule in module["ast"]["rules"]:
        refr = _head_reference(rule)
        if refr is None:
            continue
        name = _reference_parts(refr)
        if name is None or not all(_IDENTIFIER.fullmatch(part) for part in name) or not _is_builtin(name):
            continue
        span = _leftmost_span(refr)
        raise RegoLoadError(
            f"{module['source']['file']}:{span['line']}:{span['col']}: {'.'.join(name)} is the name of a "
            "regorus builtin, and defining it would replace the builtin in the whole package; rename it"
        )


def package_path(module: dict[str, Any]) -> tuple[str, ...]:
    """Return the package of ``module`` as a path without ``data``."""
    return _reference_parts(module["ast"]["package"]["refr"]) or ()


def _import_aliases(module: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    """Map each name that an ``import data....`` binds in ``module`` to the imported path without ``data``."""
    source: bytes = module["source"]["contents"].encode("utf-8")
    aliases = {}
    for item in module["ast"]["imports"]:
        target = _reference_parts(item["refr"])
        if target is None or target[0] != "data" or len(target) < 2:
            continue
        alias = item.get("as")
        # The AST keeps only the span of an "as" name; its start and end are byte offsets.
        name = source[alias["start"] : alias["end"]].decode("utf-8") if alias else target[-1]
        aliases[name] = target[1:]
    return aliases


def _calls(tree: Any) -> Iterator[dict[str, Any]]:
    """Yield every ``Call`` expression anywhere in an AST fragment, in no particular order."""
    pending = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            if "Call" in node and isinstance(node["Call"], dict):
                yield node["Call"]
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)


def _position(span: dict[str, int]) -> tuple[int, int]:
    return span["line"], span["col"]


def _leftmost_span(refr: dict[str, Any]) -> dict[str, int]:
    """Return the span of the first name of a reference, where a reader looks for it."""
    fields = next(iter(refr.values()))
    while "refr" in fields:
        fields = next(iter(fields["refr"].values()))
    span: dict[str, int] = fields["span"]
    return span


_builtin_names: dict[tuple[str, ...], bool] = {}


def _is_builtin(name: tuple[str, ...]) -> bool:
    """Return whether ``name`` is a builtin function of regorus, querying regorus once per name.

    The Python package of regorus lists no builtins, so a query calls the
    function with an undefined argument. regorus looks the name up before it
    looks at the arguments, and skips a builtin whose argument is undefined.
    Any result other than "could not find function" counts as a builtin, so a
    change of that message in regorus can only let an unknown name through to
    evaluation, which reports the error when it reaches the call.
    """
    if name == ("print",):
        return True
    if not all(_IDENTIFIER.fullmatch(part) for part in name):
        return True
    if name not in _builtin_names:
        probe = regorus.Engine()
        probe.set_gather_prints(True)
        try:
            probe.eval_query(f"{'.'.join(name)}(input)")
            known = True
        except RuntimeError as error:
            known = _UNKNOWN_FUNCTION_MESSAGE not in str(error)
        _builtin_names[name] = known
    return _builtin_names[name]


# Coverage

# Child expressions per expression kind, as regorus's traverse() visits them. A call's
# function name is not an expression that is evaluated, so only its arguments count.
_EXPRESSION_CHILDREN = {
    "Array": ("items",),
    "Set": ("items",),
    "Call": ("params",),
    "UnaryExpr": ("expr",),
    "RefDot": ("refr",),
    "RefBrack": ("refr", "index"),
    "BinExpr": ("lhs", "rhs"),
    "BoolExpr": ("lhs", "rhs"),
    "ArithExpr": ("lhs", "rhs"),
    "AssignExpr": ("lhs", "rhs"),
    "OrExpr": ("lhs", "rhs"),
    "Membership": ("key", "value", "collection"),
}
_COMPREHENSIONS = ("ArrayCompr", "SetCompr", "ObjectCompr")


def coverable_lines(module: dict[str, Any]) -> set[int]:
    """Return the lines that regorus's coverage report would list for ``module`` (its AST).

    These are the lines of rule values, partial set keys, default values and
    body expressions, as regorus 0.13.0 collects them in
    ``Interpreter::get_coverage_report``. regorus reports them only for a file
    it evaluated, so this gives the lines of a file that no test reached.
    """
    lines: set[int] = set()
    for rule in module["rules"]:
        if "Default" in rule:
            _add_expression_lines(rule["Default"]["value"], lines)
            continue
        spec = rule["Spec"]
        head_kind, head = next(iter(spec["head"].items()))
        if head_kind in ("Compr", "Func") and head.get("assign"):
            _add_expression_lines(head["assign"]["value"], lines)
        elif head_kind == "Set" and head.get("key"):
            _add_expression_lines(head["key"], lines)
        for body in spec["bodies"]:
            _add_query_lines(body["query"], lines)
    return lines


def _add_query_lines(query: dict[str, Any], lines: set[int]) -> None:
    # As in regorus, "some x" declarations, the key of "some k, v in" and "with" modifiers are not counted.
    for statement in query["stmts"]:
        kind, literal = next(iter(statement["literal"].items()))
        if kind == "SomeIn":
            _add_expression_lines(literal["value"], lines)
            _add_expression_lines(literal["collection"], lines)
        elif kind in ("Expr", "NotExpr"):
            _add_expression_lines(literal["expr"], lines)
        elif kind == "Every":
            _add_expression_lines(literal["domain"], lines)
            _add_query_lines(literal["query"], lines)


def _add_expression_lines(expression: dict[str, Any], lines: set[int]) -> None:
    pending = [expression]
    while pending:
        kind, node = next(iter(pending.pop().items()))
        if kind in _COMPREHENSIONS:
            # regorus counts the comprehension's body, not its term or the comprehension itself.
            _add_query_lines(node["query"], lines)
            continue
        lines.add(int(node["span"]["line"]))
        if kind == "Object":
            for _, key, value in node["fields"]:
                pending.extend((key, value))
            continue
        for child_field in _EXPRESSION_CHILDREN.get(kind, ()):
            child = node.get(child_field)
            if isinstance(child, list):
                pending.extend(child)
            elif child is not None:
                pending.append(child)
