"""9. Run logs at scale: `logs` pages, counts and the purge with 200,000 logs against 20,000.

One organization's table of run logs (bench/log_data.py: 1.1 KB of JSON a row, 20 rules, 40
days, 5 % FAILED, 1 % dry runs, chains and retries) is filled to the small size, measured, purged,
then filled to the large size and measured again. Each `logs` filter the README documents is
timed as a request through the whole HTTP stack (token, Strawberry, the page of 50 and its rows'
relations), the median of several; a deep page starts from a cursor three quarters down the
organization's logs. `totalCount` without a filter counts to its cap at both sizes; with FAILED it
counts 1,000 and then 10,000 (the cap) logs, so it is shown without a goal. The purge (the hourly
task: the stream's journal, then the logs) is timed per log deleted, dry and real.

The two sizes are timed minutes apart on a machine others may be loading, so each figure is the
one least disturbed by other work: a page's fastest of its 25 requests (round-robin: every
figure once a round), the purge's median batch (the time between two reads of its walk) per log;
the median request and the whole purge are in the row's detail. Goal: a page at most 1.5x as
slow at ten times the logs, and a purge whose time per log does not grow (at most 1.5x). Before issue 24 every page counted all its matching logs and a deep cursor
was no index bound: 2.4x to 9.2x at a million logs.
"""

import base64
import datetime
import time

from django.test import Client
from django.utils import timezone

from automation.core import keyset
from automation.core.models import AutomationLog
from automation.runs import retention
from bench import data, log_data
from bench.stats import Row, median

PAGE = """query($org: ID, $filter: LogFilter, $after: String) {
  logs(organization: $org, filter: $filter, first: 50, after: $after) {
    %s
    edges { node { id seq status trigger createdAt finishedAt dryRun error objectType objectId
                   rule { id name } } }
    pageInfo { hasNextPage endCursor }
  }
}"""
DAYS = 40  # SUCCEEDED logs are kept 30 days, SKIPPED 7: about 29 % of the logs expire
GOAL = 1.5


def _filters(rule_id: int, now) -> list[tuple[str, dict]]:
    week_ago = (now - datetime.timedelta(days=7)).isoformat()
    return [
        ("no filter", {}),
        ("rule", {"rule": str(rule_id)}),
        ("statuses [FAILED]", {"statuses": ["FAILED"]}),
        ("statuses [FAILED, PARTIAL]", {"statuses": ["FAILED", "PARTIAL"]}),
        ("trigger WEBHOOK", {"trigger": "WEBHOOK"}),
        ("objectType (10 % of logs)", {"objectType": "catalog.category"}),
        ("objectType + objectId", {"objectType": "catalog.product", "objectId": "17"}),
        ("objectId alone", {"objectId": "17"}),
        ("createdAfter a week ago", {"createdAfter": week_ago}),
        ("createdBefore a week ago", {"createdBefore": week_ago}),
        ("dryRun true (1 % of logs)", {"dryRun": True}),
        ("runs page: dryRun false, [FAILED]", {"dryRun": False, "statuses": ["FAILED"]}),
    ]


class _Api:
    def __init__(self, organization, token):
        self.client = Client()
        self.organization = organization
        self.token = token

    def logs(self, log_filter: dict, after=None, count: bool = False) -> dict:
        variables = {"org": str(self.organization.pk), "filter": log_filter, "after": after}
        response = self.client.post(
            "/graphql/",
            {"query": PAGE % ("totalCount" if count else ""), "variables": variables},
            content_type="application/json",
            headers={"Authorization": f"Bearer {self.token}"},
        )
        body = response.json()
        if response.status_code != 200 or body.get("errors"):
            raise RuntimeError(f"logs failed: {response.status_code} {body.get('errors')}")
        return body["data"]["logs"]


def _deep_cursor(organization) -> tuple[str, int]:
    """A cursor three quarters down the organization's logs (as a client that paged there would
    hold one), and how deep that is."""
    logs = AutomationLog.objects.filter(organization=organization).order_by("-created_at", "-id")
    depth = logs.count() * 3 // 4
    created_at, pk = logs.values_list("created_at", "pk")[depth]
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{pk}".encode()).decode(), depth


def _measure(api, organization, rule_id, repeats) -> dict:
    """{label: (median seconds, detail)} of every figure at the table's current size. The
    requests go round-robin (every figure once a round), so a busy moment of the machine falls
    on all of them alike."""
    now = timezone.now()
    cursor, depth = _deep_cursor(organization)
    requests = {label: ({"log_filter": flt}, "") for label, flt in _filters(rule_id, now)}
    requests["deep page"] = ({"log_filter": {}, "after": cursor}, f"{depth:,} logs deep")
    requests["count"] = ({"log_filter": {}, "count": True}, "")
    requests["count FAILED"] = ({"log_filter": {"statuses": ["FAILED"]}, "count": True}, "")
    answers = {label: api.logs(**arguments) for label, (arguments, _) in requests.items()}
    times = {label: [] for label in requests}
    for _ in range(repeats):
        for label, (arguments, _) in requests.items():
            started = time.perf_counter()
            api.logs(**arguments)
            times[label].append(time.perf_counter() - started)
    figures = {}
    for label, (_, detail) in requests.items():
        answer = answers[label]
        if not answer["edges"]:
            raise RuntimeError(f"no logs for {label}: the data does not exercise the filter")
        if "totalCount" in answer:
            detail = f"totalCount {answer['totalCount']:,}"
        detail = (
            detail or f"{len(answer['edges'])} logs"
        ) + f", median {_ms(median(times[label]))}"
        figures[label] = (min(times[label]), detail)
    return figures


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _purge() -> dict:
    """{"dry" / "real": (seconds per log of the median batch, logs, seconds in all)} of the
    hourly purge."""
    figures = {label: _timed_purge(dry) for label, dry in (("dry", True), ("real", False))}
    if figures["real"][1] == 0:
        raise RuntimeError("the purge deleted nothing: the data has no expired logs")
    return figures


def _timed_purge(dry: bool) -> tuple[float, int, float]:
    """A batch is timed from one read of the walk (keyset.newest, watched) to the next."""
    reads, walk = [], keyset.newest

    def reading(*args, **kwargs):
        reads.append(time.perf_counter())
        return walk(*args, **kwargs)

    keyset.newest = reading
    try:
        started = time.perf_counter()
        counts, _ = retention.purge(dry_run=dry)
        seconds = time.perf_counter() - started
    finally:
        keyset.newest = walk
    deleted = sum(counts.values())
    size = retention.DRY_RUN_BATCH_SIZE if dry else retention.BATCH_SIZE
    # The last read finds nothing, and the batch before it may be partial: left out.
    batches = [later - earlier for earlier, later in zip(reads, reads[1:-1], strict=False)]
    per_log = median(batches) / size if batches else seconds / max(deleted, 1)
    return per_log, deleted, seconds


def _fill(organization, rule_ids, count, journal) -> float:
    started = time.perf_counter()
    log_data.fill_logs(organization, rule_ids, count, days=DAYS)
    log_data.fill_journal(organization, journal, hours=48)
    log_data.analyze()
    return time.perf_counter() - started


def run(ctx) -> list[Row]:
    large, small, repeats = ctx.size((200_000, 20_000, 25), (60_000, 20_000, 9), (1_500, 300, 2))
    organization = data.organization("b9")
    _, token = data.member_with_token(organization)
    rule_ids = data.bulk_rules(organization, 20, tree=False)
    api = _Api(organization, token)
    filled = _fill(organization, rule_ids, small, small // 10)
    before = _measure(api, organization, rule_ids[3], repeats)
    purged_before = _purge()
    kept = AutomationLog.objects.filter(organization=organization).count()
    filled += _fill(organization, rule_ids, large - kept, large // 10)
    after = _measure(api, organization, rule_ids[3], repeats)
    purged_after = _purge()

    rows = []
    sizes = f"{large:,} vs {small:,} logs"
    for label, (seconds, detail) in after.items():
        small_seconds, small_detail = before[label]
        ratio = seconds / small_seconds
        judged = label != "count FAILED"
        name = {
            "deep page": "deep page (after a cursor 3/4 down)",
            "count": "totalCount, no filter (past its cap at both sizes)",
            "count FAILED": "totalCount, statuses [FAILED] (counted up to its cap)",
        }.get(label, label)
        rows.append(
            Row(
                bench=9,
                name=f"logs page, {sizes}: {name}",
                value=round(ratio, 3),
                unit="x",
                goal=f"<= {GOAL}x" if judged else "",
                ok=(ratio <= GOAL) if judged else None,
                detail=(
                    f"fastest {_ms(seconds)} ({detail}) vs {_ms(small_seconds)} ({small_detail})"
                ),
            )
        )
    for label in ("dry", "real"):
        (per_log, count, seconds), (small_per_log, small_count, small_seconds) = (
            purged_after[label],
            purged_before[label],
        )
        ratio = per_log / small_per_log
        rows.append(
            Row(
                bench=9,
                name=f"purge_logs{' --dry-run' if label == 'dry' else ''}, {sizes}: time per log",
                value=round(ratio, 3),
                unit="x",
                goal=f"<= {GOAL}x",
                ok=ratio <= GOAL,
                detail=(
                    f"{per_log * 1000:.3f} ms a log in the median batch ({count:,} in "
                    f"{seconds:.1f} s) vs {small_per_log * 1000:.3f} ms ({small_count:,} in "
                    f"{small_seconds:.2f} s); filling took {filled:.0f} s"
                ),
            )
        )
    return rows
