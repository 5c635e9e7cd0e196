"""Small statistics and the result rows every benchmark returns."""

import statistics
import time
from dataclasses import asdict, dataclass


def percentile(values, fraction: float) -> float:
    """The nearest-rank percentile (0 < fraction <= 1) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.4999)))
    return ordered[rank - 1]


def median(values) -> float:
    return statistics.median(values)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def wait_until(predicate, timeout: float, interval: float = 0.005, what: str = "condition"):
    """Poll `predicate` until true; TimeoutError (with `what`) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Row:
    """One figure of the table. `value` is the headline (a ratio when unit is "x")."""

    bench: int
    name: str
    value: float
    unit: str  # "x" for ratios, otherwise the unit of an absolute figure
    goal: str = ""
    ok: bool | None = None  # None: no goal
    detail: str = ""
    mode: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def ratio_row(bench, name, value, baseline, goal_max=None, detail="", fmt=ms) -> Row:
    """A ratio value / baseline, judged against `goal_max` when given."""
    ratio = value / baseline if baseline else float("inf")
    return Row(
        bench=bench,
        name=name,
        value=round(ratio, 3),
        unit="x",
        goal=f"<= {goal_max}x" if goal_max is not None else "",
        ok=(ratio <= goal_max) if goal_max is not None else None,
        detail=detail or f"{fmt(value)} vs {fmt(baseline)}",
    )
