"""1. A save of a record no rule watches: extra SQL queries, and time against no automation.

The record's organization has no rules; another organization has a rule watching the same model
and event (so the rule index is not empty). The baseline is the same save with the automation
receivers disconnected (automation.signals.disconnect()). Saves alternate between the two in many
short rounds, and each side's time is its fastest round: the receivers cost a few microseconds on
a save of hundreds, and on a shared machine any one round can be slowed by a neighbour far more
than that, while the fastest round of each side is the save's own cost (as `timeit` advises).
"""

from django.db import connection
from django.test.utils import CaptureQueriesContext

from automation import signals
from bench import data
from bench.stats import Row, median, timed


def _saves(product, count: int) -> None:
    for _ in range(count):
        product.stock += 1
        product.save()


def _queries(product) -> int:
    with CaptureQueriesContext(connection) as captured:
        _saves(product, 1)
    return len(captured.captured_queries)


def run(ctx) -> list[Row]:
    rounds, per_round = ctx.size((150, 30), (40, 30), (2, 5))
    org = data.organization("b1")
    watched = data.organization("b1-watched")
    data.event_rule(watched)
    product = data.products(org, 1)[0]
    _saves(product, 20)  # warm up: index built, connection open, statements cached

    with_automation = _queries(product)
    signals.disconnect()
    try:
        without = _queries(product)
    finally:
        signals.connect()

    on_times, off_times = [], []
    for index in range(rounds):
        # Alternate which side goes first, so neither always runs on a warmer cache.
        order = (True, False) if index % 2 == 0 else (False, True)
        times = {}
        for connected in order:
            if not connected:
                signals.disconnect()
            try:
                times[connected] = timed(lambda: _saves(product, per_round)) / per_round
            finally:
                signals.connect()
        on_times.append(times[True])
        off_times.append(times[False])

    ratio = min(on_times) / min(off_times)
    extra = with_automation - without
    return [
        Row(
            bench=1,
            name="unwatched save: extra SQL queries",
            value=extra,
            unit="queries",
            goal="0",
            ok=extra == 0,
            detail=f"{with_automation} with automation, {without} without",
        ),
        Row(
            bench=1,
            name="unwatched save: time vs receivers disconnected",
            value=round(ratio, 3),
            unit="x",
            goal="<= 1.05x",
            ok=ratio <= 1.05,
            detail=(
                f"{min(on_times) * 1e6:.0f} us vs {min(off_times) * 1e6:.0f} us per save "
                f"(fastest of {rounds} rounds x {per_round}; medians {median(on_times) * 1e6:.0f} "
                f"vs {median(off_times) * 1e6:.0f} us)"
            ),
        ),
    ]
