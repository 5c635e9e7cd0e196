"""10. From a GraphQL mutation to its rule's webhook arriving at a local receiver, over http and
https, against what the network and the queue cost on their own (issue 22).

Each mode's documented deployment, as benchmark 5: embedded, `serve` with its in-process
consumer; redis, `serve --no-worker` beside a separate worker process (one thread). Private
networks are allowed to the server and the worker (AUTOMATION_WEBHOOK_ALLOW_PRIVATE_NETWORKS),
so the webhook may call the receiver on 127.0.0.1; the https receiver's certificate comes from a
CA made for the run (trustme, as the tests), which the server and the worker of the https rounds
trust (BENCH_WEBHOOK_CA, bench/receiver.py: TLS_VERIFY set to a context trusting it); the http
rounds run on a server and worker of their own with the production setting (TLS_VERIFY = True,
certifi's trust store). Each round updates a product's stock with the
`updateProduct` mutation, which fires a rule (1 condition, 1 CALL_WEBHOOK posting the product's id
and stock, signed); measured from sending the mutation to the arrival of that stock's webhook at
the receiver (bench/receiver.py, in this process: one clock). Rounds run one at a time with a
short pause between them, as a trickle of writes would.

Measured in the same run:
- the floor: the same mutation with both rules off, to its HTTP response (no webhook can arrive
  before the write that causes it), on each of the two deployments right after its rounds;
- a raw Huey round trip (enqueue -> the task runs, idle consumer with serve's settings), before
  the server starts (its consumer would take the probes), as benchmark 5;
- a raw POST of the same body with `httpx` to the same receiver, one client whose connection is
  kept (what the network costs on this machine).

Goal: what the engine adds to the mutation (webhook p50 - floor p50) at most 2x (raw queue round
trip + raw POST p50), for http and for https (its raw POST over a kept TLS connection).

A reference without a goal, over http, its rounds interleaved with the engine's: the least
webhook run that keeps a record (bench/recorded.py, `recorded_webhook`: a PENDING log written
with the write, a Huey task committing RUNNING before a raw POST on a kept connection, then the
outcome; each state journaled and published), on a product of a second organization without
rules. What it adds to the mutation is what any engine keeping the contract's record and its
at-least-once guarantee pays at the least.
"""

import contextlib
import time

import httpx

from accounts.models import Membership, Role
from bench import data
from bench.env import EMBEDDED, data_dir
from bench.live import queue_round_trips, update_stock_now
from bench.receiver import Receiver, local_tls
from bench.server import SERVE_WITH_HANDWRITTEN, Server
from bench.stats import Row, median, percentile
from bench.worker import start_workers, stop_workers

GOAL_FACTOR = 2  # x (raw queue round trip + raw POST)
PAUSE_SECONDS = 0.2  # between rounds
WAIT_SECONDS = 60  # for one webhook


def _stock_arrived(stock: int):
    return lambda arrivals: any(_stock_of(a) == stock for a in arrivals)


def _stock_of(arrival) -> int | None:
    try:
        return int(arrival.body.get("stock"))
    except (TypeError, ValueError):
        return None


def _webhook_rounds(server, token, products, receiver: Receiver, rounds: int, base: int):
    """Mutation -> the webhook carrying its stock arrived (seconds), `rounds` after 2 warm-ups,
    for each of `products` in turn within a round: a list of times per product."""
    times = [[] for _ in products]
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=30) as client:
        for index in range(rounds + 2):
            for number, product in enumerate(products):
                time.sleep(PAUSE_SECONDS)
                stock = base + index * len(products) + number
                started = time.perf_counter()
                update_stock_now(client, product, stock)
                receiver.wait(_stock_arrived(stock), WAIT_SECONDS, f"the webhook of stock {stock}")
                arrived = next(a.at for a in receiver.arrivals if _stock_of(a) == stock)
                if index >= 2:
                    times[number].append(arrived - started)
    return times


def _floor(server, token, product, rounds: int) -> list[float]:
    """The mutation's own HTTP round trip, with no rule watching it."""
    times = []
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=30) as client:
        for index in range(rounds + 2):
            time.sleep(PAUSE_SECONDS / 4)
            started = time.perf_counter()
            update_stock_now(client, product, 90_000 + index)
            if index >= 2:
                times.append(time.perf_counter() - started)
    return times


def _raw_posts(url: str, rounds: int, verify=True) -> list[float]:
    """A raw httpx POST of a webhook-sized body to the receiver, on one kept connection."""
    times = []
    body = b'{"product":1,"stock":1}'
    with httpx.Client(verify=verify, timeout=30) as client:
        for index in range(rounds + 2):
            time.sleep(PAUSE_SECONDS / 4)
            started = time.perf_counter()
            client.post(url, content=body, headers={"Content-Type": "application/json"})
            if index >= 2:
                times.append(time.perf_counter() - started)
    return times


@contextlib.contextmanager
def _deployment(ctx, env):
    """The mode's documented deployment: `serve` (embedded), or `serve --no-worker` beside one
    worker process (redis)."""
    separate_worker = ctx.mode != EMBEDDED
    extra = ["--no-worker"] if separate_worker else []
    with Server(env, ctx.mode, extra, command=SERVE_WITH_HANDWRITTEN) as server:
        workers = start_workers(env, 1, handwritten=True) if separate_worker else []
        try:
            yield server
        finally:
            stop_workers(workers)


def _switch(active, *rules) -> None:
    for rule in rules:
        rule.is_active = rule is active
        rule.save()


def _recorded_product(org, user, url: str):
    """A product of a second organization, without active rules, whose stock updates
    bench/recorded.py's reference turns into webhooks (to `url`)."""
    quiet = data.organization("b10-no-rule")
    Membership.objects.create(user=user, organization=quiet, role=Role.ADMIN)
    inactive = data.webhook_rule(quiet, url, data.WEBHOOK_RECORDED_RULE, user)
    _switch(None, inactive)
    product = data.products(quiet, 1)[0]
    product.name = f"{data.WEBHOOK_RECORDED_PREFIX} 1"
    product.save()
    return product


def run(ctx) -> list[Row]:
    rounds, probes = ctx.size((40, 30), (15, 10), (2, 2))
    data.drop_leftover_runs()
    tls = local_tls(data_dir(ctx.mode))
    org = data.organization("b10")
    user, token = data.member_with_token(org)
    product = data.products(org, 1)[0]
    plain, secure = Receiver(), Receiver(tls.server)
    try:
        http_rule = data.webhook_rule(org, plain.url(), "Webhook, http", user, "bench-secret")
        https_rule = data.webhook_rule(
            org, secure.url(host="localhost"), "Webhook, https", user, "bench-secret"
        )
        _switch(http_rule, http_rule, https_rule)
        recorded_product = _recorded_product(org, user, plain.url())
        queue = median(queue_round_trips(probes))
        raw_http = _raw_posts(plain.url(), rounds)
        raw_https = _raw_posts(secure.url(host="localhost"), rounds, verify=tls.client)
        # http: the production setting (TLS_VERIFY = True, certifi's store, which the code
        # before issue 22 loaded for every request, http:// included); https: the run's CA
        # trusted (TLS_VERIFY set to a context trusting it, as the tests do).
        # Each deployment's own floor (rules off), right after its rounds: the machine's load
        # moves between the two.
        env = dict(ctx.env, AUTOMATION_WEBHOOK_ALLOW_PRIVATE_NETWORKS="true")
        with _deployment(ctx, dict(env, **{data.WEBHOOK_RECORDED_URL: plain.url()})) as server:
            http, recorded = _webhook_rounds(
                server, token, [product, recorded_product], plain, rounds, 10_000
            )
            _switch(None, http_rule, https_rule)
            http_floors = _floor(server, token, product, rounds)
        _switch(https_rule, http_rule, https_rule)
        with _deployment(ctx, dict(env, BENCH_WEBHOOK_CA=str(tls.ca_file))) as server:
            (https,) = _webhook_rounds(server, token, [product], secure, rounds, 20_000)
            _switch(None, http_rule, https_rule)
            https_floors = _floor(server, token, product, rounds)
        connections = {"http": plain.connections, "https": secure.connections}
    finally:
        plain.close()
        secure.close()
    separate_worker = ctx.mode != EMBEDDED
    where = "a worker process beside `serve --no-worker`" if separate_worker else "`serve`"
    rows = []
    for scheme, times, raw, floors in (
        ("http", http, raw_http, http_floors),
        ("https", https, raw_https, https_floors),
    ):
        rows.append(_latency_row(scheme, times, median(floors), queue, raw, rounds, where))
    rows.append(_reference_row(http, recorded, median(http_floors), queue, raw_http, rounds))
    floors = {"http": http_floors, "https": https_floors}
    rows.append(
        Row(
            bench=10,
            name="floor: the same mutation with no rule, HTTP round trip p50 (http rounds' server)",
            value=round(median(http_floors) * 1000, 2),
            unit="ms",
            detail=(
                "p50 / p99: "
                + "; ".join(
                    f"{scheme} rounds' server {median(values) * 1000:.1f} / "
                    f"{percentile(values, 0.99) * 1000:.1f} ms"
                    for scheme, values in floors.items()
                )
                + f"; raw queue round trip {queue * 1000:.2f} ms; receiver connections (raw "
                f"POSTs' included): http {connections['http']}, https {connections['https']} "
                f"({rounds} rounds)"
            ),
        )
    )
    return rows


def _reference_row(engine, recorded, floor, queue, raw, rounds) -> Row:
    """What the least webhook run with a record adds to the mutation, against the goal's base
    (raw queue round trip + raw POST), and the engine against it (no goal: the floor of any
    engine keeping the record)."""
    with_record, added, base = median(recorded) - floor, median(engine) - floor, queue + median(raw)
    return Row(
        bench=10,
        name=(
            "reference, http: the least webhook run with a record (by hand), its p50 - floor "
            "p50, vs raw queue round trip + raw POST"
        ),
        value=round(with_record / base, 3),
        unit="x",
        detail=(
            f"{with_record * 1000:.1f} ms = its webhook p50 {median(recorded) * 1000:.1f} ms - "
            f"floor p50 {floor * 1000:.1f} ms; the engine {added * 1000:.1f} ms, "
            f"{added / with_record if with_record > 0 else 0:.2f}x the reference; rounds "
            f"interleaved with the engine's ({rounds} each)"
        ),
    )


def _latency_row(scheme, times, floor, queue, raw, rounds, where) -> Row:
    p50, p99, raw_p50 = median(times), percentile(times, 0.99), median(raw)
    added, base = p50 - floor, queue + raw_p50
    ratio = added / base
    return Row(
        bench=10,
        name=(
            f"webhook latency, {scheme}: mutation -> webhook received p50 - floor p50, "
            "vs raw queue round trip + raw POST"
        ),
        value=round(ratio, 3),
        unit="x",
        goal=f"<= {GOAL_FACTOR}x",
        ok=ratio <= GOAL_FACTOR,
        detail=(
            f"{added * 1000:.1f} ms = webhook p50 {p50 * 1000:.1f} ms (p99 {p99 * 1000:.1f}) - "
            f"floor p50 {floor * 1000:.1f} ms; goal {GOAL_FACTOR * base * 1000:.1f} ms: queue "
            f"{queue * 1000:.2f} ms + raw {scheme} POST p50 {raw_p50 * 1000:.2f} ms; sent by "
            f"{where} ({rounds} rounds)"
        ),
    )
