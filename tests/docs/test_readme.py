"""Every code block of the README runs, so the guide cannot drift from the code.

The blocks run in document order against one fresh `manage.py serve` process (embedded mode, its
own data directory, webhooks to private addresses allowed for the local receiver below). What
runs a block is its language, or the HTML comment on the line before it:

- ```sh: bash in a pseudo-terminal from the repository root, every password prompt answered with
  PASSWORD; it gets the environment the earlier sh blocks exported (`export TOKEN=...`). It must
  exit 0 and print no GraphQL `"errors"`.
- ```graphql: POSTed to /graphql/ with `Authorization: Bearer $TOKEN`. When the operation declares
  `$variables`, the next block (```json) holds them. A query whose answer shows a run still
  PENDING, RUNNING or WAITING is sent again until it does not (a reader would look again). The answer must
  have no errors, unless the next block is an output block that shows them.
- `<!-- as USERNAME -->` before a graphql block: sent with USERNAME's browser session instead,
  signed in at /accounts/login/ with PASSWORD (and the CSRF token, as GraphiQL sends it).
- `<!-- output -->` before a json block: equal to the answer of the graphql block before it,
  timestamps and durations compared by their form only.
- `<!-- example: action on MODEL ID -->` before a json block: an ActionInput, saved as the one
  action of a MANUAL rule on MODEL and dry-run on record ID: the action must succeed.
- `<!-- example: actions on MODEL ID end STATUS STATUS ... -->` before a json block: a list of
  ActionInputs, saved as the actions of such a rule and dry-run likewise: each action must end
  with its STATUS (an action's `when` may skip it).
- `<!-- example: conditions of MODEL ID are met -->` (or `are not met`) before a json block: a
  ConditionGroupInput, saved likewise; the dry run's `conditionsMet` must say so. With
  `are met after {"field": {"old": .., "new": ..}}` the rule is an UPDATED rule instead, and the
  dry run simulates those changes.
- `<!-- example: rule on MODEL ID -->` before a json block: a RuleInput without `organization`
  and `name`, saved, then dry-run on record ID: its conditions must be met and every action
  must succeed; a rule with `holdFor` must say that a real run would hold. With `runs to STATUS`
  (`<!-- example: rule on MODEL ID runs to SUCCEEDED -->`) it runs for real instead (a MANUAL
  run on record ID), followed until it is over: it must end STATUS.
  Examples run after the document's blocks, so the rules and runs they make do not shift the ids
  the document's blocks use.
- `<!-- test: subscription ... -->` before a python block: run as a script while the test changes
  product 1's stock every second; it must exit 0 having printed a run's events up to a finished
  status, in increasing seq.
- `<!-- test: script ... -->` before a python block: run as a script, in document order, with
  the environment the earlier sh blocks exported; it must exit 0.
- `<!-- test: webhook verification ... -->` before a python block: it defines
  `verified(secret, headers, raw_body)`, called on a real request that a CALL_WEBHOOK action
  sends to a local server: true for it, false once the body or the secret differs.
- `<!-- file: PATH -->` before a block: code shown from the repository; the block must appear,
  line for line, in PATH (e.g. the example app of "Automate your own models"), which the suite
  runs.
- `<!-- test: webhook body ... -->` before a json block: a CALL_WEBHOOK ActionInput (Slack's,
  Teams' format), its `url` replaced by a local server's, saved as the one action of a MANUAL
  rule and run for real on product 1: the server must receive, as JSON, the body the same
  action's dry run rendered, with no placeholder left. Run with the examples.
- `<!-- test: console e-mail ... -->` before a text block: an e-mail as the console backend
  prints it; the server must have printed one with the same headers and body (its Date and
  Message-ID compared by their form only).
- `<!-- not tested: REASON -->`: not run; the reason is required.

Any other block fails the test. Before running, "127.0.0.1:8000" becomes the test server's
address and ".venv/bin/python" the interpreter running the tests (CI's virtualenv is elsewhere).
"""

import json
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import REPO_ROOT, isolated_environment, json_of, launch

README = REPO_ROOT / "README.md"
SETTINGS = REPO_ROOT / "config" / "settings.py"
PASSWORD = "tidy-otter-47-marble"
RUNNING_STATUSES = re.compile(r'"status":\s*"(PENDING|RUNNING|WAITING)"')
PROMPT = re.compile(rb"Password(?: \(again\))?: ")
TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})?")
BLOCK_TIMEOUT = 60
FINISHED = {"SUCCEEDED", "PARTIAL", "FAILED", "SKIPPED"}


# --- Reading the README --------------------------------------------------------------------------


@dataclass
class Block:
    line: int  # where its opening fence is, 1-based
    language: str
    text: str
    directive: str | None  # the HTML comment on the line before, without <!-- -->

    def where(self) -> str:
        return f"README.md:{self.line} ({self.language})"


def read_blocks(text: str) -> list[Block]:
    """The fenced code blocks, each with the directive comment right above it (if any)."""
    blocks, lines = [], text.splitlines()
    index = 0
    while index < len(lines):
        fence = re.match(r"^(\s*)```(\S*)\s*$", lines[index])
        if not fence:
            index += 1
            continue
        end = index + 1
        while not re.match(r"^\s*```\s*$", lines[end]):
            end += 1
        above = lines[index - 1].strip() if index else ""
        comment = re.fullmatch(r"<!--\s*(.*?)\s*-->", above)
        body = "\n".join(line.removeprefix(fence.group(1)) for line in lines[index + 1 : end])
        blocks.append(
            Block(index + 1, fence.group(2), body + "\n", comment.group(1) if comment else None)
        )
        index = end + 1
    return blocks


def declares_variables(operation: str) -> bool:
    return bool(re.match(r"\s*(query|mutation|subscription)\b[^{]*\(\s*\$", operation))


@dataclass
class Step:
    """A graphql block with its variables and the output block that shows its answer."""

    block: Block
    variables: Block | None = None
    output: Block | None = None


EXAMPLE = re.compile(
    r"example: (action on|conditions of|actions on|rule on) \S+ \d+"
    r"( are( not)? met( after \{.*\})?| end( (SUCCEEDED|SKIPPED|FAILED))+"
    r"| runs to (SUCCEEDED|SKIPPED|FAILED|PARTIAL))?"
)


def runner_of(block: Block) -> str | None:
    """ "graphql", "step" (run in document order), "example" (run at the end), or None."""
    directive = block.directive or ""
    if block.language == "graphql" and (not directive or directive.startswith("as ")):
        return "graphql"
    if block.language == "sh" and not directive:
        return "step"
    if block.language == "python" and directive.startswith(("test: subscription", "test: script")):
        return "step"
    if block.language == "json" and EXAMPLE.fullmatch(directive):
        return "example"
    if block.language == "python" and directive.startswith("test: webhook verification"):
        return "example"
    if directive.startswith("file: "):
        return "file"
    if block.language == "json" and directive.startswith("test: webhook body"):
        return "example"
    if block.language == "text" and directive.startswith("test: console e-mail"):
        return "step"
    return None


def plan(blocks: list[Block]) -> tuple[list, list, list[str]]:
    """(steps in document order, deferred examples, problems): what runs each block."""
    steps, examples, problems = [], [], []
    index = 0
    while index < len(blocks):
        block = blocks[index]
        index += 1
        directive = block.directive or ""
        if directive.startswith("not tested:"):
            if not directive.removeprefix("not tested:").strip():
                problems.append(f"{block.where()}: 'not tested' without a reason")
            continue
        runner = runner_of(block)
        if runner == "graphql":
            step = Step(block)
            if declares_variables(block.text):
                if index >= len(blocks) or blocks[index].language != "json":
                    problems.append(f"{block.where()}: declares variables but no json follows")
                    continue
                step.variables = blocks[index]
                index += 1
            if index < len(blocks) and blocks[index].directive == "output":
                step.output = blocks[index]
                index += 1
            steps.append(step)
        elif runner == "step":
            steps.append(block)
        elif runner == "example":
            examples.append(block)
        elif runner == "file":
            continue  # checked by test_code_shown_from_a_file_is_in_that_file
        else:
            problems.append(
                f"{block.where()}: no runner for this block"
                + (f" (directive {directive!r})" if directive else "")
                + ": give it one (see tests/docs/test_readme.py) or mark it"
                " <!-- not tested: reason -->"
            )
    return steps, examples, problems


def test_every_block_has_a_runner_or_a_reason():
    _steps, _examples, problems = plan(read_blocks(README.read_text()))
    assert problems == []


def test_code_shown_from_a_file_is_in_that_file():
    shown = [
        block
        for block in read_blocks(README.read_text())
        if (block.directive or "").startswith("file: ")
    ]
    assert shown, "the own-models guide shows its example app's code"
    for block in shown:
        path = REPO_ROOT / block.directive.removeprefix("file: ").strip()
        assert path.is_file(), f"{block.where()}: no file {path}"
        assert block.text in path.read_text(), f"{block.where()}: not the code of {path}"


def test_only_the_install_and_deployment_commands_are_not_run():
    reasons = [
        block.directive
        for block in read_blocks(README.read_text())
        if (block.directive or "").startswith("not tested:")
    ]
    # The two Quickstart commands, the distributed deployment, restoring (the server stopped;
    # PostgreSQL's tools) and a distributed upgrade.
    assert len(reasons) == 5, reasons


def test_the_configuration_table_lists_every_setting_read_from_the_environment():
    read = set(re.findall(r'\benv(?:\.\w+)?\(\s*"([A-Z_]+)"', SETTINGS.read_text()))
    section = README.read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `([A-Z_]+)` \|", section, flags=re.MULTILINE))
    assert listed == read


# --- Running it ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("readme-server")
    # An empty database, as the Quickstart's first start has: `serve` applies the migrations.
    with isolated_environment(data_dir, embedded=True, migrated=False) as env:
        env["AUTOMATION_WEBHOOK_ALLOW_PRIVATE_NETWORKS"] = "true"  # the local webhook receiver
        server = launch(env, data_dir)
        try:
            yield server
        finally:
            server.stop()


class Reader:
    """Someone following the README: a shell environment, tokens, browser sessions."""

    def __init__(self, server):
        self.server = server
        self.env = dict(server.env)
        self.sessions: dict[str, httpx.Client] = {}

    def adapt(self, text: str) -> str:
        address = self.server.base_url.removeprefix("http://")
        return text.replace("127.0.0.1:8000", address).replace(".venv/bin/python", sys.executable)

    # sh ---------------------------------------------------------------------------------------

    def shell(self, block: Block) -> str:
        with tempfile.NamedTemporaryFile(suffix=".env") as exported:
            script = f"set -euo pipefail\n{self.adapt(block.text)}\nenv -0 > {exported.name}\n"
            status, output = run_in_terminal(script, self.env)
            assert status == 0, f"{block.where()} exited {status}:\n{output}"
            pairs = Path(exported.name).read_bytes().decode().split("\0")
        self.env = dict(pair.split("=", 1) for pair in pairs if "=" in pair)
        assert '"errors"' not in output, f"{block.where()}:\n{output}"
        return output

    # graphql ------------------------------------------------------------------------------------

    def graphql(self, query: str, variables=None, as_user: str | None = None) -> dict:
        body = {"query": query, "variables": variables or {}}
        if as_user is None:
            headers = {"Authorization": f"Bearer {self.env['TOKEN']}"}
            answer = httpx.post(f"{self.server.base_url}/graphql/", json=body, headers=headers)
        else:
            browser = self.session(as_user)
            answer = browser.post(
                "/graphql/", json=body, headers={"X-CSRFToken": browser.cookies["csrftoken"]}
            )
        return json_of(answer)

    def session(self, username: str) -> httpx.Client:
        """A browser signed in at /accounts/login/, as the README tells a user to."""
        if username not in self.sessions:
            browser = httpx.Client(base_url=self.server.base_url, timeout=30)
            browser.get("/accounts/login/")
            signed_in = browser.post(
                "/accounts/login/",
                data={
                    "username": username,
                    "password": PASSWORD,
                    "csrfmiddlewaretoken": browser.cookies["csrftoken"],
                },
            )
            assert signed_in.status_code == 302, signed_in.text[:500]
            assert signed_in.headers["location"] == "/graphql/"
            self.sessions[username] = browser
        return self.sessions[username]

    def run_step(self, step: Step) -> None:
        directive = step.block.directive or ""
        as_user = directive.removeprefix("as ").strip() if directive.startswith("as ") else None
        variables = json.loads(step.variables.text) if step.variables else None
        query = step.block.text
        answer = self.graphql(query, variables, as_user)
        deadline = time.monotonic() + BLOCK_TIMEOUT
        while is_query(query) and RUNNING_STATUSES.search(json.dumps(answer)):
            assert time.monotonic() < deadline, f"{step.block.where()}: runs never finished"
            time.sleep(0.3)
            answer = self.graphql(query, variables, as_user)
        shown = json.loads(step.output.text) if step.output else None
        if shown is None or "errors" not in shown:
            assert "errors" not in answer, f"{step.block.where()}: {answer['errors']}"
        if shown is not None:
            assert normalized(answer) == normalized(shown), (
                f"{step.output.where()} differs from the real answer:\n"
                + json.dumps(answer, indent=2)
            )

    # python ---------------------------------------------------------------------------------------

    def subscription_script(self, block: Block) -> None:
        """The snippet as a reader runs it, while the product's stock changes (each change
        fires the "Low stock" rule)."""
        with tempfile.NamedTemporaryFile("w", suffix=".py") as script:
            script.write(self.adapt(block.text))
            script.flush()
            process = subprocess.Popen(
                [sys.executable, script.name],
                cwd=REPO_ROOT,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            change = (
                'mutation($stock: Int!) { updateProduct(id: "1", input: {stock: $stock}) { id } }'
            )
            deadline = time.monotonic() + BLOCK_TIMEOUT
            stock = 2
            try:
                while process.poll() is None and time.monotonic() < deadline:
                    time.sleep(1)
                    assert "errors" not in self.graphql(change, {"stock": stock})
                    stock = 3 - stock  # 2, 1, 2...: every change is a change of the stock
                output, errors = process.communicate(timeout=10)
            finally:
                if process.poll() is None:
                    process.kill()
        assert process.returncode == 0, f"{block.where()}:\n{errors}"
        events = [line.split(maxsplit=3) for line in output.splitlines()]
        assert events and events[-1][2] in FINISHED, output
        last = events[-1][0]
        seqs = [int(seq) for log_id, seq, _status, _rule in events if log_id == last]
        assert seqs == sorted(set(seqs)), output

    def script(self, block: Block) -> None:
        """The snippet as a reader runs it, with what the earlier sh blocks exported."""
        with tempfile.NamedTemporaryFile("w", suffix=".py") as script:
            script.write(self.adapt(block.text))
            script.flush()
            done = subprocess.run(
                [sys.executable, script.name],
                cwd=REPO_ROOT,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=BLOCK_TIMEOUT,
            )
        assert done.returncode == 0, f"{block.where()}:\n{done.stdout}\n{done.stderr}"

    # examples ---------------------------------------------------------------------------------------

    def rule_example(self, block: Block, number: int) -> None:
        """A whole rule: dry-run (it must say it would hold when it has holdFor), or run for
        real and followed until it is over."""
        words = block.directive.split()
        model, record = words[3], words[4]
        rule_input = {"organization": "1", "name": f"README example {number}", "model": model}
        created = self.graphql(
            "mutation($input: RuleInput!) { createRule(input: $input) { id holdFor } }",
            {"input": {**rule_input, **json.loads(block.text)}},
        )
        assert "errors" not in created, f"{block.where()}: {created['errors']}"
        rule = created["data"]["createRule"]
        if "runs to" in block.directive:
            run = self.graphql(
                "mutation($id: ID!, $object: ID!) { runRule(id: $id, objectId: $object) { id } }",
                {"id": rule["id"], "object": record},
            )
            assert "errors" not in run, f"{block.where()}: {run['errors']}"
            log = self.finished_log(run["data"]["runRule"]["id"])
            assert log["status"] == words[-1], f"{block.where()}: {log}"
        else:
            dry = self.graphql(
                """mutation($id: ID!, $object: ID!) {
                     runRule(id: $id, objectId: $object, dryRun: true) {
                       conditionsMet hold { note } actionLogs { status result error } } }""",
                {"id": rule["id"], "object": record},
            )
            assert "errors" not in dry, f"{block.where()}: {dry['errors']}"
            run = dry["data"]["runRule"]
            assert run["conditionsMet"] is True, f"{block.where()}: {run}"
            assert {entry["status"] for entry in run["actionLogs"]} <= {"SUCCEEDED"}, run
            assert (run["hold"] is not None) is (rule["holdFor"] is not None), run
        self.graphql("mutation($id: ID!) { deleteRule(id: $id) }", {"id": rule["id"]})

    def example(self, block: Block, number: int) -> None:
        if block.directive.startswith("example: rule on"):
            return self.rule_example(block, number)
        directive, _after, changes = block.directive.partition(" after ")
        words = directive.split()
        kind, model, record = words[1], words[3], words[4]
        rule_input = {
            "organization": "1",
            "name": f"README example {number}",
            "triggerType": "MANUAL",
            "model": model,
        }
        if changes:
            rule_input.update(triggerType="EVENT", triggerEvent="UPDATED")
        if kind == "action":
            rule_input["actions"] = [json.loads(block.text)]
        elif kind == "actions":
            rule_input["actions"] = json.loads(block.text)
        else:
            rule_input["conditions"] = json.loads(block.text)
        created = self.graphql(
            "mutation($input: RuleInput!) { createRule(input: $input) { id } }",
            {"input": rule_input},
        )
        assert "errors" not in created, f"{block.where()}: {created['errors']}"
        rule_id = created["data"]["createRule"]["id"]
        dry = self.graphql(
            """mutation($id: ID!, $object: ID!, $changes: JSON) {
                 runRule(id: $id, objectId: $object, dryRun: true, changes: $changes) {
                   conditionsMet conditionTrace { error } actionLogs { status result error } } }""",
            {"id": rule_id, "object": record, "changes": json.loads(changes) if changes else None},
        )
        assert "errors" not in dry, f"{block.where()}: {dry['errors']}"
        run = dry["data"]["runRule"]
        if kind == "action":
            assert run["actionLogs"][0]["status"] == "SUCCEEDED", f"{block.where()}: {run}"
        elif kind == "actions":
            statuses = [entry["status"] for entry in run["actionLogs"]]
            assert statuses == words[words.index("end") + 1 :], f"{block.where()}: {run}"
        else:
            assert [entry["error"] for entry in run["conditionTrace"]] == [None] * len(
                run["conditionTrace"]
            )
            assert run["conditionsMet"] is directive.endswith(" are met"), block.where()
        self.graphql("mutation($id: ID!) { deleteRule(id: $id) }", {"id": rule_id})

    def webhook_verification(self, block: Block) -> None:
        """The snippet against what the engine really sends."""
        namespace: dict = {}
        exec(compile(block.text, str(README), "exec"), namespace)
        verified = namespace["verified"]
        receiver = Receiver()
        try:
            secret = "whsec-readme-test"
            rule = self.graphql(
                "mutation($input: RuleInput!) { createRule(input: $input) { id } }",
                {
                    "input": {
                        "organization": "1",
                        "name": "README webhook",
                        "triggerType": "MANUAL",
                        "model": "catalog.product",
                        "actions": [
                            {
                                "actionType": "CALL_WEBHOOK",
                                "parameters": {
                                    "url": receiver.url,
                                    "body": {"product": "{{ object }}", "note": "caf\u00e9"},
                                    "secret": secret,
                                },
                            }
                        ],
                    }
                },
            )
            run = self.graphql(
                'mutation($id: ID!) { runRule(id: $id, objectId: "1") { id } }',
                {"id": rule["data"]["createRule"]["id"]},
            )
            assert receiver.arrived.wait(BLOCK_TIMEOUT), "the webhook never arrived"
        finally:
            receiver.close()
        headers, body = receiver.headers, receiver.body
        log = self.finished_log(run["data"]["runRule"]["id"])
        assert headers["Content-Type"] == "application/json"
        key = log["actionLogs"][0]["result"]["idempotency_key"]
        assert headers["Idempotency-Key"] == key
        assert re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}-0", key), key
        assert abs(int(headers["X-Automation-Timestamp"]) - time.time()) < BLOCK_TIMEOUT
        assert json.loads(body)["note"] == "caf\u00e9"
        assert verified(secret.encode(), headers, body) is True
        assert verified(b"another-secret", headers, body) is False
        assert verified(secret.encode(), headers, body.replace(b"caf", b"CAF")) is False

    def webhook_body(self, block: Block, number: int) -> None:
        """A chat tool's webhook (Slack, Teams) receives the body as written, rendered."""
        action = json.loads(block.text)
        receiver = Receiver()
        try:
            action["parameters"]["url"] = receiver.url
            rule_input = {
                "organization": "1",
                "name": f"README chat webhook {number}",
                "triggerType": "MANUAL",
                "model": "catalog.product",
                "actions": [action],
            }
            created = self.graphql(
                "mutation($input: RuleInput!) { createRule(input: $input) { id } }",
                {"input": rule_input},
            )
            assert "errors" not in created, f"{block.where()}: {created['errors']}"
            rule_id = created["data"]["createRule"]["id"]
            run = """mutation($id: ID!, $dry: Boolean) {
                       runRule(id: $id, objectId: "1", dryRun: $dry) { id actionLogs { result } } }"""
            dry = self.graphql(run, {"id": rule_id, "dry": True})["data"]["runRule"]
            rendered = dry["actionLogs"][0]["result"]["body"]
            real = self.graphql(run, {"id": rule_id, "dry": False})["data"]["runRule"]
            assert receiver.arrived.wait(BLOCK_TIMEOUT), f"{block.where()}: nothing arrived"
            assert self.finished_log(real["id"])["status"] == "SUCCEEDED", block.where()
        finally:
            receiver.close()
        assert receiver.headers["Content-Type"] == "application/json"
        received = json.loads(receiver.body)
        assert normalized(received) == normalized(rendered), block.where()  # {{ now }} moves
        assert "{{" not in receiver.body.decode(), block.where()
        self.graphql("mutation($id: ID!) { deleteRule(id: $id) }", {"id": rule_id})

    def console_email(self, block: Block) -> None:
        """The e-mail shown was printed by the server (the console backend, EMAIL_URL unset)."""
        shown = block.text.strip("\n")
        to = re.search(r"^To: .*$", shown, flags=re.MULTILINE).group(0)
        deadline = time.monotonic() + BLOCK_TIMEOUT
        while True:
            printed = [
                message.group(0)
                for message in PRINTED_EMAIL.finditer(self.server.log())
                if to in message.group(0).splitlines()
            ]
            if printed or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert [email_form(message) for message in printed] == [email_form(shown)], (
            f"{block.where()} differs from what the server printed:\n" + "\n".join(printed)
        )

    def finished_log(self, log_id: str) -> dict:
        """The run's log once it is over (a reader would look again while it runs)."""
        query = "query($id: ID!) { log(id: $id) { status actionLogs { status result } } }"
        deadline = time.monotonic() + BLOCK_TIMEOUT
        while True:
            log = self.graphql(query, {"id": log_id})["data"]["log"]
            if log["status"] in FINISHED:
                return log
            assert time.monotonic() < deadline, f"run {log_id} never finished"
            time.sleep(0.3)


class Receiver:
    """A local HTTP server that keeps the first request's headers and raw body, answering 200."""

    def __init__(self):
        self.arrived = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                if not receiver.arrived.is_set():
                    receiver.headers, receiver.body = self.headers, self.rfile.read(length)
                    receiver.arrived.set()
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# An e-mail as Django's console backend prints it: headers, a blank line, the body, 79 dashes.
PRINTED_EMAIL = re.compile(r"^Content-Type: .*?^-{79}$", flags=re.MULTILINE | re.DOTALL)
MESSAGE_ID = re.compile(
    r"^Message-ID:\s*<[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}-\d+\.[0-9a-f]{16}@([^>]+)>",
    flags=re.MULTILINE,
)


def email_form(message: str) -> str:
    """A printed e-mail with its Date and Message-ID reduced to their form."""
    message = re.sub(r"^Date: .*$", "Date: <date>", message, flags=re.MULTILINE)
    return MESSAGE_ID.sub(r"Message-ID: <run key-order.recipient@\1>", message)


def is_query(operation: str) -> bool:
    return operation.lstrip().startswith(("{", "query"))


def normalized(value, key: str | None = None):
    """An answer with what changes from run to run (timestamps, durations) reduced to its form."""
    if key == "durationMs" and isinstance(value, int | float):
        return "<duration>"
    if isinstance(value, str):
        return TIMESTAMP.sub("<time>", value)
    if isinstance(value, dict):
        return {name: normalized(item, name) for name, item in value.items()}
    if isinstance(value, list):
        return [normalized(item) for item in value]
    return value


def run_in_terminal(script: str, env: dict) -> tuple[int, str]:
    """Run bash in a pseudo-terminal (`createsuperuser` and `create_user` ask for a password at
    the terminal), answering each password prompt; (exit status, output)."""
    bash = shutil.which("bash")
    pid, terminal = pty.fork()
    if pid == 0:  # the child: exec at once
        os.chdir(REPO_ROOT)
        os.execve(bash, ["bash", "-c", script], env)
    output, answered = bytearray(), 0
    deadline = time.monotonic() + BLOCK_TIMEOUT
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([terminal], [], [], 0.5)
            if not ready:
                continue
            try:
                chunk = os.read(terminal, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
            for _prompt in PROMPT.findall(bytes(output))[answered:]:
                os.write(terminal, PASSWORD.encode() + b"\n")
                answered += 1
        else:
            os.kill(pid, signal.SIGKILL)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(terminal)
    text = output.decode(errors="replace").replace("\r\n", "\n")
    return os.waitstatus_to_exitcode(status), text


@pytest.mark.embedded_only
def test_the_readme_examples_run(server):
    steps, examples, problems = plan(read_blocks(README.read_text()))
    assert problems == []
    reader = Reader(server)
    for step in steps:
        if isinstance(step, Step):
            reader.run_step(step)
        elif step.language == "sh":
            reader.shell(step)
        elif step.directive.startswith("test: script"):
            reader.script(step)
        elif step.language == "text":
            reader.console_email(step)
        else:
            reader.subscription_script(step)
    for number, block in enumerate(examples, start=1):
        if block.language == "python":
            reader.webhook_verification(block)
        elif (block.directive or "").startswith("test: webhook body"):
            reader.webhook_body(block, number)
        else:
            reader.example(block, number)
