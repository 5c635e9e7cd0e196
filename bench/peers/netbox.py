"""Write -> webhook, side by side with NetBox's event rules (issue 22): one run measures both
systems on the same PostgreSQL and Redis, with the same process budget.

    python -m bench.peers.netbox --netbox-dir /work/netbox-peer [--rounds 40] [--burst 1000]

- **Ours**: the redis-mode deployment of benchmarks 10 and 11 (bench.suite.setup("redis"), its
  own bench database and Redis databases; `serve --no-worker` beside worker processes of one
  thread each, bench/worker.py), benchmark 10/11's rule (bench.data.webhook_rule: product
  UPDATED, one CALL_WEBHOOK posting the product's id and stock, no secret); the write is the
  `updateProduct` mutation (bench.live).
- **NetBox**: a checkout with its own venv and netbox/netbox/configuration.py (database,
  Redis, secret key; see docs/benchmarks.md, "Peer comparison"). Its web process is gunicorn with
  NetBox's contrib/gunicorn.py but one worker (`--workers 1`, its 3 threads kept), its workers
  `manage.py rqworker high default low` (rq's default worker: a forked work horse per job). An
  Event Rule on dcim.site `object_updated` with a Webhook action POSTing a small JSON body
  (`{"product": <site id>, "stock": "<site description>"}`); the write is a REST PATCH of the
  site's description with a v1 API token.
- Each side's webhooks go to a receiver of its own (bench/receiver.py, in this process: one
  clock for writes and arrivals); a webhook is matched to its write by the value it carries.
- Sequential: `--rounds` rounds (after 2 warm-ups) per side, interleaved (ours, NetBox, ...),
  a short pause before each write, one worker process per side; the write's answer time and
  write -> webhook arrival.
- Burst: `--burst` writes (distinct objects) from 8 concurrent clients, one side at a time (the
  other side's processes stopped), 2 worker processes per side: writes/s, webhooks/s (first
  write to last webhook), write -> webhook p50/p99, lost and duplicated deliveries.

Storage: BENCH_DATA_DIR, BENCH_DATABASE_NAME and BENCH_REDIS_URL as any bench run (defaults
here: /tmp/h-peer-bench, h_bench_peer, redis://127.0.0.1:6379/14); NetBox's database and Redis
databases are its configuration's. Prints a Markdown table and writes the figures as JSON into
the data directory.
"""

import argparse
import asyncio
import collections
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

DEFAULTS = {
    "BENCH_DATA_DIR": "/tmp/h-peer-bench",
    "BENCH_DATABASE_NAME": "h_bench_peer",
    "BENCH_REDIS_URL": "redis://127.0.0.1:6379/14",
}
NETBOX_PORT = 18100
NETBOX_USER = "peer-bench"
NAME_PREFIX = "peer-bench"
CLIENTS = 8
BURST_WORKERS = 2
SEQUENTIAL_WORKERS = 1
WAIT_SECONDS = 60  # for one webhook in the sequential rounds
START_TIMEOUT = 120

# NetBox's webhook body: the same shape as our rule's (the object's id, the written value).
NETBOX_BODY = '{"product": {{ data.id }}, "stock": "{{ data.description }}"}'

TOKEN_SCRIPT = f"""
from users.models import Token, User
user = User.objects.filter(username={NETBOX_USER!r}).first()
if user is None:
    user = User.objects.create_superuser({NETBOX_USER!r}, 'peer-bench@example.com', None)
token = Token.objects.filter(user=user, write_enabled=True).first()
if token is None:
    token = Token.objects.create(user=user, write_enabled=True)
print('TOKEN=' + token.key)
"""


def _key(arrival) -> tuple[int, int] | None:
    """(object id, value) a webhook carries (both sides' bodies have this shape)."""
    try:
        return int(arrival.body["product"]), int(arrival.body["stock"])
    except (KeyError, TypeError, ValueError):
        return None


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


# --- NetBox's processes and API --------------------------------------------------------------


class NetBox:
    """A NetBox checkout's web process and RQ workers, and its REST API."""

    def __init__(self, directory: Path, log_dir: Path):
        self.root = directory
        self.app = directory / "netbox"
        self.python = directory / "venv" / "bin" / "python"
        self.gunicorn = directory / "venv" / "bin" / "gunicorn"
        self.base_url = f"http://127.0.0.1:{NETBOX_PORT}"
        self.log_dir = log_dir
        self.web: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self.token = ""

    def version(self) -> str:
        described = subprocess.run(
            ["git", "-C", str(self.root), "describe", "--tags", "--always"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        commit = subprocess.run(
            ["git", "-C", str(self.root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        return f"{described} ({commit})"

    def _env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "BENCH_"))}
        for name in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "VIRTUAL_ENV", "PYTHONPATH"):
            env.pop(name, None)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def ensure_token(self) -> str:
        done = subprocess.run(
            [str(self.python), "manage.py", "shell", "-c", TOKEN_SCRIPT],
            cwd=self.app,
            env=self._env(),
            capture_output=True,
            text=True,
        )
        lines = [x for x in done.stdout.splitlines() if x.startswith("TOKEN=")]
        if done.returncode or not lines:
            raise RuntimeError(f"NetBox's token could not be made: {done.stderr[-2000:]}")
        self.token = lines[-1].removeprefix("TOKEN=")
        return self.token

    def start_web(self) -> None:
        """gunicorn with NetBox's contrib config, one worker process (its threads kept)."""
        config = self.root / "contrib" / "gunicorn.py"
        self.web = self._spawn(
            [str(self.gunicorn), "--config", str(config), "--workers", "1"]
            + ["--bind", f"127.0.0.1:{NETBOX_PORT}", "--pythonpath", str(self.app)]
            + ["netbox.wsgi"],
            self.log_dir / "netbox-web.log",
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.web.poll() is not None:
                raise RuntimeError(f"NetBox's gunicorn exited; see {self.log_dir}/netbox-web.log")
            with contextlib.suppress(httpx.HTTPError):
                answer = httpx.get(
                    f"{self.base_url}/api/status/", headers=self._headers(), timeout=5
                )
                if answer.status_code == 200:
                    return
            time.sleep(0.3)
        raise RuntimeError("NetBox's web process was not ready in time")

    def start_workers(self, count: int) -> None:
        """`manage.py rqworker high default low` x count, each ready (listening) on return."""
        log_path = self.log_dir / "netbox-workers.log"
        log_path.write_text("")
        for _ in range(count):
            command = [str(self.python), "manage.py", "rqworker", "high", "default", "low"]
            self.workers.append(self._spawn(command, log_path))
        deadline = time.monotonic() + START_TIMEOUT
        while log_path.read_text().count("Listening on") < count:
            if any(worker.poll() is not None for worker in self.workers):
                raise RuntimeError(f"a NetBox rqworker exited; see {log_path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"NetBox's rqworkers were not ready; see {log_path}")
            time.sleep(0.2)

    def _spawn(self, command: list[str], log_path) -> subprocess.Popen:
        """A NetBox process in its app directory, its output appended to `log_path`."""
        with open(log_path, "a") as log:
            return subprocess.Popen(
                command,
                cwd=self.app,
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def stop_workers(self) -> None:
        _stop(self.workers)
        self.workers = []

    def stop(self) -> None:
        self.stop_workers()
        if self.web:
            _stop([self.web])
            self.web = None

    # The API (a token of a superuser).

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers=self._headers(), timeout=60, **kwargs)

    def async_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, headers=self._headers(), timeout=60)

    def _headers(self) -> dict:
        return {"Authorization": f"Token {self.token}", "Accept": "application/json"}

    def setup_rule(self, receiver_url: str, run: str) -> None:
        """The previous runs' rules and webhooks deleted, then this run's: dcim.site updated ->
        POST the small body to `receiver_url`."""
        with self.client() as api:
            for path in ("/api/extras/event-rules/", "/api/extras/webhooks/"):
                found = _ok(api.get(path, params={"name__isw": NAME_PREFIX, "limit": 1000}))
                for item in found.json()["results"]:
                    _ok(api.delete(f"{path}{item['id']}/"))
            webhook = _ok(
                api.post(
                    "/api/extras/webhooks/",
                    json={
                        "name": f"{NAME_PREFIX} {run}",
                        "payload_url": receiver_url,
                        "http_method": "POST",
                        "http_content_type": "application/json",
                        "body_template": NETBOX_BODY,
                        "ssl_verification": False,
                    },
                )
            ).json()
            _ok(
                api.post(
                    "/api/extras/event-rules/",
                    json={
                        "name": f"{NAME_PREFIX} {run}",
                        "object_types": ["dcim.site"],
                        "event_types": ["object_updated"],
                        "enabled": True,
                        "action_type": "webhook",
                        "action_object_type": "extras.webhook",
                        "action_object_id": webhook["id"],
                    },
                )
            )

    def sites(self, run: str, count: int) -> list[int]:
        """`count` new sites (ids): creating them fires no rule (the rule watches updates)."""
        ids = []
        with self.client() as api:
            for start in range(0, count, 250):
                batch = [
                    {"name": f"{NAME_PREFIX} {run} {n}", "slug": f"{NAME_PREFIX}-{run}-{n}"}
                    for n in range(start, min(count, start + 250))
                ]
                ids += [site["id"] for site in _ok(api.post("/api/dcim/sites/", json=batch)).json()]
        return ids


def _ok(response: httpx.Response) -> httpx.Response:
    if response.status_code >= 300:
        raise RuntimeError(
            f"{response.request.method} {response.request.url}: {response.text[:300]}"
        )
    return response


def _stop(processes: list[subprocess.Popen]) -> None:
    """Stop NetBox's processes as the bench stops its own (bench/worker.py)."""
    from bench.worker import stop_workers

    stop_workers(processes)


def netbox_write(client: httpx.Client, site: int, value: int) -> None:
    _ok(client.patch(f"/api/dcim/sites/{site}/", json={"description": str(value)}))


async def netbox_write_async(client: httpx.AsyncClient, site: int, value: int) -> None:
    _ok(await client.patch(f"/api/dcim/sites/{site}/", json={"description": str(value)}))


# --- The measurement -------------------------------------------------------------------------


class Side:
    """One system under measurement: its write (sync and async), its receiver."""

    def __init__(self, name, receiver, write, write_async, client, async_client):
        self.name = name
        self.receiver = receiver
        self.write = write  # (client, object, value)
        self.write_async = write_async
        self.client = client  # () -> httpx.Client
        self.async_client = async_client  # () -> httpx.AsyncClient


def sequential(sides: list[Side], objects: dict, rounds: int, pause: float) -> dict:
    """Rounds interleaved across sides: {side: {"answers": [...], "webhooks": [...]}}."""
    times = {side.name: {"answers": [], "webhooks": []} for side in sides}
    clients = {side.name: side.client() for side in sides}
    try:
        for index in range(rounds + 2):
            for number, side in enumerate(sides):
                time.sleep(pause)
                value = 10_000 + index * len(sides) + number
                key = (objects[side.name], value)
                started = time.perf_counter()
                side.write(clients[side.name], objects[side.name], value)
                answered = time.perf_counter()
                side.receiver.wait(
                    lambda arrivals, key=key: any(_key(a) == key for a in arrivals),
                    WAIT_SECONDS,
                    f"{side.name}'s webhook of {key}",
                )
                arrived = next(a.at for a in side.receiver.arrivals if _key(a) == key)
                if index >= 2:
                    times[side.name]["answers"].append(answered - started)
                    times[side.name]["webhooks"].append(arrived - started)
    finally:
        for client in clients.values():
            client.close()
    return times


async def _client(side: Side, writes, sent: dict, answers: list) -> None:
    async with side.async_client() as client:
        for obj, value in writes:
            started = time.perf_counter()
            sent[(obj, value)] = started
            await side.write_async(client, obj, value)
            answers.append(time.perf_counter() - started)


async def _writes(side: Side, writes) -> tuple[dict, list, float]:
    sent: dict = {}
    answers: list = []
    started = time.perf_counter()
    await asyncio.gather(
        *(_client(side, writes[n::CLIENTS], sent, answers) for n in range(CLIENTS))
    )
    return sent, answers, time.perf_counter() - started


def burst(side: Side, objects: list[int]) -> dict:
    """Each object written once by CLIENTS clients at once; its webhooks counted and timed."""
    from bench.b11_webhook_throughput import _wait_for_deliveries
    from bench.stats import median, percentile

    receiver = side.receiver
    before = receiver.count()
    writes = [(obj, 50_000 + n) for n, obj in enumerate(objects)]
    started = time.perf_counter()
    sent, answers, writing = asyncio.run(_writes(side, writes))
    _wait_for_deliveries(receiver, before, len(sent))
    arrivals = [a for a in receiver.arrivals[before:] if _key(a) in sent]
    first: dict = {}
    for arrival in arrivals:
        first.setdefault(_key(arrival), arrival.at)
    counts = collections.Counter(_key(a) for a in arrivals)
    latencies = [first[key] - at for key, at in sent.items() if key in first]
    last = max(first.values()) if first else started
    return {
        "writes": len(sent),
        "writes_per_second": len(sent) / writing,
        "answer_p50": median(answers),
        "webhooks_per_second": len(first) / (last - started) if first else 0.0,
        "p50": median(latencies) if latencies else float("nan"),
        "p99": percentile(latencies, 0.99) if latencies else float("nan"),
        "lost": len(set(sent) - set(first)),
        "duplicated": sum(n - 1 for n in counts.values()),
    }


def _phase(name: str, loads: dict) -> None:
    """Say the phase, and keep the 1-minute load average at its start (a shared machine)."""
    loads[name] = os.getloadavg()[0]
    print(f"{name} ... (load average {loads[name]:.2f})", file=sys.stderr, flush=True)


def summarize_sequential(times: dict) -> dict:
    from bench.stats import median, percentile

    return {
        name: {
            "rounds": len(t["webhooks"]),
            "answer_p50": median(t["answers"]),
            "p50": median(t["webhooks"]),
            "p99": percentile(t["webhooks"], 0.99),
        }
        for name, t in times.items()
    }


def table(result: dict) -> str:
    seq, bursts = result["sequential"], result["burst"]
    names = list(seq)
    lines = [
        "| measure | " + " | ".join(names) + " |",
        "| --- | " + " | ".join("---:" for _ in names) + " |",
    ]

    def row(label, cell):
        lines.append(f"| {label} | " + " | ".join(cell(name) for name in names) + " |")

    rounds = seq[names[0]]["rounds"]
    row(f"sequential ({rounds} rounds): write answered p50", lambda n: _ms(seq[n]["answer_p50"]))
    row("sequential: write -> webhook p50", lambda n: _ms(seq[n]["p50"]))
    row("sequential: write -> webhook p99", lambda n: _ms(seq[n]["p99"]))
    count = bursts[names[0]]["writes"]
    row(
        f"burst ({count:,} writes, {CLIENTS} clients): writes/s",
        lambda n: f"{bursts[n]['writes_per_second']:.0f}",
    )
    row("burst: write answered p50", lambda n: _ms(bursts[n]["answer_p50"]))
    row("burst: webhooks/s", lambda n: f"{bursts[n]['webhooks_per_second']:.0f}")
    row("burst: write -> webhook p50", lambda n: _ms(bursts[n]["p50"]))
    row("burst: write -> webhook p99", lambda n: _ms(bursts[n]["p99"]))
    row(
        "burst: lost / duplicated",
        lambda n: f"{bursts[n]['lost']} / {bursts[n]['duplicated']}",
    )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peers.netbox")
    parser.add_argument("--netbox-dir", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--burst", type=int, default=1000)
    args = parser.parse_args(argv)
    for name, value in DEFAULTS.items():
        os.environ.setdefault(name, value)

    from bench import suite
    from bench.env import REDIS, data_dir

    environment = suite.setup(REDIS)
    from huey.contrib.djhuey import HUEY

    from bench import data
    from bench.b10_webhook_latency import PAUSE_SECONDS
    from bench.live import update_stock, update_stock_now
    from bench.receiver import Receiver
    from bench.server import Server
    from bench.worker import start_workers, stop_workers, wait_ready

    log_dir = data_dir(REDIS)
    netbox = NetBox(args.netbox_dir.resolve(), log_dir)
    run = time.strftime("%Y%m%d%H%M%S")
    env = dict(environment, AUTOMATION_WEBHOOK_ALLOW_PRIVATE_NETWORKS="true")
    ours_receiver, netbox_receiver = Receiver(), Receiver()
    products_by_id = {}

    def ours_write(client, product_id, value):
        update_stock_now(client, products_by_id[product_id], value)

    async def ours_write_async(client, product_id, value):
        await update_stock(client, {}, products_by_id[product_id], value)

    server = None
    workers: list = []
    loads: dict = {}
    try:
        # Ours: the rule and products in the bench database.
        org = data.organization("peer")
        user, token = data.member_with_token(org)
        data.webhook_rule(org, ours_receiver.url(), "Peer comparison webhook", user)
        products = data.products(org, 1 + args.burst)
        products_by_id.update({p.pk: p for p in products})
        # NetBox: token, rule, sites.
        print(f"NetBox {netbox.version()}: token, rule, sites ...", file=sys.stderr, flush=True)
        netbox.ensure_token()
        netbox.start_web()
        netbox.setup_rule(netbox_receiver.url(), run)
        sites = netbox.sites(run, 1 + args.burst)

        def ours_side(base_url):
            return Side(
                "ours",
                ours_receiver,
                ours_write,
                ours_write_async,
                lambda: httpx.Client(
                    base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60
                ),
                lambda: httpx.AsyncClient(
                    base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60
                ),
            )

        theirs = Side(
            "NetBox",
            netbox_receiver,
            netbox_write,
            netbox_write_async,
            netbox.client,
            netbox.async_client,
        )

        # Sequential: both deployments up, one worker process each, rounds interleaved.
        _phase("sequential rounds", loads)
        worker_log = log_dir / "peer-workers.log"
        worker_log.write_text("")
        server = Server(env, REDIS, ["--no-worker"])
        workers = start_workers(env, SEQUENTIAL_WORKERS, log_to=worker_log)
        wait_ready(worker_log, SEQUENTIAL_WORKERS)
        netbox.start_workers(SEQUENTIAL_WORKERS)
        ours = ours_side(server.base_url)
        times = sequential(
            [ours, theirs],
            {"ours": products[0].pk, "NetBox": sites[0]},
            args.rounds,
            PAUSE_SECONDS,
        )
        netbox.stop_workers()

        # Burst, ours alone (NetBox's processes stopped), 2 worker processes.
        _phase("burst, ours", loads)
        netbox.stop()
        stop_workers(workers)
        HUEY.flush()
        worker_log.write_text("")
        workers = start_workers(env, BURST_WORKERS, log_to=worker_log)
        wait_ready(worker_log, BURST_WORKERS)
        ours_burst = burst(ours, [p.pk for p in products[1:]])
        stop_workers(workers)
        workers = []
        server.stop()
        server = None

        # Burst, NetBox alone, 2 worker processes.
        _phase("burst, NetBox", loads)
        netbox.start_web()
        netbox.start_workers(BURST_WORKERS)
        netbox_burst = burst(theirs, sites[1:])
    finally:
        netbox.stop()
        stop_workers(workers)
        if server:
            server.stop()
        ours_receiver.close()
        netbox_receiver.close()
        HUEY.flush()

    result = {
        "netbox": netbox.version(),
        "when": run,
        "load_average_1min": dict(loads, end=os.getloadavg()[0]),
        "workers": {"sequential": SEQUENTIAL_WORKERS, "burst": BURST_WORKERS},
        "sequential": summarize_sequential(times),
        "burst": {"ours": ours_burst, "NetBox": netbox_burst},
    }
    out = log_dir / f"peer-netbox-{run}.json"
    out.write_text(json.dumps(result, indent=2))
    print(
        f"\nNetBox {result['netbox']} (gunicorn, contrib config, 1 worker process, 3 threads; "
        f"rqworker high default low) vs ours (serve --no-worker, redis mode); worker processes: "
        f"{SEQUENTIAL_WORKERS} each in the sequential rounds, {BURST_WORKERS} each in the burst\n"
    )
    print(table(result))
    phases = ", ".join(f"{k} {v:.2f}" for k, v in result["load_average_1min"].items())
    print(f"\n(1-minute load average at each phase's start: {phases}; figures: {out})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
