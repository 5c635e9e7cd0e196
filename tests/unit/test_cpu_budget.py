"""The condition CPU counters (automation/conditions/cpu_budget.py): what a process sends to the store, when,
and what it believes an organization has spent."""

import pytest
import time_machine

from automation.conditions import cpu_budget


class CountingStore:
    """A store that adds up like the real ones and records each round trip."""

    def __init__(self):
        self.totals: dict[str, int] = {}
        self.calls: list[tuple[str, int]] = []

    def add(self, key, amount, ttl):
        self.calls.append((key, amount))
        self.totals[key] = self.totals.get(key, 0) + amount
        return self.totals[key]

    def clear(self):
        self.totals = {}


class BrokenStore:
    def add(self, key, amount, ttl):
        raise ConnectionError("no answer")

    def clear(self):
        pass


@pytest.fixture
def store(monkeypatch):
    counting = CountingStore()
    monkeypatch.setattr(cpu_budget, "_store", lambda: counting)
    with time_machine.travel("2026-03-02 09:15:10Z", tick=False):
        yield counting


def forget_this_process():
    """As another process sees it: nothing of its own, only the store."""
    with cpu_budget._lock:
        cpu_budget._accounts.clear()


def test_small_charges_add_up_here_and_are_sent_together(store):
    assert cpu_budget.spent(7) == 0.0
    assert len(store.calls) == 1  # the first look of the minute asks the store
    for _ in range(4):
        cpu_budget.charge(7, 0.01)
    assert len(store.calls) == 1, "below FLUSH_SECONDS nothing is sent"
    assert cpu_budget.spent(7) == pytest.approx(0.04)
    cpu_budget.charge(7, 0.01)
    assert len(store.calls) == 2
    assert store.calls[-1][1] == 50_000  # microseconds
    assert cpu_budget.spent(7) == pytest.approx(0.05)


def test_a_process_learns_what_the_others_spent_when_it_sends(store):
    cpu_budget.charge(7, 3.0)  # "another process"
    forget_this_process()
    cpu_budget.charge(7, 1.0)
    assert cpu_budget.spent(7) == pytest.approx(4.0)
    assert cpu_budget.spent(8) == 0.0, "another organization's minute is its own"


def test_a_new_minute_starts_from_zero(store):
    cpu_budget.charge(7, 3.0)
    with time_machine.travel("2026-03-02 09:16:00Z", tick=False):
        assert cpu_budget.spent(7) == 0.0


def test_a_store_that_does_not_answer_counts_this_process_only(monkeypatch, caplog):
    monkeypatch.setattr(cpu_budget, "_store", lambda: BrokenStore())
    with time_machine.travel("2026-03-02 09:15:10Z", tick=False):
        assert cpu_budget.spent(7) == 0.0
        cpu_budget.charge(7, 2.0)
        assert cpu_budget.spent(7) == pytest.approx(2.0)
    assert "condition CPU not counted" in caplog.text


def test_the_refusal_names_the_setting_and_when_it_resets(settings):
    settings.AUTOMATION_CONDITIONS_CPU_SECONDS_PER_MINUTE = 2.5
    with time_machine.travel("2026-03-02 09:15:10Z", tick=False):
        reason = cpu_budget.refusal(cpu_budget.current_window())
    assert reason == (
        "this organization's conditions used their CPU budget of 2.5 s in the minute from "
        "09:15 UTC (AUTOMATION_CONDITIONS_CPU_SECONDS_PER_MINUTE); it resets at 09:16:00 UTC"
    )
