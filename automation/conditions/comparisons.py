"""Comparisons shared by the conditions on a record's fields (operators.py) and on a WEBHOOK
run's payload (payload.py): the orderings, the text operators, bounded REGEX searches, and how a
value's JSON type is named in messages."""

from django.conf import settings
from django.core.exceptions import ValidationError

from automation.conditions.tree import ConditionError
from automation.core.choices import Operator
from automation.core.validators import compile_regex

ORDERING = {
    Operator.GREATER_THAN: lambda a, b: a > b,
    Operator.GREATER_THAN_OR_EQUAL: lambda a, b: a >= b,
    Operator.LESS_THAN: lambda a, b: a < b,
    Operator.LESS_THAN_OR_EQUAL: lambda a, b: a <= b,
}

TEXT = {
    Operator.CONTAINS: lambda a, b: b in a,
    Operator.NOT_CONTAINS: lambda a, b: b not in a,
    Operator.ICONTAINS: lambda a, b: b.casefold() in a.casefold(),
    Operator.STARTS_WITH: lambda a, b: a.startswith(b),
    Operator.ENDS_WITH: lambda a, b: a.endswith(b),
}


def regex_test(pattern: str, actual_of):
    """A search with RE2 (linear time, see validators.compile_regex), refused when the match
    could cost more than AUTOMATION_REGEX_MAX_STEPS: RE2's slowest path visits every instruction
    of the program once per byte of text, so (program size x text length) bounds its work.
    """
    try:
        compiled = compile_regex(pattern)
    except ValidationError as exc:
        raise ConditionError(" ".join(exc.messages)) from None
    program_size = _program_size(compiled)
    max_steps = settings.AUTOMATION_REGEX_MAX_STEPS

    def test(actual):
        if actual is None:
            return False
        text = actual_of(actual)
        if program_size * len(text.encode()) > max_steps:
            raise ConditionError(
                f"The text ({len(text)} characters) is too long for this regular expression: "
                f"matching it could take more than {max_steps} steps "
                "(AUTOMATION_REGEX_MAX_STEPS). Use a simpler pattern."
            )
        return compiled.search(text) is not None

    return test


def _program_size(compiled) -> int:
    """The larger of RE2's forward and reverse programs (a search may run either)."""
    program = compiled._regexp  # google-re2 keeps the RE2 object here (pinned version)
    return max(program.ProgramSize(), program.ReverseProgramSize())


def json_type(value) -> str:
    return {
        bool: "true/false",
        int: "a number",
        float: "a number",
        str: "text",
        list: "a list",
        dict: "an object",
    }.get(type(value), type(value).__name__)
