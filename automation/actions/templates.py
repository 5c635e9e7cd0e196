"""Template rendering for action parameters: "{{ path }}" placeholders over the run's JSON context.

Why a tiny language of our own rather than Django/Jinja templates: parameters are JSON and must
stay JSON. A string that is exactly one placeholder ("{{ results.0.id }}") is replaced by the
value itself, keeping its JSON type (int, dict, null...), so an action can pass an id or a whole
object on. A placeholder inside text ("Product {{ object.name }} is out") is formatted as text:
strings as they are, everything else as compact JSON (None -> "null", True -> "true",
{"a": 1} -> '{"a":1}'). No filters, no expressions, no attribute access on live objects: the
variables are plain JSON (snapshots), so rendering can never reach the database or a secret.

A placeholder that does not resolve raises TemplateError naming the path: an action never runs
with a silently empty value. There is no escape for a literal "{{" in a templated parameter.

Paths are dotted: "object.category", "changes.status.new", "results.0.id". A dict is entered by
key, a list by a decimal index.

What placeholders produce can be bounded by a RenderBudget: a placeholder may repeat an earlier
action's result, which may repeat the one before it, so a rule's output could multiply with each
action (a 10-byte value became a 55 MB notification in one dry run). Each substitution is counted
before it is added, so a runaway template stops before its text exists.
"""

import difflib
import json
import re
from dataclasses import dataclass

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
_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_-]+)*")


class TemplateError(ValueError):
    """A placeholder that is malformed or does not resolve; the message names it."""


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


def render(value, variables: dict, budget: RenderBudget | None = None):
    """`value` with every placeholder in its strings replaced (recursively through dicts/lists)."""
    if isinstance(value, str):
        return render_string(value, variables, budget)
    if isinstance(value, dict):
        return {key: render(item, variables, budget) for key, item in value.items()}
    if isinstance(value, list):
        return [render(item, variables, budget) for item in value]
    return value


def render_text(value, variables: dict, budget: RenderBudget | None = None) -> str:
    """Render and always return text (a notification title stays a string even when the template
    is a single placeholder of a number)."""
    rendered = render(value, variables, budget)
    return rendered if isinstance(rendered, str) else format_text(rendered)


def render_string(template: str, variables: dict, budget: RenderBudget | None = None):
    _check_braces(template)
    whole = _PLACEHOLDER.fullmatch(template)
    if whole:
        value = resolve(_path_of(whole), variables)
        if budget is not None:
            budget.spend(len(format_text(value).encode()))
        return value

    def substitute(match: re.Match) -> str:
        text = format_text(resolve(_path_of(match), variables))
        if budget is not None:
            budget.spend(len(text.encode()))
        return text

    return _PLACEHOLDER.sub(substitute, template)


def format_text(value) -> str:
    """How a value reads inside text: strings as is, anything else as compact JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def resolve(path: str, variables: dict):
    """The value at dotted `path`; TemplateError when some part is missing."""
    parts = path.split(".")
    if parts[0] not in variables:
        raise TemplateError(f"Unknown template variable '{path}'.")
    current = variables[parts[0]]
    for depth, part in enumerate(parts[1:], start=1):
        walked = ".".join(parts[:depth])
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        elif current is None:
            raise TemplateError(f"Template variable '{path}' does not resolve: '{walked}' is null.")
        else:
            raise TemplateError(
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
    rules'), which is any JSON object, so nothing below `payload` is checked.
    """

    has_record: bool = True
    has_payload: bool = False
    fields: frozenset[str] | None = None
    label: str = ""
    value_fields: frozenset[str] = frozenset()
    action_order: int | None = None

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
    """Save-time check of every string in `value`: placeholders well formed, roots known, and,
    given the action's `scope`, paths that exist in its runs' context."""
    errors: list[str] = []
    for text in _strings(value):
        try:
            _check_braces(text)
        except TemplateError as exc:
            errors.append(str(exc))
            continue
        for match in _PLACEHOLDER.finditer(text):
            try:
                path = _path_of(match)
            except TemplateError as exc:
                errors.append(str(exc))
                continue
            root = path.split(".")[0]
            if root not in ROOT_VARIABLES:
                errors.append(
                    f"Unknown template variable '{path}': a placeholder starts with one of "
                    f"{', '.join(ROOT_VARIABLES)}."
                )
            elif scope is not None:
                message = scope.path_error(path)
                if message:
                    errors.append(message)
    return errors


def has_placeholder(value) -> bool:
    return any("{{" in text for text in _strings(value))


def _path_of(match: re.Match) -> str:
    path = match.group(1).strip()
    if not _PATH.fullmatch(path):
        raise TemplateError(
            f"Malformed placeholder '{match.group(0)}': expected a dotted path such as "
            "'{{ object.name }}'."
        )
    return path


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
