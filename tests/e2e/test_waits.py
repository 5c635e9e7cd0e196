"""Durable waits on a real server, over GraphQL as a client meets them: a rule's holdFor executes
when the state held and ends SKIPPED when it changed back, and a WAIT resumes the run at its next
action with the earlier results kept. The durations are tiny (1-2 s) and the test polls for the
outcome; tests/drills/test_wait_drill.py kills the server or worker in the middle of a wait."""

import time

RUN_TIMEOUT_SECONDS = 60
FINISHED = {"SUCCEEDED", "PARTIAL", "FAILED", "SKIPPED"}

CREATE_PRODUCT = "mutation($input: ProductInput!) { createProduct(input: $input) { id } }"
UPDATE_PRODUCT = """mutation($id: ID!, $stock: Int!) {
  updateProduct(id: $id, input: {stock: $stock}) { id }
}"""
CREATE_RULE = "mutation($input: RuleInput!) { createRule(input: $input) { id holdFor } }"
RUN = "mutation($id: ID!, $obj: ID!) { runRule(id: $id, objectId: $obj) { id } }"
LOGS = """query($org: ID!, $rule: ID!) {
  logs(organization: $org, filter: {rule: $rule}) { edges { node { id status } } }
}"""
LOG = """query($id: ID!) {
  log(id: $id) {
    status error resumeAt startedAt finishedAt
    hold { holdFor until checkedAt met trace { actual passed } }
    actionLogs { order actionType status attempt result durationMs }
  }
}"""
RECORD = 'query($id: ID!) { record(model: "catalog.product", id: $id) }'


class Member:
    """GraphQL as one member of one organization."""

    def __init__(self, server, name):
        self.server = server
        self.member = server.create_member(name, f"{name}-org", role="EDITOR")
        self.organization = self.member.organization_id

    def ok(self, query, variables=None):
        answer = self.server.graphql(query, variables, token=self.member.token)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert "errors" not in body, body["errors"]
        return body["data"]

    def product(self, name, stock) -> str:
        product = {"organization": self.organization, "name": name, "status": "ACTIVE"}
        created = self.ok(CREATE_PRODUCT, {"input": {**product, "stock": stock}})
        return created["createProduct"]["id"]

    def rule(self, **fields) -> str:
        rule = {"organization": self.organization, "model": "catalog.product", **fields}
        return self.ok(CREATE_RULE, {"input": rule})["createRule"]["id"]

    def runs_of(self, rule_id) -> list[dict]:
        found = self.ok(LOGS, {"org": self.organization, "rule": rule_id})
        return [edge["node"] for edge in found["logs"]["edges"]]

    def log(self, log_id) -> dict:
        return self.ok(LOG, {"id": log_id})["log"]

    def until(self, log_id, statuses, timeout=RUN_TIMEOUT_SECONDS) -> dict:
        """The run once its status is one of `statuses` (polled, as a reader would)."""
        deadline = time.monotonic() + timeout
        while True:
            log = self.log(log_id)
            if log["status"] in statuses:
                return log
            assert time.monotonic() < deadline, f"run {log_id} stayed {log['status']}: {log}"
            time.sleep(0.1)


def low_stock_rule(member, name, hold_for, actions):
    return member.rule(
        name=name,
        triggerType="EVENT",
        triggerEvent="UPDATED",
        watchedFields=["stock"],
        holdFor=hold_for,
        conditions={"conditions": [{"field": "stock", "operator": "LESS_THAN", "value": 5}]},
        actions=actions,
    )


def describe(text):
    return {"actionType": "UPDATE_RECORD", "parameters": {"fields": {"description": text}}}


# Real servers keep real time: the hold and the wait are long enough that the test's next request
# comes within them on a loaded machine (a 2-second hold ran out first with 6 tests at once).
HOLD, WAIT_SECONDS = "PT8S", 5


def test_a_hold_executes_when_the_state_held_and_is_skipped_when_it_changed_back(e2e_server):
    member = Member(e2e_server, "e2e-hold")
    rule = low_stock_rule(member, "Still low", HOLD, [describe("Still low: {{ object.stock }}")])
    held, restocked = member.product("Lamp", 10), member.product("Vase", 10)

    member.ok(UPDATE_PRODUCT, {"id": held, "stock": 3})
    member.ok(UPDATE_PRODUCT, {"id": restocked, "stock": 2})
    first, second = sorted(run["id"] for run in member.runs_of(rule))
    for log_id in (first, second):
        member.until(log_id, {"WAITING"})
    member.ok(UPDATE_PRODUCT, {"id": restocked, "stock": 20})  # back up while it holds
    assert member.log(second)["status"] == "WAITING", "the restock came during the hold"

    kept, undone = member.until(first, FINISHED), member.until(second, FINISHED)

    assert kept["status"] == "SUCCEEDED", kept
    assert kept["hold"]["holdFor"] == HOLD and kept["hold"]["met"] is True
    assert kept["hold"]["trace"] == [{"actual": 3, "passed": True}]
    assert member.ok(RECORD, {"id": held})["record"]["description"] == "Still low: 3"
    assert undone["status"] == "SKIPPED"
    assert undone["error"] == (
        f"Conditions no longer met after holding for {HOLD}: stock LESS_THAN 5 did not pass "
        "(actual: 20)."
    )
    assert undone["hold"]["trace"] == [{"actual": 20, "passed": False}]
    assert undone["actionLogs"] == []
    assert member.ok(RECORD, {"id": restocked})["record"]["description"] == ""


def test_a_wait_resumes_at_the_next_action_with_the_earlier_results(e2e_server):
    member = Member(e2e_server, "e2e-wait")
    rule = member.rule(
        name="Two steps",
        triggerType="MANUAL",
        actions=[
            {
                "actionType": "CREATE_RECORD",
                "parameters": {"model": "catalog.category", "fields": {"name": "Step 1"}},
            },
            {"actionType": "WAIT", "parameters": {"seconds": WAIT_SECONDS}},
            describe("Category {{ results.0.id }}"),
        ],
    )
    product = member.product("Desk", 1)
    log_id = member.ok(RUN, {"id": rule, "obj": product})["runRule"]["id"]

    waiting = member.until(log_id, {"WAITING"} | FINISHED)
    assert waiting["status"] == "WAITING", waiting
    assert [a["status"] for a in waiting["actionLogs"]] == ["SUCCEEDED", "WAITING", "PENDING"]
    assert waiting["resumeAt"] is not None
    log = member.until(log_id, FINISHED)

    assert log["status"] == "SUCCEEDED", log
    category = log["actionLogs"][0]["result"]["id"]
    assert member.ok(RECORD, {"id": product})["record"]["description"] == f"Category {category}"
    assert [a["attempt"] for a in log["actionLogs"]] == [1, 1, 1]
    assert log["actionLogs"][1]["result"]["waited"] is True
    assert log["actionLogs"][1]["durationMs"] >= WAIT_SECONDS * 1000
