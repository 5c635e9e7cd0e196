"""E-mail through a real server and its worker, to a real SMTP server on loopback (tests/smtp.py):
a SEND_EMAIL rule fired by a write over HTTP, an e-mailing notification, an invitation. The
server follows the suite's mode (embedded, or PostgreSQL + Redis)."""

import time

import pytest

from tests.e2e.conftest import json_of
from tests.smtp import SmtpReceiver

CREATE_RULE = "mutation($input: RuleInput!) { createRule(input: $input) { id } }"
LOGS = """query($org: ID!) { logs(organization: $org, first: 10) { edges { node {
  status actionLogs { actionType status result error } } } } }"""


@pytest.fixture
def smtp():
    receiver = SmtpReceiver()
    yield receiver
    receiver.close()


def finished_run(server, org: str, token: str, timeout: float = 60) -> dict:
    """The organization's one run, once it is over (its results commit after the e-mails)."""
    deadline = time.monotonic() + timeout
    while True:
        (edge,) = ok(server.graphql(LOGS, {"org": org}, token=token))["logs"]["edges"]
        if edge["node"]["status"] not in ("PENDING", "RUNNING") or time.monotonic() > deadline:
            return edge["node"]
        time.sleep(0.2)


def ok(response) -> dict:
    body = json_of(response)
    assert "errors" not in body, body
    return body["data"]


def test_rules_and_invitations_email_through_the_configured_smtp_server(start_server, smtp):
    server = start_server(
        env={"EMAIL_URL": smtp.url, "DEFAULT_FROM_EMAIL": "Automation <automation@acme.test>"}
    )
    admin = server.create_member("mailer-admin", "mail-org", role="ADMIN")
    server.manage(
        "shell",
        "--no-imports",
        "-c",
        "from django.contrib.auth import get_user_model\n"
        "User = get_user_model()\n"
        "User.objects.filter(username='mailer-admin').update(email='admin@acme.test')\n"
        "User.objects.create_user('invitee', email='invitee@acme.test')\n",
    )
    org = admin.organization_id
    rule = {
        "organization": org,
        "name": "Mail on stock change",
        "triggerType": "EVENT",
        "model": "catalog.product",
        "triggerEvent": "UPDATED",
        "watchedFields": ["stock"],
        "actions": [
            {
                "actionType": "SEND_EMAIL",
                "parameters": {
                    "to": ["buyers@acme.test"],
                    "roles": ["ADMIN"],
                    "subject": "{{ object.name }}: {{ changes.stock.new }} left",
                    "body": "Stock went from {{ changes.stock.old }} to {{ changes.stock.new }}.",
                },
            },
            {
                "actionType": "SEND_NOTIFICATION",
                "parameters": {
                    "recipients": {"usernames": ["mailer-admin"]},
                    "title": "Also notified",
                    "email": True,
                },
            },
        ],
    }
    ok(server.graphql(CREATE_RULE, {"input": rule}, token=admin.token))
    category = ok(
        server.graphql(
            'mutation($org: ID!) { createCategory(organization: $org, name: "Garden") { id } }',
            {"org": org},
            token=admin.token,
        )
    )["createCategory"]["id"]
    product = ok(
        server.graphql(
            """mutation($org: ID!, $cat: ID!) { createProduct(input: {organization: $org,
                 category: $cat, name: "Can", status: ACTIVE, price: "5", stock: 9}) { id } }""",
            {"org": org, "cat": category},
            token=admin.token,
        )
    )["createProduct"]["id"]

    ok(
        server.graphql(
            "mutation($id: ID!) { updateProduct(id: $id, input: {stock: 2}) { id } }",
            {"id": product},
            token=admin.token,
        )
    )
    ok(
        server.graphql(
            'mutation($org: ID!) { addMember(organization: $org, username: "invitee", '
            "role: VIEWER) { id } }",
            {"org": org},
            token=admin.token,
        )
    )

    received = smtp.wait_for(4)
    by_subject = {}
    for item in received:
        by_subject.setdefault(item.message["Subject"], []).extend(item.rcpt_tos)
    assert len(received) == 4, "one message per recipient"
    assert sorted(by_subject["Can: 2 left"]) == ["admin@acme.test", "buyers@acme.test"]
    assert by_subject["Also notified"] == ["admin@acme.test"]
    assert by_subject["mailer-admin invited you to mail-org"] == ["invitee@acme.test"]
    for item in received:
        assert item.message["From"] == "Automation <automation@acme.test>"
    stock_mail = next(i.message for i in received if i.message["Subject"] == "Can: 2 left")
    assert stock_mail.get_content().strip() == "Stock went from 9 to 2."

    run = finished_run(server, org, admin.token)
    assert run["status"] == "SUCCEEDED", run
    assert [entry["result"]["sent"] for entry in run["actionLogs"][:1]] == [2]
    assert run["actionLogs"][1]["result"]["email"]["sent"] == 1
