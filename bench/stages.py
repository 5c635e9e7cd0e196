"""Benchmark 5's latency, stage by stage: `python -m bench.stages --mode embedded|redis`;
benchmark 10's (a rule's webhook) with `--bench 10`.

Runs benchmark 5's interleaved rounds (bench/b5_live_latency.py) with a tracer in the server and
worker processes: when BENCH_STAGES_FILE is set, `bench.serve` and `bench.worker` call
`install()`, which wraps a few functions of the run and delivery paths to append a timestamp
(time.monotonic, one clock for every process of the machine, which time.perf_counter also
reads on Linux) per stage and run to that file. Then prints, for the engine's runs and for the
hand-written pipeline's events, the median time from the mutation being sent to each stage.

A measuring tool, not a benchmark: the wrappers cost a few microseconds each, and nothing of it
runs unless the variable is set.
"""

import argparse
import functools
import json
import os
import threading
import time

STAGES_FILE = "BENCH_STAGES_FILE"
_lock = threading.Lock()


def _record(stage: str, ids, **extra) -> None:
    now = time.monotonic()
    line = json.dumps({"stage": stage, "ids": [str(i) for i in ids], "t": now, **extra})
    with _lock, open(os.environ[STAGES_FILE], "a") as handle:
        handle.write(line + "\n")


def _wrap(owner, name: str, before=None, after=None) -> None:
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        if before:
            before(*args, **kwargs)
        result = original(*args, **kwargs)
        if after:
            after(*args, **kwargs)
        return result

    setattr(owner, name, wrapper)


def _wrap_async(owner, name: str, before=None, after=None) -> None:
    original = getattr(owner, name)

    @functools.wraps(original)
    async def wrapper(*args, **kwargs):
        if before:
            before(*args, **kwargs)
        result = await original(*args, **kwargs)
        if after:
            after(*args, **kwargs)
        return result

    setattr(owner, name, wrapper)


def _message_ids(sends) -> list:
    ids = []
    for _group, message in sends:
        if "log" in message:
            ids.append(message["log"]["id"])
    return ids


def install() -> None:
    """Wrap the stages of the run and delivery paths (in this process) when STAGES_FILE is set."""
    if not os.environ.get(STAGES_FILE):
        return
    from strawberry.subscriptions.protocols.graphql_transport_ws import handlers

    from automation.live import events
    from automation.runs import create, execute, worker
    from graphql_api import fanout

    # The mutation committed: its runs are handed to the queue (an on-commit callback).
    _wrap(create, "enqueue_runs", before=lambda org, ids: _record("committed", ids))
    # A worker took the runs; evaluated them; claimed, executed and committed them.
    _wrap(worker, "execute_runs", before=lambda ids: _record("worker took", ids))
    _wrap(
        execute,
        "prepare",
        after=lambda log, *a, **k: _record("conditions evaluated", [log.pk]),
    )
    _wrap(
        execute,
        "_execute_together",
        after=lambda batch: _record("committed run", [prepared.log.pk for prepared in batch]),
    )
    # The events left this process (after the layer's send).
    _wrap_async(
        events,
        "_send_all",
        before=lambda layer, sends: _record(
            "publishing", _message_ids(sends), statuses=_statuses(sends)
        ),
        after=lambda layer, sends: _record(
            "published", _message_ids(sends), statuses=_statuses(sends)
        ),
    )
    # The server received an event; rendered and sent it to the WebSocket.
    original_init = fanout.LiveEvent.__init__

    def received(self, message):
        original_init(self, message)
        if "log" in message:
            log = message["log"]
            _record("received", [log["id"]], statuses=[log["status"]])

    fanout.LiveEvent.__init__ = received
    _wrap_async(handlers.Operation, "send_next", after=_sent)
    _install_webhook_stages()


def _install_webhook_stages() -> None:
    """Benchmark 10's stages past the claim: the request leaving, and its answer."""
    from automation.actions import webhook_transport
    from automation.runs import reads
    from config.db import BeforeCommitMixin

    _wrap(reads, "read_logs", before=lambda ids: _record("run read", ids))
    _wrap(BeforeCommitMixin, "commit", after=lambda *a: _record("a commit", []))
    _wrap(
        webhook_transport,
        "exchange",
        before=lambda *a, **k: _record("request sent", []),
        after=lambda *a, **k: _record("answer read", []),
    )


def _statuses(sends) -> list:
    return [message["log"]["status"] for _group, message in sends if "log" in message]


def _sent(operation, result) -> None:
    data = getattr(result, "data", None) or {}
    log = data.get("automationLogs")
    if log:
        _record("sent", [log["id"]], statuses=[log["status"]])


# --- The driver ---------------------------------------------------------------------------------


def _first(records, stage: str, log_id: str, status: str | None = None):
    for record in records:
        if record["stage"] != stage or log_id not in record["ids"]:
            continue
        if status is None or status in record.get("statuses", ()):
            return record["t"]
    return None


STAGES = (
    ("committed", None),
    ("worker took", None),
    ("conditions evaluated", None),
    ("committed run", None),
    ("publishing", "final"),
    ("published", "final"),
    ("received", "PENDING"),
    ("sent", "PENDING"),
    ("received", "final"),
    ("sent", "final"),
)


def split(rounds, records) -> dict:
    """{kind: [(stage, median ms after the mutation was sent, how many rounds had it)]}."""
    from bench.b5_live_latency import BY_HAND, ENGINE
    from bench.stats import median

    result = {}
    for kind in (ENGINE, BY_HAND):
        rows = []
        timed = [r for r in rounds if r.kind == kind]
        for stage, status in (*STAGES, ("response", None), ("client: final", None)):
            values = []
            for r in timed:
                if stage == "response":
                    at = r.response
                elif stage == "client: final":
                    at = r.final
                else:
                    wanted = status
                    if status == "final":
                        wanted = "SUCCEEDED"
                    at = _first(records, stage, str(r.log_id), wanted)
                if at is not None:
                    values.append((at - r.started) * 1000)
            if values:
                label = stage if status is None else f"{stage} ({status})"
                rows.append((label, median(values), len(values)))
        result[kind] = sorted(rows, key=lambda row: row[1])
    return result


def _webhook_split(args, environment, path) -> None:
    """Benchmark 10's rounds (its rule's webhook to a local receiver), then the same write with
    the rule off: each stage's median time after the write was sent. The webhook's stages carry
    no run id: a stage belongs to the round whose window (its write sent .. its webhook
    received) it falls in; rounds run one at a time."""
    import httpx

    from bench import data
    from bench.live import update_stock_now
    from bench.receiver import Receiver
    from bench.server import SERVE_WITH_HANDWRITTEN, Server
    from bench.stats import median
    from bench.worker import start_workers, stop_workers

    environment["AUTOMATION_WEBHOOK_ALLOW_PRIVATE_NETWORKS"] = "true"
    org = data.organization("stages10")
    user, token = data.member_with_token(org)
    product = data.products(org, 1)[0]
    receiver = Receiver()
    rule = data.webhook_rule(org, receiver.url(), "Webhook, stages", user)
    separate = args.mode != "embedded"
    webhooks, floors = [], []
    with Server(
        environment, args.mode, ["--no-worker"] if separate else [], command=SERVE_WITH_HANDWRITTEN
    ) as server:
        workers = start_workers(environment, 1) if separate else []
        headers = {"Authorization": f"Bearer {token}"}
        try:
            with httpx.Client(base_url=server.base_url, headers=headers, timeout=30) as client:
                for index in range(args.rounds + 2):
                    time.sleep(0.2)
                    stock, started = 50_000 + index, time.perf_counter()
                    update_stock_now(client, product, stock)
                    answered = time.perf_counter()
                    receiver.wait(
                        lambda arrivals, stock=stock: any(
                            str(a.body.get("stock")) == str(stock) for a in arrivals
                        ),
                        30,
                        f"the webhook of stock {stock}",
                    )
                    arrived = next(
                        a.at for a in receiver.arrivals if str(a.body.get("stock")) == str(stock)
                    )
                    webhooks.append((started, answered, arrived))
                rule.is_active = False
                rule.save()
                for index in range(args.rounds + 2):
                    time.sleep(0.1)
                    started = time.perf_counter()
                    update_stock_now(client, product, 90_000 + index)
                    answered = time.perf_counter()
                    floors.append((started, answered, None))
        finally:
            stop_workers(workers)
            receiver.close()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for title, rounds in (("the webhook's rounds", webhooks[2:]), ("the floor", floors[2:])):
        stages: dict[str, list[float]] = {}
        for started, answered, arrived in rounds:
            seen = {"the write's response": answered}
            if arrived is not None:
                seen["the webhook received"] = arrived
            end = answered if arrived is None else arrived
            for record in records:
                if started <= record["t"] <= end and record["stage"] not in seen:
                    seen[record["stage"]] = record["t"]
            for stage, at in seen.items():
                stages.setdefault(stage, []).append((at - started) * 1000)
        print(f"\n{args.mode}, {title}: ms after the write was sent (median of rounds)")
        for stage, values in sorted(stages.items(), key=lambda item: median(item[1])):
            print(f"  {median(values):8.2f}  {stage}  [{len(values)}]")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stages")
    parser.add_argument("--mode", choices=("embedded", "redis"), default="embedded")
    parser.add_argument("--bench", type=int, choices=(5, 10), default=5)
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args(argv)
    from bench import suite

    environment = suite.setup(args.mode)
    path = suite.bench_env.data_dir(args.mode) / "stages.jsonl"
    path.unlink(missing_ok=True)
    environment[STAGES_FILE] = str(path)
    if args.bench == 10:
        _webhook_split(args, environment, path)
        return 0
    import asyncio

    from bench import b5_live_latency as b5
    from bench.server import SERVE_WITH_HANDWRITTEN, Server
    from bench.worker import start_workers, stop_workers

    subjects = b5.setup()
    separate = args.mode != "embedded"
    with Server(
        environment,
        args.mode,
        ["--no-worker"] if separate else [],
        command=SERVE_WITH_HANDWRITTEN,
    ) as server:
        workers = start_workers(environment, 1, handwritten=True) if separate else []
        try:
            rounds = asyncio.run(b5.interleaved_rounds(server, subjects, args.rounds))
        finally:
            stop_workers(workers)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    measured = [r for kind in b5.KINDS for r in b5.measured(rounds, kind)]
    for kind, rows in split(measured, records).items():
        print(f"\n{args.mode}, {kind}: ms after the mutation was sent (median of rounds)")
        for label, value, count in rows:
            print(f"  {value:8.2f}  {label}  [{count}]")
    floors = [r.response - r.started for r in b5.measured(rounds, b5.FLOOR)]
    from bench.stats import median

    print(f"\nfloor (response, no rule): {median(floors) * 1000:.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
