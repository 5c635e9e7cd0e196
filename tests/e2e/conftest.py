"""End-to-end helpers: a real `manage.py serve` process on a free port, with its own data.

Each server gets isolated storage, so it never touches the test database pytest-django made:
- embedded mode (no DATABASE_URL / REDIS_URL in the environment): a fresh data directory, hence
  fresh SQLite files for the database and the Huey queue;
- distributed mode (both set): a fresh PostgreSQL database created beside the one DATABASE_URL
  names (dropped afterwards), and a Huey queue name and a live-event prefix of its own on
  REDIS_URL (the xdist worker's database, see tests/parallel.py).

Migrations: a server migrates its database as it starts, which costs seconds of CPU on an empty
one. So each test process migrates one template per mode once (`migrated_template`), and a new
server's database starts as a copy of it (SQLite: the file; PostgreSQL: CREATE DATABASE ...
TEMPLATE); its start then finds nothing left to apply. `isolated_environment(migrated=False)`
gives an empty database instead, as a first start on a new machine has (the session's
`e2e_server` and the README's server start that way).

Ports: each server asks the OS for a free one; when another test process took it meanwhile (the
server cannot bind), it starts again on another.

Fixtures:
- `e2e_server`: one server shared by the whole session (start-up runs migrations, so sharing saves
  seconds per test). Use it for tests that only send requests.
- `start_server`: a factory for a server of the test's own (`start_server(embedded=True)`,
  `start_server(env={"EMAIL_URL": ...})`), stopped at teardown. Use it for tests that stop,
  signal or configure the server.

A `ServerProcess` knows its `base_url`, runs `manage(...)` commands against the same data, makes
members with tokens (`create_member`), posts GraphQL (`graphql`) and stops (`stop`).
"""

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_SECONDS = 60
STOP_TIMEOUT_SECONDS = 20


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Member:
    """A user made by ServerProcess.create_member. Ids are strings, as GraphQL returns them."""

    user_id: str
    username: str
    organization_id: str
    token: str


@dataclass
class ServerProcess:
    process: subprocess.Popen
    base_url: str
    env: dict
    log_path: Path
    data_dir: Path
    _log_file: object = field(repr=False, default=None)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def manage(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run a manage.py command against this server's database and queue."""
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=REPO_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"manage.py {' '.join(args)} failed ({result.returncode}):\n{result.stderr}"
            )
        return result

    def create_member(self, username: str, organization_slug: str, role: str = "ADMIN") -> Member:
        """Create a user who is a member of the organization (created if missing) with `role`,
        and issue an API token for them."""
        code = (
            "from django.contrib.auth import get_user_model\n"
            "from accounts.models import ApiToken, Membership, Organization\n"
            f"user, _ = get_user_model().objects.get_or_create(username={username!r})\n"
            f"org, _ = Organization.objects.get_or_create(slug={organization_slug!r}, "
            f"defaults={{'name': {organization_slug!r}}})\n"
            "Membership.objects.update_or_create(user=user, organization=org, "
            f"defaults={{'role': {role!r}}})\n"
            "print(user.pk, org.pk, ApiToken.issue(user=user, name='e2e')[1])\n"
        )
        output = self.manage("shell", "--no-imports", "-c", code).stdout
        user_id, organization_id, token = output.strip().splitlines()[-1].split()
        return Member(user_id, username, organization_id, token)

    def graphql(self, query: str, variables: dict | None = None, token: str | None = None):
        """POST a GraphQL request; returns the httpx response."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.post(
            f"{self.base_url}/graphql/",
            json={"query": query, "variables": variables or {}},
            headers=headers,
            timeout=30,
        )

    def is_running(self) -> bool:
        return self.process.poll() is None

    def stop(self, sig: int = signal.SIGINT, timeout: float = STOP_TIMEOUT_SECONDS) -> int:
        """Send `sig` and wait for the exit code; kills (and fails) if it does not stop in time."""
        if self.is_running():
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(
                    f"The server did not stop within {timeout}s of {signal.Signals(sig).name}:\n"
                    + self.log()
                ) from None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return self.process.returncode


def wait_until_ready(server: ServerProcess, timeout: float = START_TIMEOUT_SECONDS) -> None:
    """Poll GET /healthz until it answers 200; fail with the server's log if it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.is_running():
            raise AssertionError(
                f"The server exited ({server.process.returncode}) before it was ready:\n"
                + server.log()
            )
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{server.base_url}/healthz", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    server.stop(signal.SIGKILL)
    raise AssertionError(f"The server was not ready within {timeout}s:\n{server.log()}")


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def _postgres_admin(url: str):
    """A connection to create and drop databases: to the `postgres` database, as Django's own
    test runner does (DATABASE_URL's database need not exist: pytest-django creates its test_
    database beside it), else to DATABASE_URL's."""
    import psycopg

    parts = urlsplit(url)
    server = {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 5432,
        "user": parts.username or "postgres",
        "password": parts.password,
        "autocommit": True,
    }
    try:
        return psycopg.connect(dbname="postgres", **server)
    except psycopg.OperationalError:
        return psycopg.connect(dbname=parts.path.lstrip("/") or "postgres", **server)


_templates: dict[str, str] = {}
_templates_lock = threading.Lock()


def migrated_template(env: dict, distributed: bool) -> str:
    """This process's migrated template for the mode of `env` (made at the first call): the path
    of a SQLite file, or the name of a PostgreSQL database. Removed when the process exits."""
    key = "distributed" if distributed else "embedded"
    with _templates_lock:
        if key not in _templates:
            _templates[key] = _make_template(env, distributed)
        return _templates[key]


def _make_template(env: dict, distributed: bool) -> str:
    directory = tempfile.mkdtemp(prefix="e2e-template-")
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    env = {**env, "AUTOMATION_DATA_DIR": directory}
    if distributed:
        database = f"e2e_template_{uuid.uuid4().hex[:12]}"
        admin_url = env["DATABASE_URL"]
        with _postgres_admin(admin_url) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        atexit.register(_drop_database, admin_url, database)
        env["DATABASE_URL"] = _with_database(admin_url, database)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--verbosity", "0"],
        cwd=REPO_ROOT,
        env=env,
        check=True,
        timeout=300,
    )
    return database if distributed else os.path.join(directory, "db.sqlite3")


def _drop_database(admin_url: str, database: str) -> None:
    with _postgres_admin(admin_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def _copy_sqlite(source: str, target: Path) -> None:
    """Copy through SQLite's backup API: whatever the source's WAL still holds comes along."""
    with (
        contextlib.closing(sqlite3.connect(source)) as src,
        contextlib.closing(sqlite3.connect(target)) as dst,
    ):
        src.backup(dst)


@contextlib.contextmanager
def isolated_environment(data_dir: Path, embedded: bool | None = None, migrated: bool = True):
    """The environment for a server with storage of its own (see the module docstring).

    `embedded=None` follows the suite's mode (the DATABASE_URL / REDIS_URL of this process);
    True forces embedded mode. `migrated=False`: an empty database, not a copy of the template.
    """
    env = dict(os.environ)
    data_dir.mkdir(parents=True, exist_ok=True)
    env["AUTOMATION_DATA_DIR"] = str(data_dir)
    env.setdefault("SECRET_KEY", "e2e-secret-key-not-for-production")
    env["PYTHONUNBUFFERED"] = "1"
    distributed = not embedded and bool(env.get("DATABASE_URL") and env.get("REDIS_URL"))
    if not distributed:
        env.pop("DATABASE_URL", None)
        env.pop("REDIS_URL", None)
        if migrated:
            _copy_sqlite(migrated_template(env, distributed=False), data_dir / "db.sqlite3")
        yield env
        return
    suffix = uuid.uuid4().hex[:12]
    database = f"e2e_{suffix}"
    admin_url = env["DATABASE_URL"]
    template = f' TEMPLATE "{migrated_template(env, distributed=True)}"' if migrated else ""
    with _postgres_admin(admin_url) as conn:
        conn.execute(f'CREATE DATABASE "{database}"{template}')
    env["DATABASE_URL"] = _with_database(admin_url, database)
    env["HUEY_NAME"] = f"e2e-{suffix}"
    # Redis pub/sub ignores database numbers: servers of other tests (organization ids repeat)
    # must not hear each other's live events.
    env["CHANNEL_LAYER_PREFIX"] = f"e2e-{suffix}"
    try:
        yield env
    finally:
        _drop_database(admin_url, database)


PORT_ATTEMPTS = 3


def launch(env: dict, data_dir: Path, extra_args=(), wait: bool = True) -> ServerProcess:
    """Start `manage.py serve` on a free port; by default wait until /healthz answers (and try
    another port when the chosen one was taken before the server could bind it)."""
    for attempt in range(1, PORT_ATTEMPTS + 1):
        server = _start(env, data_dir, extra_args)
        if not wait:
            return server
        try:
            wait_until_ready(server)
            return server
        except AssertionError:
            port_taken = "address already in use" in server.log().lower()
            if server.is_running() or not port_taken or attempt == PORT_ATTEMPTS:
                raise
            server.stop()
    raise AssertionError("unreachable")


def _start(env: dict, data_dir: Path, extra_args) -> ServerProcess:
    port = free_port()
    log_path = data_dir / f"serve-{port}.log"
    log_file = open(log_path, "w")  # noqa: SIM115 - closed by ServerProcess.stop()
    process = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--port", str(port), *extra_args],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    server = ServerProcess(
        process=process,
        base_url=f"http://127.0.0.1:{port}",
        env=env,
        log_path=log_path,
        data_dir=data_dir,
        _log_file=log_file,
    )
    return server


@pytest.fixture
def start_server(tmp_path):
    """start_server(embedded=None, extra_args=(), env=None) -> a ready ServerProcess, stopped at
    teardown; `env`: variables to set besides (EMAIL_URL, CORS_ALLOWED_ORIGINS...)."""
    with contextlib.ExitStack() as stack:
        count = 0

        def start(embedded: bool | None = None, extra_args=(), env=None) -> ServerProcess:
            nonlocal count
            count += 1
            data_dir = tmp_path / f"server-{count}"
            environment = stack.enter_context(isolated_environment(data_dir, embedded=embedded))
            environment.update(env or {})
            server = launch(environment, data_dir, extra_args)
            stack.callback(server.stop)
            return server

        yield start


@pytest.fixture(scope="session")
def e2e_server(tmp_path_factory):
    """One server for the whole session (follows the suite's embedded/distributed mode)."""
    data_dir = tmp_path_factory.mktemp("e2e-server")
    # An empty database, as on a new machine: this server's start applies every migration.
    with isolated_environment(data_dir, migrated=False) as env:
        server = launch(env, data_dir)
        try:
            yield server
        finally:
            server.stop()


def json_of(response: httpx.Response) -> dict:
    """The JSON body, or a failure that shows what came back instead."""
    try:
        return response.json()
    except json.JSONDecodeError:
        raise AssertionError(f"Not JSON ({response.status_code}): {response.text[:500]}") from None
