"""Template rendering for action parameters: "{{ expression }}" placeholders over the run's JSON
context.

Why a tiny language of our own rather than Django/Jinja templates: parameters are JSON and must
stay JSON. A string that is exactly one placeholder ("{{ results.0.id }}") is replaced by the
value itself, keeping its JSON type (int, dict, null...), so an action can pass an id or a whole
object on. A placeholder inside text ("Product {{ object.name }} is out") is formatted as text:
strings as they are, everything else as compact JSON (None -> "null", True -> "true",
{"a": 1} -> '{"a":1}'). No attribute access on live objects, no loops: the variables are plain
JSON (snapshots), so rendering can never reach the database or a secret.

A placeholder holds an expression (expressions.py): a dotted path or a literal, arithmetic on
numbers and filters with literal arguments (filters.py), `{{ object.price * 2 | round(1) }}`.
A placeholder that does not resolve raises TemplateError naming the path (unless a `default`
filter gives a value instead): an action never runs with a silently empty value. There is no
escape for a literal "{{" in a templated parameter.

Paths are dotted: "object.category", "changes.status.new", "results.0.id". A dict is entered by
key, a list by a decimal index.

What placeholders produce can be bounded by a RenderBudget: a placeholder may repeat an earlier
action's result, which may repeat the one before it, so a rule's output could multiply with each
action (a 10-byte value became a 55 MB notification in one dry run). Each substitution is counted
before it is added, and a filter that builds text checks the budget before building it, so a
runaway template stops before its text exists.
"""

import datetime
import difflib
import json
import re
from dataclasses import dataclass, field

from automation.actions import expressions, filters
from automation.actions import template_types as kinds
from automation.actions.expressions import ExpressionError
from automation.actions.filters import FILTERS, Env, FilterError
from automation.core.context import TEMPLATE_VARIABLES

# The variables RunContext.template_variables() provides; a placeholder must start with one.
ROOT_VARIABLES = TEMPLATE_VARIABLES
# What a placeholder may read below `rule`; `event`, `trigger`, `now` and `now_local` are single
# values.
RULE_KEYS = ("id", "name")
SINGLE_VALUES = ("event", "trigger", "now", "now_local")
# A change is {"old": .., "new": ..}.
CHANGE_SIDES = ("old", "new")

_PLACEHOLDER = re.compile(r"\{\{([^{}]*)\}\}")


class TemplateError(ValueError):
    """A placeholder that is malformed, does not resolve or cannot be computed; the message
    names it."""


class Unresolved(TemplateError):
    """A path that does not resolve in this run (a `default` filter may stand in for it)."""


class RenderBudget:
    """How many bytes placeholders may produce (UTF-8, values as compact JSON); TemplateError
    with `message` once they produce more. The literal text around them is not counted: it is
    part of the stored parameters, which are bounded already."""

    def __init__(self, limit: int, message: str):
        self.limit = limit
        self.message = message
        self.used = 0

    def spend(self, size: int) -> None:
        self.used += size
        if self.used > self.limit:
            raise TemplateError(self.message)


def render(value, variables: dict, budget: RenderBudget | None = None, zone=None):
    """`value` with every placeholder in its strings replaced (recursively through dicts/lists).
    `zone`: the rule's time zone (a tzinfo), in which dates are shown and shifted; UTC if None."""
    if isinstance(value, str):
        return render_string(value, variables, budget, zone)
    if isinstance(value, dict):
        return {key: render(item, variables, budget, zone) for key, item in value.items()}
    if isinstance(value, list):
        return [render(item, variables, budget, zone) for item in value]
    return value


def render_text(value, variables: dict, budget: RenderBudget | None = None, zone=None) -> str:
    """Render and always return text (a notification title stays a string even when the template
    is a single placeholder of a number)."""
    rendered = render(value, variables, budget, zone)
    return rendered if isinstance(rendered, str) else format_text(rendered)


def render_string(template: str, variables: dict, budget: RenderBudget | None = None, zone=None):
    _check_braces(template)

    def value_of(match: re.Match):
        left = filters.Env().max_chars if budget is None else budget.limit - budget.used
        env = Env(zone=zone or datetime.UTC, max_chars=max(left, 0))
        node = _expression_of(match)
        try:
            return evaluate(node, variables, env)
        except FilterError as exc:
            raise TemplateError(f"In '{match.group(0)}': {exc}") from None

    whole = _PLACEHOLDER.fullmatch(template)
    if whole:
        value = value_of(whole)
        if budget is not None:
            budget.spend(len(format_text(value).encode()))
        return value

    def substitute(match: re.Match) -> str:
        text = format_text(value_of(match))
        if budget is not None:
            budget.spend(len(text.encode()))
        return text

    return _PLACEHOLDER.sub(substitute, template)


def evaluate(node: expressions.Node, variables: dict, env: Env):
    """The value of a parsed placeholder (FilterError, TemplateError when it has none)."""
    if isinstance(node, expressions.Path):
        return resolve(node.path, variables)
    if isinstance(node, expressions.Literal):
        return node.value
    if isinstance(node, expressions.Negative):
        return filters.negative(evaluate(node.operand, variables, env), node.operand.source)
    if isinstance(node, expressions.Arithmetic):
        left = evaluate(node.left, variables, env)
        right = evaluate(node.right, variables, env)
        return filters.arithmetic(node.operator, left, right, node.left.source, node.right.source)
    spec = FILTERS.get(node.name)
    message = _filter_error(node)
    if message:
        raise FilterError(message)
    try:
        value = evaluate(node.operand, variables, env)
    except Unresolved:
        if spec.name != "default":
            raise
        value = None
    return spec.apply(value, node.arguments, env, node.operand.source)


def format_text(value) -> str:
    """How a value reads inside text: strings as is, anything else as compact JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def resolve(path: str, variables: dict):
    """The value at dotted `path`; TemplateError when some part is missing."""
    parts = path.split(".")
    if parts[0] not in variables:
        raise Unresolved(f"Unknown template variable '{path}'.")
    current = variables[parts[0]]
    for depth, part in enumerate(parts[1:], start=1):
        walked = ".".join(parts[:depth])
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        elif current is None:
            raise Unresolved(f"Template variable '{path}' does not resolve: '{walked}' is null.")
        else:
            raise Unresolved(
                f"Template variable '{path}' does not resolve: '{walked}' has no '{part}'."
            )
    return current


@dataclass(frozen=True)
class TemplateScope:
    """What the placeholders of one action of a rule can read, for the save-time check.

    `has_record`: whether runs of the rule have a record (a rule without a model has none, so
    no `object` or `changes.<name>`). `fields`: the names a snapshot of that record has
    (`object.<name>`, `changes.<name>`), None when not known (not checked); `label` names the
    model in messages; `value_fields`: those whose values are JSON objects, which a path may
    enter further. `action_order`: the action's position (`results.N` exists only for earlier
    actions), None when not known. `has_payload`: whether its runs have a payload (WEBHOOK
    rules'), which is any JSON object, so nothing below `payload` is checked. `field_kinds`:
    the kind of each field's value (template_types.py), for what placeholders give.
    """

    has_record: bool = True
    has_payload: bool = False
    fields: frozenset[str] | None = None
    label: str = ""
    value_fields: frozenset[str] = frozenset()
    action_order: int | None = None
    field_kinds: dict = field(default_factory=dict, compare=False)

    def kind_of(self, path: str) -> str:
        """The kind of value `path` gives in this rule's runs (ANY when it cannot be known)."""
        root, *parts = path.split(".")
        if root == "object" and not self.has_record:
            return kinds.NULL
        if root in ("object", "changes", "rule", "results") and not parts:
            return kinds.OBJECT
        if root in ("now", "now_local") and not parts:
            return kinds.DATETIME
        if root in ("event", "trigger") and not parts:
            return kinds.TEXT
        if root == "rule" and len(parts) == 1:
            return {"id": kinds.NUMBER, "name": kinds.TEXT}.get(parts[0], kinds.ANY)
        if root == "object" and len(parts) == 1:
            return self.field_kinds.get(parts[0], kinds.ANY)
        if root == "changes" and len(parts) == 1:
            return kinds.OBJECT
        if root == "changes" and len(parts) == 2 and parts[1] in CHANGE_SIDES:
            return self.field_kinds.get(parts[0], kinds.ANY)
        return kinds.ANY

    def path_error(self, path: str) -> str | None:
        """Why `path` (root known) cannot resolve in a run of this rule, or None."""
        root, *parts = path.split(".")
        if root in SINGLE_VALUES and parts:
            return f"'{root}' is a single value: '{path}' does not resolve."
        if root == "rule" and parts and parts[0] not in RULE_KEYS:
            return f"Template variable '{path}' does not resolve: 'rule' has {_listed(RULE_KEYS)}."
        if root == "results":
            return self._results_error(path, parts)
        if root in ("object", "changes"):
            return self._record_error(path, root, parts)
        if root == "payload" and not self.has_payload:
            return (
                f"Only the runs of WEBHOOK rules have a payload: '{path}' does not resolve in "
                "this rule's runs."
            )
        return None

    def _results_error(self, path: str, parts: list[str]) -> str | None:
        if not parts or self.action_order is None:
            return None
        index = parts[0]
        if index.isdigit() and int(index) < self.action_order:
            return None
        if self.action_order == 0:
            return (
                f"Template variable '{path}' does not resolve: 'results.N' is the result of an "
                "earlier action, and this is the rule's first action."
            )
        return (
            f"Template variable '{path}' does not resolve: 'results.N' is the result of an "
            f"earlier action (here results.0 to results.{self.action_order - 1})."
        )

    def _record_error(self, path: str, root: str, parts: list[str]) -> str | None:
        if root == "changes" and not parts:
            return None  # every run has changes, if only {}
        if not self.has_record:
            return f"This rule has no model, so its runs have no record: '{path}' does not resolve."
        if not parts or self.fields is None:
            return None
        name, rest = parts[0], parts[1:]
        if name not in self.fields:
            close = difflib.get_close_matches(name, sorted(self.fields), n=3)
            hint = f" Did you mean {_listed(close, 'or')}?" if close else ""
            if "-" in name:
                hint += " (To subtract, write spaces around '-'.)"
            return (
                f"Template variable '{path}' does not resolve: {self.label} has no readable "
                f"field '{name}'.{hint}"
            )
        if root == "changes":
            if not rest:
                return None
            if rest[0] not in CHANGE_SIDES:
                return (
                    f"Template variable '{path}' does not resolve: a change has "
                    f"{_listed(CHANGE_SIDES)}."
                )
            rest = rest[1:]
        if rest and name not in self.value_fields:
            return f"Template variable '{path}' does not resolve: '{name}' is a single value."
        return None


def _listed(names, conjunction: str = "and") -> str:
    quoted = [f"'{name}'" for name in names]
    if len(quoted) < 2:
        return "".join(quoted)
    return f"{', '.join(quoted[:-1])} {conjunction} {quoted[-1]}"


def placeholder_errors(value, scope: TemplateScope | None = None) -> list[str]:
    """Save-time check of every string in `value`: placeholders well formed, roots known,
    filters known with fitting arguments, and, given the action's `scope`, paths that exist in
    its runs' context and values of the kinds their filters and operators take."""
    errors: list[str] = []
    for text in _strings(value):
        try:
            _check_braces(text)
        except TemplateError as exc:
            errors.append(str(exc))
            continue
        for match in _PLACEHOLDER.finditer(text):
            try:
                node = _expression_of(match)
            except TemplateError as exc:
                errors.append(str(exc))
                continue
            found = list(_path_errors(node, scope))
            within = list(_filter_errors(node))
            if not found and not within:
                _static_kind(node, scope, within)
            errors += found + [f"In '{match.group(0)}': {message}" for message in within]
    return errors


def placeholder_kind(value, scope: TemplateScope | None) -> str | None:
    """The kind of value a string that is exactly one placeholder gives (template_types.py);
    None for anything else, or a placeholder that does not parse."""
    whole = _PLACEHOLDER.fullmatch(value) if isinstance(value, str) else None
    if whole is None:
        return None
    try:
        node = _expression_of(whole)
    except TemplateError:
        return None
    if any(_filter_errors(node)):
        return None
    return _static_kind(node, scope, [])


def _path_errors(node, scope: TemplateScope | None):
    for part in expressions.walk(node):
        if not isinstance(part, expressions.Path):
            continue
        path = part.path
        if path.split(".")[0] not in ROOT_VARIABLES:
            yield (
                f"Unknown template variable '{path}': a placeholder starts with one of "
                f"{', '.join(ROOT_VARIABLES)}."
            )
        elif scope is not None:
            message = scope.path_error(path)
            if message:
                yield message


def _filter_errors(node):
    for part in expressions.walk(node):
        if isinstance(part, expressions.Filter):
            message = _filter_error(part)
            if message:
                yield message


def _filter_error(node: expressions.Filter) -> str | None:
    """An unknown filter (with close names), or arguments that do not fit it."""
    spec = FILTERS.get(node.name)
    if spec is None:
        close = difflib.get_close_matches(node.name, sorted(FILTERS), n=3)
        hint = f" Did you mean {_listed(close, 'or')}?" if close else ""
        return f"Unknown filter '{node.name}': filters are {', '.join(sorted(FILTERS))}.{hint}"
    return spec.arguments_error(node.arguments)


def _static_kind(node, scope: TemplateScope | None, errors: list[str]) -> str:
    """The kind of value `node` gives (template_types.py), adding to `errors` each filter or
    operator that cannot apply to the kind of value it is given, when that kind is known."""
    if isinstance(node, expressions.Path):
        return scope.kind_of(node.path) if scope is not None else kinds.ANY
    if isinstance(node, expressions.Literal):
        return kinds.of_value(node.value)
    if isinstance(node, expressions.Negative | expressions.Arithmetic):
        operator = "-" if isinstance(node, expressions.Negative) else node.operator
        operands = (
            [node.operand] if isinstance(node, expressions.Negative) else [node.left, node.right]
        )
        for operand in operands:
            kind = _static_kind(operand, scope, errors)
            if kind not in kinds.NUMERIC | {kinds.ANY}:
                errors.append(
                    f"'{operator}' applies to numbers; '{operand.source}' gives "
                    f"{kinds.DESCRIBED[kind]}."
                )
        if operator == "/" and _is_zero(node.right):
            errors.append(f"Division by zero: '{node.right.source}' is 0.")
        return kinds.NUMBER
    spec = FILTERS[node.name]
    kind = _static_kind(node.operand, scope, errors)
    if spec.name == "default":
        fallback = kinds.of_value(node.arguments[0])
        return fallback if kind in (fallback, kinds.NULL) else kinds.ANY
    if kind != kinds.ANY and kind not in spec.accepts:
        errors.append(
            f"{spec.name} applies to {spec.needs}; '{node.operand.source}' gives "
            f"{kinds.DESCRIBED[kind]}."
        )
        return spec.result(kinds.ANY, node.arguments)
    message = spec.combined_error(kind, node.arguments, node.operand.source)
    if message:
        errors.append(message)
    return spec.result(kind, node.arguments)


def _is_zero(node) -> bool:
    while isinstance(node, expressions.Negative):
        node = node.operand
    return isinstance(node, expressions.Literal) and filters.number_of(node.value) == 0


def has_placeholder(value) -> bool:
    return any("{{" in text for text in _strings(value))


def _expression_of(match: re.Match) -> expressions.Node:
    try:
        return expressions.parse(match.group(1))
    except ExpressionError as exc:
        raise TemplateError(f"Malformed placeholder '{match.group(0)}': {exc}") from None


def _check_braces(text: str) -> None:
    # Every "{{" must be closed; an unclosed one is a typo, never literal text.
    remainder = _PLACEHOLDER.sub("", text)
    if "{{" in remainder:
        raise TemplateError(f"Unclosed placeholder in '{text}': '{{{{' without '}}}}'.")


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
