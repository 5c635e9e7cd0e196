"""Your own models through a real server (embedded or distributed, as the suite runs): a rule
over the example app's tasks, fired by a write in another process (a shell), executed by the
server's workers, and the record it created read back over GraphQL."""

import time

from gql import Client, GraphQLRequest
from gql.transport.httpx import HTTPXTransport

CREATE_RULE = "mutation($input: RuleInput!) { createRule(input: $input) { id } }"
RUNS = """query($org: ID!) {
  logs(organization: $org, first: 5, filter: {objectType: "projects.task"}) {
    edges { node { status objectId error actionLogs { result } } }
  }
}"""
RECORD = 'query($id: ID!) { record(model: "projects.task", id: $id) }'
RUN_TIMEOUT_SECONDS = 60


def test_a_rule_over_tasks_runs_on_the_server(e2e_server):
    member = e2e_server.create_member("e2e-own-models", "e2e-own-models-org", role="EDITOR")
    client = Client(
        transport=HTTPXTransport(
            url=f"{e2e_server.base_url}/graphql/",
            headers={"Authorization": f"Bearer {member.token}"},
            timeout=30,
        ),
        fetch_schema_from_transport=False,
    )
    rule_input = {
        "organization": member.organization_id,
        "name": "Follow up",
        "triggerType": "EVENT",
        "model": "projects.task",
        "triggerEvent": "CREATED",
        "conditions": {
            "conditions": [{"field": "project__name", "operator": "EQUALS", "value": "Launch"}]
        },
        "actions": [
            {
                "actionType": "CREATE_RECORD",
                "parameters": {
                    "model": "projects.task",
                    "fields": {
                        "project": "{{ object.project }}",
                        "title": "Follow up {{ object.title }}",
                    },
                },
            }
        ],
    }
    client.execute(GraphQLRequest(CREATE_RULE, variable_values={"input": rule_input}))

    e2e_server.manage(
        "shell",
        "-c",
        "from tests.projects.models import Project, Task\n"
        f"project = Project.objects.create(organization_id={member.organization_id}, name='Launch')\n"
        "Task.objects.create(project=project, title='announce')\n",
    )

    deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
    while True:
        edges = client.execute(
            GraphQLRequest(RUNS, variable_values={"org": member.organization_id})
        )["logs"]["edges"]
        if edges and edges[-1]["node"]["status"] not in ("PENDING", "RUNNING"):
            break
        assert time.monotonic() < deadline, f"the run did not finish: {edges}\n{e2e_server.log()}"
        time.sleep(0.2)
    # One run: the follow-up it created does not fire the rule again (no allowSelfTrigger).
    (run,) = [edge["node"] for edge in edges]
    assert run["status"] == "SUCCEEDED", run

    def record(record_id):
        answer = client.execute(GraphQLRequest(RECORD, variable_values={"id": str(record_id)}))
        return answer["record"]

    follow_up = record(run["actionLogs"][0]["result"]["id"])
    assert follow_up["title"] == "Follow up announce"
    assert follow_up["project"] == record(run["objectId"])["project"]
