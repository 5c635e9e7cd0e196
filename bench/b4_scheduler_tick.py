"""4. Scheduler tick with 10,000 SCHEDULE rules of which 10 are due, against 100 with 10 due.

The rules (no model, so each due slot is one PENDING run) are bulk inserted: the not-due ones with
next_run_at a year ahead, the due ones every minute. Before each measured tick the due rules'
next_run_at is put back to that tick's minute (not timed), so every tick fires exactly 10 slots,
each a new slot (the unique rule + slot constraint never trips). The queue is flushed afterwards:
nothing consumes these runs.
"""

import datetime
import time

from huey.contrib.djhuey import HUEY

from automation.core.choices import TriggerType
from automation.core.models import AutomationRule
from automation.triggers.schedules import tick
from bench import data
from bench.stats import Row, median

DUE = 10
BASE = data.utc(2030, 1, 1)


def _population(total: int) -> tuple[list[int], datetime.datetime]:
    org = data.organization(f"b4-{total}")
    common = {
        "trigger_type": TriggerType.SCHEDULE,
        "trigger_event": None,
        "content_type": None,
        "tree": False,
    }
    data.bulk_rules(
        org, total - DUE, schedule="0 0 1 1 *", next_run_at=BASE.replace(year=2031), **common
    )
    due = data.bulk_rules(org, DUE, start=total, schedule="* * * * *", next_run_at=BASE, **common)
    return due, BASE


def _ticks(due: list[int], repeats: int, offset_minutes: int) -> list[float]:
    times = []
    for index in range(repeats):
        now = BASE + datetime.timedelta(minutes=offset_minutes + index)
        AutomationRule.objects.filter(pk__in=due).update(next_run_at=now)
        started = time.perf_counter()
        result = tick(now=now)
        times.append(time.perf_counter() - started)
        if result["runs"] != len(due):
            raise RuntimeError(f"tick fired {result['runs']} runs, expected {len(due)}")
    return times


def run(ctx) -> list[Row]:
    large_total, small_total, repeats = ctx.size((10_000, 100, 15), (2_000, 100, 5), (30, 12, 2))
    small_due, _ = _population(small_total)
    large_due, _ = _population(large_total)
    # Both populations live in one table, so the small tick also scans past the large one's rules:
    # move each population's due rules out of the way while the other is measured.
    far = BASE.replace(year=2032)
    small, large = [], []
    AutomationRule.objects.filter(pk__in=large_due).update(next_run_at=far)
    _ticks(small_due, 1, 0)  # warm up
    for round_index in range(repeats):
        minute = 10 + round_index * 2
        AutomationRule.objects.filter(pk__in=large_due).update(next_run_at=far)
        small += _ticks(small_due, 1, minute)
        AutomationRule.objects.filter(pk__in=small_due).update(next_run_at=far)
        large += _ticks(large_due, 1, minute + 1)
    HUEY.flush()
    ratio = median(large) / median(small)
    return [
        Row(
            bench=4,
            name=f"scheduler tick: {large_total} rules vs {small_total} ({DUE} due)",
            value=round(ratio, 3),
            unit="x",
            goal="<= 1.5x",
            ok=ratio <= 1.5,
            detail=f"{median(large) * 1000:.1f} ms vs {median(small) * 1000:.1f} ms per tick",
        )
    ]
