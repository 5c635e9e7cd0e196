"""A noisy tenant against a quiet one, on a real embedded `manage.py serve` (issue 17, item 12):
`python -m bench.noisy_tenant [--seconds S] [--pause P]`. Not part of `python -m bench`.

Organization B has the benchmark rule (1 condition, 1 UPDATE_RECORD) and updates a product's
stock with `updateProduct` over HTTP, one request at a time; its latency is measured alone (the
baseline), then while organization A's writes keep firing a rule of 198 slow but legal REGEX
conditions (99 OR groups of 2; each RE2 match costs about 80 million steps, under
AUTOMATION_REGEX_MAX_STEPS, about 0.5 s here). A's writes are `updateProduct` requests too, at
a steady rate (--noisy-rate, 2 a second: more than the workers can evaluate without a CPU budget,
so runs wait and the workers never idle; the same writes with the budget). Prints B's p50 and
p95 in both phases, and what A's runs ended as.

Its data lives in var/bench-noisy/embedded (wiped at the start), apart from the benchmarks'.
"""

import argparse
import asyncio
import collections
import os
import threading
import time
from pathlib import Path

import httpx

from bench import env as bench_env

SLOW = {"field": "description", "operator": "REGEX", "value": "(?:[a-z]+ ?){1000}!"}
UNFINISHED = ("PENDING", "RUNNING")
WINDOW = 60  # the condition CPU budget's window (automation/conditions/cpu_budget.py)


def setup() -> dict:
    os.environ.setdefault("BENCH_DATA_DIR", str(bench_env.REPO_ROOT / "var" / "bench-noisy"))
    environment = bench_env.environment(bench_env.EMBEDDED)
    os.environ.update(environment)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    bench_env.reset_storage(bench_env.EMBEDDED, environment)
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)
    return environment


def noisy_organization():
    """(organization, token, products): A's rule of 198 slow REGEX leaves, products it matches
    slowly (20,000 characters of description)."""
    from automation.rules.services import create_rule
    from bench import data
    from catalog.models import Product

    org = data.organization("noisy-a")
    user, token = data.member_with_token(org)
    create_rule(
        org,
        {
            "name": "198 slow regexes",
            "trigger_type": "EVENT",
            "model": "catalog.product",
            "trigger_event": "UPDATED",
            "watched_fields": ["stock"],
            "conditions": {"logic": "OR", "groups": [{"conditions": [SLOW, SLOW]}] * 99},
            "actions": [data.UPDATE_DESCRIPTION],
        },
        user=user,
    )
    products = data.products(org, 20)
    Product.objects.filter(pk__in=[p.pk for p in products]).update(description="a" * 20_000)
    return org, token, products


def quiet_organization():
    """(token, product) of B, with the benchmark rule."""
    from bench.live import setup_data

    _org, token, product, _rule = setup_data("quiet-b")
    return token, product


def noisy_writer(base_url: str, token: str, products, rate: float, stop: threading.Event, count):
    """A's writes: `rate` updateProduct requests a second, until `stop`."""
    from bench.live import UPDATE_PRODUCT

    headers = {"Authorization": f"Bearer {token}"}
    started = time.monotonic()
    with httpx.Client(base_url=base_url, timeout=60) as client:
        while not stop.is_set():
            due = started + count[0] / rate
            if time.monotonic() < due:
                stop.wait(due - time.monotonic())
                continue
            product = products[count[0] % len(products)]
            count[0] += 1
            variables = {"id": str(product.pk), "input": {"stock": 1000 + count[0]}}
            client.post(
                "/graphql/",
                json={"query": UPDATE_PRODUCT, "variables": variables},
                headers=headers,
            )


async def quiet_latencies(base_url: str, token: str, product, seconds: float, pause: float):
    """B's updateProduct round trips (seconds), one at a time for `seconds`."""
    from bench.live import update_stock

    headers = {"Authorization": f"Bearer {token}"}
    times = []
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        for index in range(3):  # warm-up
            await update_stock(client, headers, product, index)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            await asyncio.sleep(pause)
            started = time.perf_counter()
            await update_stock(client, headers, product, 10 + len(times))
            times.append(time.perf_counter() - started)
    return times


def summary(name: str, times: list[float]) -> str:
    from bench.stats import median, percentile

    return (
        f"{name}: p50 {median(times) * 1000:.1f} ms, p95 {percentile(times, 0.95) * 1000:.1f} ms, "
        f"max {max(times) * 1000:.1f} ms ({len(times)} requests)"
    )


def outcomes(org) -> str:
    """A's finished runs by status and the start of their error."""
    from automation.core.models import AutomationLog

    seen = collections.Counter(
        (status, (error or "")[:90])
        for status, error in AutomationLog.objects.filter(rule__organization=org)
        .exclude(status__in=UNFINISHED)
        .values_list("status", "error")
    )
    waiting = AutomationLog.objects.filter(rule__organization=org, status__in=UNFINISHED).count()
    lines = [f"  {count} x {status}: {error}" for (status, error), count in seen.items()]
    return "\n".join([*lines, f"  {waiting} not finished"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.noisy_tenant")
    parser.add_argument("--seconds", type=float, default=60, help="each phase's length (60)")
    parser.add_argument("--pause", type=float, default=0.1, help="between B's requests (0.1)")
    parser.add_argument("--noisy-rate", type=float, default=2, help="A's writes a second (2)")
    args = parser.parse_args(argv)
    environment = setup()
    from django.conf import settings

    from bench.server import Server

    noisy, noisy_token, noisy_products = noisy_organization()
    quiet_token, quiet_product = quiet_organization()
    print(
        "AUTOMATION_CONDITIONS_CPU_SECONDS_PER_MINUTE =",
        getattr(settings, "AUTOMATION_CONDITIONS_CPU_SECONDS_PER_MINUTE", "(none)"),
        "; AUTOMATION_REGEX_MAX_STEPS =",
        settings.AUTOMATION_REGEX_MAX_STEPS,
        flush=True,
    )
    with Server(environment, bench_env.EMBEDDED) as server:
        alone = asyncio.run(
            quiet_latencies(server.base_url, quiet_token, quiet_product, args.seconds, args.pause)
        )
        print(summary("B alone", alone), _load(), flush=True)
        # A starts with a minute (the budget's window), so the phase sees one window whole.
        time.sleep(WINDOW - time.time() % WINDOW)
        stop, count = threading.Event(), [0]
        writer = threading.Thread(
            target=noisy_writer,
            args=(server.base_url, noisy_token, noisy_products, args.noisy_rate, stop, count),
        )
        writer.start()
        cpu_before = _process_cpu(server.process.pid)
        try:
            time.sleep(1)  # A's first runs are under way
            loud = asyncio.run(
                quiet_latencies(
                    server.base_url, quiet_token, quiet_product, args.seconds, args.pause
                )
            )
        finally:
            stop.set()
            writer.join()
        cpu = _process_cpu(server.process.pid) - cpu_before
        print(summary("B beside A", loud), _load(), flush=True)
        print(f"ratio of p50s: {_p50(loud) / _p50(alone):.2f}x", flush=True)
        print(
            f"A: {count[0]} writes; serve used {cpu:.1f} CPU s in "
            f"{args.seconds + 1:.0f} s; A's runs:\n{outcomes(noisy)}",
            flush=True,
        )
    return 0


def _load() -> str:
    """The machine's load (other work on a shared machine moves every figure)."""
    one, five, fifteen = os.getloadavg()
    return f"; load average {one:.1f} {five:.1f} {fifteen:.1f}"


def _p50(times):
    from bench.stats import median

    return median(times)


def _process_cpu(pid: int) -> float:
    """User + system CPU seconds of process `pid` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    raise SystemExit(main())
