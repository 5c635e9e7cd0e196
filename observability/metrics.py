"""The engine's Prometheus metrics, counted in the process where things happen.

A run is counted by the process that finishes it (`serve`'s worker threads embedded, a
`run_huey` worker distributed), a live subscription by the server process holding it: each
process exposes its own counts (`/metrics` for a server, `run_huey --metrics-port` for a worker;
README, "Metrics") and Prometheus adds them up. What the database knows (runs waiting, late
schedules, heartbeats) is read when `/metrics` is scraped (automation/metrics.py), not here.

No label carries an organization, a rule, a record or a user: their number has no bound, and
every label value is a series Prometheus keeps. Labels hold statuses, triggers, action types,
outcomes and setting names only.

Counting is cheap on purpose (a run costs a few of these: a dictionary lookup and a lock each),
so the hot path pays microseconds per run, not a query.
"""

from prometheus_client import Counter, Gauge, Histogram, Info, disable_created_metrics

# Counters and histograms would also export a `_created` timestamp per series: noise here.
disable_created_metrics()

BUILD = Info("automation_build", "The engine's version (set when Django starts).")

SECONDS_SHORT = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
SECONDS_WAIT = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)

RUNS = Counter(
    "automation_runs",
    "Runs finished, by final status and trigger (dry runs are not counted).",
    ["status", "trigger"],
)
ACTIONS = Counter(
    "automation_actions",
    "Actions of finished runs, by action type and final status.",
    ["action_type", "status"],
)
RUN_DURATION = Histogram(
    "automation_run_duration_seconds",
    "A finished run's time from its (last) claim to its finish.",
    buckets=SECONDS_SHORT,
)
ACTION_DURATION = Histogram(
    "automation_action_duration_seconds",
    "An executed action's time, by action type (webhook retries included).",
    ["action_type"],
    buckets=SECONDS_SHORT,
)
QUEUE_WAIT = Histogram(
    "automation_run_queue_wait_seconds",
    "A finished run's time from its creation (queued) to its claim by a worker.",
    buckets=SECONDS_WAIT,
)

# Webhook attempts (one per try of a CALL_WEBHOOK action), by outcome:
WEBHOOK_SUCCESS = "success"  # a 2xx answer
WEBHOOK_RETRIED_STATUS = "retried_status"  # 5xx, 408, 429: tried again while attempts are left
WEBHOOK_FAILED_STATUS = "failed_status"  # any other status: not tried again
WEBHOOK_NETWORK_ERROR = "network_error"  # DNS, connection, TLS, protocol
WEBHOOK_TIMEOUT = "timeout"  # the attempt's deadline passed
WEBHOOK_REFUSED = "refused"  # a private or metadata address, a bad URL: never sent
WEBHOOK_OUTCOMES = (
    WEBHOOK_SUCCESS,
    WEBHOOK_RETRIED_STATUS,
    WEBHOOK_FAILED_STATUS,
    WEBHOOK_NETWORK_ERROR,
    WEBHOOK_TIMEOUT,
    WEBHOOK_REFUSED,
)
WEBHOOK_ATTEMPTS = Counter(
    "automation_webhook_attempts",
    "Webhook attempts by outcome: success (2xx), retried_status (5xx, 408, 429), failed_status "
    "(other statuses), network_error, timeout, refused (address or URL not allowed).",
    ["outcome"],
)
WEBHOOK_DURATION = Histogram(
    "automation_webhook_attempt_duration_seconds",
    "A webhook attempt's time until its answer or its error, by outcome.",
    ["outcome"],
    buckets=SECONDS_SHORT,
)

LIVE_SUBSCRIPTIONS = Gauge(
    "automation_live_subscriptions",
    "GraphQL subscriptions open in this server process.",
)
LIVE_EVENTS = Counter(
    "automation_live_events_published",
    "Live events this process handed to the channel layer, by message type.",
    ["type"],
)

REFUSALS = Counter(
    "automation_limit_refusals",
    "Requests, runs and actions refused by a limit, by the name of the setting that sets it.",
    ["limit"],
)

for _outcome in WEBHOOK_OUTCOMES:  # every outcome shows from the start, at 0
    WEBHOOK_ATTEMPTS.labels(_outcome)


_children: dict = {}


def child(metric, *labels):
    """`metric.labels(*labels)`, kept: the library checks the values and takes a lock on each
    call, and a run's end asks for a few of them (a dictionary lookup here)."""
    key = (metric, labels)
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(*labels)
    return found


def refused(limit: str) -> None:
    """Count one refusal by the limit the setting `limit` (its name, e.g.
    "AUTOMATION_MAX_RUNS_PER_ROOT") sets."""
    child(REFUSALS, limit).inc()


def webhook_attempt(outcome: str, seconds: float | None) -> None:
    child(WEBHOOK_ATTEMPTS, outcome).inc()
    if seconds is not None:
        child(WEBHOOK_DURATION, outcome).observe(seconds)
