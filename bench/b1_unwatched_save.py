"""1. A save of a record no rule watches: extra SQL queries, and time against no automation.

The record's organization has no rules; another organization has a rule watching the same model
and event (so the rule index is not empty). The baseline is the same save with the automation
receivers disconnected (automation.triggers.signals.disconnect()).

The receivers cost a few microseconds on a save of hundreds, less than this machine's drift from
one run to the next, so the two sides are interleaved finely: many short rounds, alternating
which side goes first, each after a few untimed saves (connecting or disconnecting receivers
empties Django's receiver cache, and the first save after it refills it). The figure is the
ratio of the two sides' median rounds: drift slows both alike, and a round hit by a neighbour
is an outlier the median ignores. (The fastest round of each side, printed too, swung by
+-3 % between runs here.)
"""

from django.db import connection
from django.test.utils import CaptureQueriesContext

from automation.triggers import signals
from bench import data
from bench.stats import Row, median, timed

UNTIMED = 3  # saves after each switch, before the clock starts


def _saves(product, count: int) -> None:
    for _ in range(count):
        product.stock += 1
        product.save()


def _queries(product) -> int:
    with CaptureQueriesContext(connection) as captured:
        _saves(product, 1)
    return len(captured.captured_queries)


def run(ctx) -> list[Row]:
    rounds, per_round = ctx.size((1500, 10), (300, 10), (2, 5))
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
        order = (True, False) if index % 2 == 0 else (False, True)
        for connected in order:
            if not connected:
                signals.disconnect()
            try:
                _saves(product, UNTIMED)
                elapsed = timed(lambda: _saves(product, per_round)) / per_round
            finally:
                signals.connect()
            (on_times if connected else off_times).append(elapsed)

    ratio = median(on_times) / median(off_times)
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
                f"{median(on_times) * 1e6:.0f} us vs {median(off_times) * 1e6:.0f} us per save "
                f"(median of {rounds} interleaved rounds x {per_round}; fastest "
                f"{min(on_times) * 1e6:.0f} vs {min(off_times) * 1e6:.0f} us)"
            ),
        ),
    ]
