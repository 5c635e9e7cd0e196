"""The template filters and arithmetic: what `{{ object.price * 2 | round(1) }}` computes.

Each filter takes the value before it and literal arguments, and is bounded by what it is given:
no filter loops over more than its input, and the texts they build are checked against the
run's render budget before they exist (`Env.max_chars`). Every failure is a FilterError whose
message names the placeholder's part at fault; templates.py turns it into the action's error.

Numbers are exact: arithmetic and `round` work in decimal (0.1 + 0.2 is 0.3), on JSON numbers
and on text that is a plain decimal number (snapshots hold decimal fields as "12.50"). A result
is a JSON number: an integer when it is whole, else a double. Dates are ISO 8601 text, as
snapshots and `now` hold them; date-times without an offset are UTC.
"""

import datetime
import decimal
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from automation.actions import template_types as kinds
from automation.conditions import relative_dates


class FilterError(ValueError):
    """A filter or an operator that cannot apply to its value; the message says why."""


@dataclass(frozen=True)
class Env:
    """What evaluation needs beyond the variables: the rule's time zone (dates are shown and
    shifted in it) and the longest text an expression may build."""

    zone: datetime.tzinfo = datetime.UTC
    max_chars: int = 1024 * 1024


def shown(value) -> str:
    """A value in a message: its kind and its JSON, cut."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    if len(text) > 60:
        text = f"{text[:60]}..."
    return f"{kinds.DESCRIBED[kinds.of_value(value)]} ({text})"


# --- Numbers -------------------------------------------------------------------------------------

_NUMBER_TEXT = re.compile(r"[+-]?\d{1,100}(?:\.\d{1,100})?")
_CONTEXT = decimal.Context(
    prec=28,
    Emax=99_999,
    Emin=-99_999,
    rounding=decimal.ROUND_HALF_EVEN,
    traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow],
)
_LARGEST_INTEGER = 2**63


def number_of(value) -> decimal.Decimal | None:
    """`value` as an exact decimal: a JSON number or text that is a plain decimal number; None
    for anything else (true/false are not numbers)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return decimal.Decimal(value)
    if isinstance(value, float):
        return decimal.Decimal(repr(value)) if math.isfinite(value) else None
    if isinstance(value, str) and _NUMBER_TEXT.fullmatch(value.strip()):
        return decimal.Decimal(value.strip())
    return None


def _number(value, needed_by: str, source: str) -> decimal.Decimal:
    number = number_of(value)
    if number is None:
        raise FilterError(f"{needed_by} applies to numbers; '{source}' is {shown(value)}.")
    return number


def as_json_number(number: decimal.Decimal):
    """A decimal result as a JSON number: an integer when whole, else a double."""
    if number == number.to_integral_value() and abs(number) < _LARGEST_INTEGER:
        return int(number)
    result = float(number)
    if not math.isfinite(result):
        raise FilterError("The result is too large for a number.")
    return result


_OPERATIONS = {
    "+": lambda a, b: _CONTEXT.add(a, b),
    "-": lambda a, b: _CONTEXT.subtract(a, b),
    "*": lambda a, b: _CONTEXT.multiply(a, b),
    "/": lambda a, b: _CONTEXT.divide(a, b),
}


def arithmetic(operator: str, left, right, left_source: str, right_source: str):
    a = _number(left, f"'{operator}'", left_source)
    b = _number(right, f"'{operator}'", right_source)
    if operator == "/" and b == 0:
        raise FilterError(f"Division by zero: '{right_source}' is 0.")
    try:
        return as_json_number(_OPERATIONS[operator](a, b))
    except decimal.DecimalException:
        raise FilterError(f"'{left_source} {operator} {right_source}' is too large.") from None


def negative(value, source: str):
    return as_json_number(-_number(value, "'-'", source))


# --- Dates ---------------------------------------------------------------------------------------

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
# The strftime subset `date` accepts, locale-free (English names); TIME_DIRECTIVES need a time.
DIRECTIVES = {
    "Y": lambda m: f"{m.year:04d}",
    "y": lambda m: f"{m.year % 100:02d}",
    "m": lambda m: f"{m.month:02d}",
    "d": lambda m: f"{m.day:02d}",
    "j": lambda m: f"{m.timetuple().tm_yday:03d}",
    "a": lambda m: _DAYS[m.weekday()][:3],
    "A": lambda m: _DAYS[m.weekday()],
    "b": lambda m: _MONTHS[m.month - 1][:3],
    "B": lambda m: _MONTHS[m.month - 1],
    "H": lambda m: f"{m.hour:02d}",
    "I": lambda m: f"{(m.hour - 1) % 12 + 1:02d}",
    "p": lambda m: "AM" if m.hour < 12 else "PM",
    "M": lambda m: f"{m.minute:02d}",
    "S": lambda m: f"{m.second:02d}",
    "z": lambda m: m.strftime("%z"),
    "Z": lambda m: m.tzname() or "",
    "%": lambda m: "%",
}
TIME_DIRECTIVES = frozenset("HIpMSzZ")
_DIRECTIVE = re.compile(r"%(.?)", re.DOTALL)


def format_error(form: str) -> str | None:
    """Why `form` is not a `date` format, or None."""
    for match in _DIRECTIVE.finditer(form):
        if match.group(1) not in DIRECTIVES:
            listed = " ".join(f"%{name}" for name in DIRECTIVES)
            return f"'%{match.group(1)}' is not a date directive; date() knows {listed}."
    return None


def has_time_directive(form: str) -> bool:
    return any(match.group(1) in TIME_DIRECTIVES for match in _DIRECTIVE.finditer(form))


def moment_of(value, needed_by: str, source: str):
    """An ISO 8601 date (a `date`) or date-time (aware; UTC when it has no offset)."""
    if isinstance(value, str):
        text = value.strip()
        if _DATE.fullmatch(text):
            try:
                return datetime.date.fromisoformat(text)
            except ValueError:
                pass
        else:
            try:
                moment = datetime.datetime.fromisoformat(text)
            except ValueError:
                moment = None
            if moment is not None:
                return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)
    raise FilterError(
        f"{needed_by} applies to ISO 8601 dates and date-times; '{source}' is {shown(value)}."
    )


def _date(value, arguments, env: Env, source: str) -> str:
    form = arguments[0] if arguments else "%Y-%m-%d"
    moment = moment_of(value, "date", source)
    if isinstance(moment, datetime.datetime):
        moment = moment.astimezone(env.zone)
    elif has_time_directive(form):
        raise FilterError(f"'{source}' is a date, with no time for {form!r}.")
    return _DIRECTIVE.sub(lambda match: DIRECTIVES[match.group(1)](moment), form)


def _add_duration(value, arguments, env: Env, source: str) -> str:
    duration = relative_dates.parse(arguments[0])
    moment = moment_of(value, "add_duration", source)
    dated = not isinstance(moment, datetime.datetime)
    if dated and duration.has_time:
        raise FilterError(f"'{source}' is a date: {arguments[0]!r} has hours, minutes or seconds.")
    try:
        if dated:
            return (moment + duration.calendar_part()).isoformat()
        wall = moment.astimezone(env.zone) + duration.calendar_part()
        shifted = wall.astimezone(datetime.UTC) + duration.time_part()
    except (ValueError, OverflowError):
        raise FilterError(
            f"'{source}' shifted by {arguments[0]!r} is outside the calendar (years 1 to 9999)."
        ) from None
    return _like(shifted, value.strip(), moment, env.zone)


def _like(shifted: datetime.datetime, text: str, original: datetime.datetime, zone) -> str:
    """`shifted` written as `text` was: in UTC with "Z", in the rule's zone (whose offset may
    change across DST), or at the original's fixed offset."""
    if text.endswith(("Z", "z")):
        return shifted.isoformat().replace("+00:00", "Z")
    if original.utcoffset() == original.astimezone(zone).utcoffset():
        return shifted.astimezone(zone).isoformat()
    return shifted.astimezone(original.tzinfo).isoformat()


# --- Text, lists, numbers ------------------------------------------------------------------------


def _text(value, name: str, source: str) -> str:
    if not isinstance(value, str):
        raise FilterError(f"{name} applies to text; '{source}' is {shown(value)}.")
    return value


def _case(name: str, change: Callable[[str], str]):
    def apply(value, arguments, env: Env, source: str) -> str:
        result = change(_text(value, name, source))
        _fits(len(result), env, name)
        return result

    return apply


def _fits(size: int, env: Env, name: str) -> None:
    if size > env.max_chars:
        raise FilterError(f"{name} would build {size} characters; at most {env.max_chars} fit.")


def _length(value, arguments, env: Env, source: str) -> int:
    if isinstance(value, str | list | dict):
        return len(value)
    raise FilterError(f"length applies to text, lists and objects; '{source}' is {shown(value)}.")


def _join(value, arguments, env: Env, source: str) -> str:
    if not isinstance(value, list):
        raise FilterError(f"join applies to lists; '{source}' is {shown(value)}.")
    separator = arguments[0] if arguments else ""
    parts = [
        item
        if isinstance(item, str)
        else json.dumps(item, separators=(",", ":"), ensure_ascii=False)
        for item in value
    ]
    _fits(sum(map(len, parts)) + len(separator) * max(len(parts) - 1, 0), env, "join")
    return separator.join(parts)


def _round(value, arguments, env: Env, source: str):
    digits = arguments[0] if arguments else 0
    number = _number(value, "round", source)
    try:
        exponent = decimal.Decimal(1).scaleb(-digits)
        return as_json_number(number.quantize(exponent, rounding=decimal.ROUND_HALF_UP))
    except decimal.DecimalException:
        raise FilterError(f"'{source}' is too large to round to {digits} places.") from None


def _abs(value, arguments, env: Env, source: str):
    return as_json_number(abs(_number(value, "abs", source)))


def _default(value, arguments, env: Env, source: str):
    return arguments[0] if value is None else value


# --- The filters' specifications -----------------------------------------------------------------


def _digits_error(arguments) -> str | None:
    digits = arguments[0]
    if isinstance(digits, bool) or not isinstance(digits, int) or not 0 <= digits <= 10:
        return "its argument is the number of decimal places, a whole number from 0 to 10."
    return None


def _text_argument_error(what: str):
    def check(arguments) -> str | None:
        return None if isinstance(arguments[0], str) else f"its argument is {what}, as text."

    return check


def _format_argument_error(arguments) -> str | None:
    return _text_argument_error("a date format")(arguments) or format_error(arguments[0])


def _duration_argument_error(arguments) -> str | None:
    text = arguments[0]
    if not isinstance(text, str) or text.strip() == relative_dates.NOW:
        return 'its argument is an ISO 8601 duration such as "P7D", "-PT2H" or "P1M".'
    try:
        relative_dates.parse(text)
    except relative_dates.RelativeDateError:
        return (
            f'{text!r} is not an ISO 8601 duration: use a signed duration such as "P7D" '
            '(7 days later), "-PT2H30M" or "P1Y2M" (parts Y, M, W, D, then T and H, M, S).'
        )
    return None


def _same_dated_kind(kind: str, arguments) -> str:
    return kind if kind in (kinds.DATE, kinds.DATETIME) else kinds.TEXT


@dataclass(frozen=True)
class Spec:
    """A filter: its arguments (names, how many are required, their check), the kinds of value
    it applies to (ANY always passes), what it gives, and a check of both together."""

    name: str
    apply: Callable
    accepts: frozenset
    result: Callable[[str, tuple], str]
    arguments: tuple[str, ...] = ()
    required: int = 0
    argument_error: Callable[[tuple], str | None] = lambda arguments: None
    needs: str = ""
    # Why the kind of value and the arguments do not go together (kind, arguments, its source).
    combined_error: Callable[[str, tuple, str], str | None] = field(
        default=lambda kind, arguments, source: None
    )

    def signature(self) -> str:
        return f"{self.name}({', '.join(self.arguments)})" if self.arguments else self.name

    def arguments_error(self, arguments: tuple) -> str | None:
        """Why these literal arguments do not fit the filter, or None."""
        count = len(arguments)
        if not self.required <= count <= len(self.arguments):
            if not self.arguments:
                expected = "no arguments"
            elif self.required == len(self.arguments):
                expected = f"{self.required} argument{'s' if self.required > 1 else ''}"
            else:
                expected = f"at most {len(self.arguments)} argument"
            return f"{self.signature()} takes {expected}, not {count}."
        message = self.argument_error(arguments) if arguments else None
        return f"{self.signature()}: {message}" if message else None


def _date_kind_error(kind: str, arguments, source: str) -> str | None:
    form = arguments[0] if arguments else "%Y-%m-%d"
    if kind == kinds.DATE and has_time_directive(form):
        return f"'{source}' is a date, with no time for {form!r}."
    return None


def _duration_kind_error(kind: str, arguments, source: str) -> str | None:
    if kind == kinds.DATE and arguments and relative_dates.parse(arguments[0]).has_time:
        return f"'{source}' is a date: {arguments[0]!r} has hours, minutes or seconds."
    return None


_ALL = frozenset(kinds.DESCRIBED)
FILTERS = {
    spec.name: spec
    for spec in (
        Spec(
            "default",
            _default,
            _ALL,
            lambda kind, arguments: kind,  # refined by templates.py
            arguments=("value",),
            required=1,
        ),
        Spec(
            "upper", _case("upper", str.upper), kinds.TEXTUAL, lambda *_: kinds.TEXT, needs="text"
        ),
        Spec(
            "lower", _case("lower", str.lower), kinds.TEXTUAL, lambda *_: kinds.TEXT, needs="text"
        ),
        Spec(
            "round",
            _round,
            kinds.NUMERIC,
            lambda *_: kinds.NUMBER,
            arguments=("digits",),
            argument_error=_digits_error,
            needs="numbers",
        ),
        Spec("abs", _abs, kinds.NUMERIC, lambda *_: kinds.NUMBER, needs="numbers"),
        Spec(
            "length",
            _length,
            kinds.TEXTUAL | {kinds.LIST, kinds.OBJECT},
            lambda *_: kinds.NUMBER,
            needs="text, lists and objects",
        ),
        Spec(
            "join",
            _join,
            frozenset({kinds.LIST}),
            lambda *_: kinds.TEXT,
            arguments=("separator",),
            argument_error=_text_argument_error("the separator"),
            needs="lists",
        ),
        Spec(
            "date",
            _date,
            kinds.DATED,
            lambda *_: kinds.TEXT,
            arguments=("format",),
            argument_error=_format_argument_error,
            needs="ISO 8601 dates and date-times",
            combined_error=_date_kind_error,
        ),
        Spec(
            "add_duration",
            _add_duration,
            kinds.DATED,
            _same_dated_kind,
            arguments=("duration",),
            required=1,
            argument_error=_duration_argument_error,
            needs="ISO 8601 dates and date-times",
            combined_error=_duration_kind_error,
        ),
    )
}
