"""ISO 8601 durations: the one parser of `[+-]PnYnMnWnDTnHnMnS`, and fixed-length durations.

Three features read durations: relative dates of conditions ("-P7D", conditions/relative_dates.py),
the `add_duration` template filter, and how long a run waits (a rule's `holdFor`, runs/waits.py).
The first two add calendar parts on the wall clock (a month after 31 January is 28 February), so
they keep years and months; a wait is stored as a length of time (a DurationField), so it takes
only the parts that have one: weeks, days, hours, minutes, seconds.

A small strict parser rather than a library: the subset is a regular expression.
"""

import datetime
import decimal
import re
from dataclasses import dataclass

from dateutil.relativedelta import relativedelta

# Each number has at most 9 digits: enough for any real use, and far below what overflows.
DURATION = re.compile(
    r"(?P<sign>[+-])?P(?!$)"
    r"(?:(?P<years>\d{1,9})Y)?(?:(?P<months>\d{1,9})M)?"
    r"(?:(?P<weeks>\d{1,9})W)?(?:(?P<days>\d{1,9})D)?"
    r"(?:T(?=\d)(?:(?P<hours>\d{1,9})H)?(?:(?P<minutes>\d{1,9})M)?"
    r"(?:(?P<seconds>\d{1,9}(?:\.\d{1,6})?)S)?)?"
)


@dataclass(frozen=True)
class Duration:
    sign: int  # +1 or -1
    years: int = 0
    months: int = 0
    weeks: int = 0
    days: int = 0
    hours: int = 0
    minutes: int = 0
    seconds: decimal.Decimal = decimal.Decimal(0)

    @property
    def has_time(self) -> bool:
        return bool(self.hours or self.minutes or self.seconds)

    def calendar_part(self) -> relativedelta:
        return relativedelta(
            years=self.sign * self.years,
            months=self.sign * self.months,
            weeks=self.sign * self.weeks,
            days=self.sign * self.days,
        )

    def time_part(self) -> datetime.timedelta:
        return self.sign * datetime.timedelta(
            hours=self.hours, minutes=self.minutes, seconds=float(self.seconds)
        )


def parse_duration(text: str) -> Duration | None:
    """The signed duration `text` writes (surrounding spaces allowed); None when it is not one."""
    match = DURATION.fullmatch(text.strip())
    if match is None:
        return None
    parts = match.groupdict()
    return Duration(
        sign=-1 if parts.pop("sign") == "-" else 1,
        seconds=decimal.Decimal(parts.pop("seconds") or 0),
        **{name: int(number or 0) for name, number in parts.items()},
    )


def length_of(text, maximum: datetime.timedelta) -> datetime.timedelta:
    """The positive length of time `text` writes, at most `maximum`; ValueError saying what is
    wrong otherwise."""
    if not isinstance(text, str):
        raise ValueError('An ISO 8601 duration is written as text, such as "PT30M".')
    duration = parse_duration(text)
    if duration is None:
        raise ValueError(
            f'{text!r} is not an ISO 8601 duration; write one such as "PT30M" '
            '(30 minutes), "PT2H", "P1D" or "P1DT12H" (parts W, D, then T and H, M, S).'
        )
    if duration.years or duration.months:
        raise ValueError(
            f"{text!r} counts years or months, which have no fixed length; "
            'write days or weeks instead ("P30D", "P4W").'
        )
    if duration.sign < 0:
        raise ValueError(f"{text!r} is not a positive duration.")
    try:
        length = datetime.timedelta(
            weeks=duration.weeks,
            days=duration.days,
            hours=duration.hours,
            minutes=duration.minutes,
            seconds=float(duration.seconds),
        )
    except OverflowError:
        length = None
    if length is not None and length <= datetime.timedelta(0):
        raise ValueError(f"{text!r} is not a positive duration.")
    if length is None or length > maximum:
        raise ValueError(
            f"{text!r} is longer than the longest wait, {iso_duration(maximum)} "
            "(AUTOMATION_MAX_WAIT_SECONDS)."
        )
    return length


def iso_duration(length: datetime.timedelta) -> str:
    """`length` as a short ISO 8601 duration: "PT30M", "P1DT2H", "PT1.5S" (days, never weeks
    or months, which is what `length_of` reads back)."""
    micros = round(length.total_seconds() * 1_000_000)
    sign = "-" if micros < 0 else ""
    micros = abs(micros)
    days, micros = divmod(micros, 86_400_000_000)
    hours, micros = divmod(micros, 3_600_000_000)
    minutes, micros = divmod(micros, 60_000_000)
    seconds = decimal.Decimal(micros) / 1_000_000
    date_part = f"{days}D" if days else ""
    time_part = "".join(
        f"{number}{unit}"
        for number, unit in ((hours, "H"), (minutes, "M"), (_number(seconds), "S"))
        if number
    )
    if not date_part and not time_part:
        time_part = "0S"
    return f"{sign}P{date_part}{'T' + time_part if time_part else ''}"


def _number(value: decimal.Decimal) -> str | int:
    if value == value.to_integral_value():
        return int(value)
    return format(value.normalize(), "f")
