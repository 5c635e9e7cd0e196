"""The organizations' run queues (automation/runs/fair_queue.py), in each place they can live: Huey's
SQLite file, Redis (when REDIS_URL is set) and memory. Each test counts what a pop takes; none
depends on timing (lease expiry is driven by time-machine)."""

import os
import uuid

import pytest
import time_machine
from huey import MemoryHuey

from automation.runs.fair_queue import RECENT_SECONDS, MemoryFairQueues, Policy
from automation.runs.queue import FairRedisHuey, WakeableSqliteHuey, fair_queues

POLICY = Policy(batch_size=4, fair_batch_size=2, workers_per_organization=1, lease_seconds=60)
A, B, C = 101, 202, 303


@pytest.fixture(params=["sqlite", "redis", "memory"])
def queues(request, tmp_path):
    if request.param == "sqlite":
        yield WakeableSqliteHuey("q", filename=str(tmp_path / "queue.sqlite3")).storage.fair
    elif request.param == "redis":
        if not os.environ.get("REDIS_URL"):
            pytest.skip("needs REDIS_URL")
        huey = FairRedisHuey(f"fair-{uuid.uuid4().hex}", url=os.environ["REDIS_URL"])
        yield huey.storage.fair
        huey.flush()
    else:
        yield MemoryFairQueues(MemoryHuey("m").storage)


def drain(queues, policy=POLICY) -> list[tuple[int, list[int]]]:
    """Pop (and release) until nothing waits: [(organization, log ids)] in order."""
    taken = []
    while (batch := queues.pop(policy)) is not None:
        taken.append((batch.organization_id, batch.log_ids))
        queues.release(batch)
    return taken


def drain_some(queues, count: int) -> list[tuple[int, list[int]]]:
    taken = []
    for _ in range(count):
        batch = queues.pop(POLICY)
        taken.append((batch.organization_id, batch.log_ids))
        queues.release(batch)
    return taken


def test_an_organization_alone_takes_full_batches_in_order(queues):
    queues.push(A, list(range(1, 11)))
    assert queues.size() == 10
    assert drain(queues) == [(A, [1, 2, 3, 4]), (A, [5, 6, 7, 8]), (A, [9, 10])]
    assert queues.size() == 0
    assert queues.pop(POLICY) is None


def test_a_newcomer_waits_for_at_most_one_batch_of_a_backlog(queues):
    with time_machine.travel("2026-01-01 00:00:00", tick=False) as traveller:
        queues.push(A, list(range(1, 101)))
        first = queues.pop(POLICY)  # A alone: a full batch
        assert (first.organization_id, first.log_ids) == (A, [1, 2, 3, 4])
        queues.release(first)
        queues.push(B, [1001])
        taken = drain_some(queues, 3)
        assert taken[0] == (B, [1001]), "the newcomer is served next"
        assert taken[1:] == [(A, [5, 6]), (A, [7, 8])], "B was about lately: small batches"
        traveller.shift(RECENT_SECONDS + 1)
        assert drain_some(queues, 1) == [(A, [9, 10, 11, 12])], "alone again: full batches"


def test_organizations_with_work_waiting_take_turns_in_small_batches(queues):
    queues.push(A, list(range(1, 9)))
    queues.push(B, list(range(11, 19)))
    queues.push(C, [21])
    taken = drain(queues)
    assert [org for org, _ in taken[:5]] == [A, B, C, A, B]
    assert taken[:3] == [(A, [1, 2]), (B, [11, 12]), (C, [21])], "contended: fair batches"
    assert sorted(i for _, ids in taken for i in ids) == [*range(1, 9), *range(11, 19), 21]


def test_an_organization_at_its_worker_cap_is_passed_over_for_one_under_it(queues):
    queues.push(A, list(range(1, 21)))
    held = queues.pop(POLICY)  # A's batch in progress: A is at its cap of 1 worker
    assert held.organization_id == A
    queues.push(B, [1001, 1002, 1003])
    queues.push(C, [2001])
    second = queues.pop(POLICY)
    third = queues.pop(POLICY)
    assert {second.organization_id, third.organization_id} == {B, C}, "A's turn passed over"


def test_an_organization_alone_may_use_every_worker(queues):
    queues.push(A, list(range(1, 21)))
    held = queues.pop(POLICY)
    second = queues.pop(POLICY)  # only A is about: served although at its cap
    assert second.organization_id == A
    assert second.log_ids == [5, 6, 7, 8]
    assert queues.release(held) == queues.release(second) == 12, "release: how many still wait"


def test_while_another_is_about_a_worker_stays_free_for_it(queues):
    queues.push(B, [1001])
    queues.release(queues.pop(POLICY))  # B was served: it is about
    queues.push(A, list(range(1, 21)))
    held = queues.pop(POLICY)
    assert (held.organization_id, held.log_ids) == (A, [1, 2]), "others about: a small batch"
    assert queues.pop(POLICY) is None, "A is at its cap: the worker waits for B's next run"
    queues.push(B, [1002])
    assert queues.pop(POLICY).log_ids == [1002], "...and takes it at once"
    assert queues.release(held) == 18
    assert queues.pop(POLICY).organization_id == A


def test_a_lease_a_dead_worker_never_released_expires(queues):
    with time_machine.travel("2026-01-01 00:00:00", tick=False) as traveller:
        queues.push(A, list(range(1, 21)))
        queues.pop(POLICY)  # never released: its worker died
        queues.push(B, [1001, 1002, 1003, 1004, 1005])
        assert queues.pop(POLICY).organization_id == B, "A is at its cap"
        traveller.shift(POLICY.lease_seconds + 1)  # every lease has expired
        queues.push(C, [2001])
        # Passed over, A kept its place at the front; under its cap again, it is served, then
        # the newcomer C, ahead of B, served last.
        assert [queues.pop(POLICY).organization_id for _ in range(3)] == [A, C, B]


def test_flush_forgets_every_queue(queues):
    queues.push(A, [1, 2])
    queues.pop(POLICY)
    queues.push(B, [3])
    queues.flush()
    assert queues.size() == 0
    assert queues.pop(POLICY) is None


def test_a_push_brings_its_wake_ups_to_hueys_queue_at_once(queues):
    """The runs and their wake-ups are written together (one round trip, one transaction)."""
    queues.push(A, [1, 2], [b"wake-1", b"wake-2"])
    storage = queues.storage
    assert storage.queue_size() == 2
    assert sorted(bytes(data) for data in iter(storage.dequeue, None)) == [b"wake-1", b"wake-2"]
    assert queues.size() == 2


def test_a_huey_of_another_kind_gets_queues_in_memory():
    huey = MemoryHuey("mem")
    assert isinstance(fair_queues(huey), MemoryFairQueues)
    assert fair_queues(huey) is fair_queues(huey)
