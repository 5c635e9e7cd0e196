"""Where a benchmark run keeps its data, per mode, apart from dev and test data.

- embedded: SQLite + SqliteHuey under var/bench/embedded (wiped at the start of a run);
- redis: PostgreSQL database `h_bench` (dropped and created again at the start of a run) on the
  server BENCH_DATABASE_URL names (default 127.0.0.1:5432), Redis database 8 (BENCH_REDIS_URL
  overrides it), Huey queue name `bench`. Only the bench database is ever dropped: the database
  name of a given BENCH_DATABASE_URL is replaced, never used. DATABASE_URL / REDIS_URL of the
  calling shell are ignored, so a bench run never touches dev or test data.
"""

import os
import shutil
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO_ROOT = Path(__file__).resolve().parent.parent
EMBEDDED = "embedded"
REDIS = "redis"
MODES = (EMBEDDED, REDIS)
# BENCH_DATA_DIR / BENCH_DATABASE_NAME move a run elsewhere (the correctness test does).
BENCH_DATABASE = "h_bench"
DEFAULT_DATABASE_URL = f"postgres://postgres@127.0.0.1:5432/{BENCH_DATABASE}"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/8"


def data_dir(mode: str) -> Path:
    root = os.environ.get("BENCH_DATA_DIR")
    return (Path(root) if root else REPO_ROOT / "var" / "bench") / mode


def bench_database_url(base: str | None, name: str = BENCH_DATABASE) -> str:
    """`base` (or the local default) with its database name replaced by the bench database."""
    parts = urlsplit(base or DEFAULT_DATABASE_URL)
    return urlunsplit(parts._replace(path=f"/{name}"))


def environment(mode: str, base: dict | None = None) -> dict:
    """The environment of a bench process (and of the servers and workers it starts)."""
    env = dict(os.environ if base is None else base)
    env["AUTOMATION_DATA_DIR"] = str(data_dir(mode))
    env.setdefault("SECRET_KEY", "bench-secret-key-not-for-production")
    env["LOG_LEVEL"] = "WARNING"
    env["HUEY_LOG_LEVEL"] = "ERROR"
    env["PYTHONUNBUFFERED"] = "1"
    env["DEBUG"] = "false"
    if mode == EMBEDDED:
        env.pop("DATABASE_URL", None)
        env.pop("REDIS_URL", None)
    else:
        env["DATABASE_URL"] = bench_database_url(
            env.get("BENCH_DATABASE_URL"), env.get("BENCH_DATABASE_NAME") or BENCH_DATABASE
        )
        env["REDIS_URL"] = env.get("BENCH_REDIS_URL") or DEFAULT_REDIS_URL
        env["HUEY_NAME"] = "bench"
    return env


def reset_storage(mode: str, env: dict) -> None:
    """Start from empty storage: a fresh data dir, and in redis mode a fresh bench database."""
    directory = data_dir(mode)
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    if mode == REDIS:
        import psycopg

        parts = urlsplit(env["DATABASE_URL"])
        name = parts.path.lstrip("/")
        admin = psycopg.connect(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 5432,
            user=parts.username or "postgres",
            password=parts.password,
            dbname="postgres",
            autocommit=True,
        )
        with admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{name}"')


def services_reachable(env: dict) -> str | None:
    """None when PostgreSQL and Redis answer; otherwise why not."""
    try:
        import psycopg
        import redis

        parts = urlsplit(env["DATABASE_URL"])
        psycopg.connect(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 5432,
            user=parts.username or "postgres",
            password=parts.password,
            dbname="postgres",
            connect_timeout=3,
        ).close()
        redis.Redis.from_url(env["REDIS_URL"], socket_connect_timeout=3).ping()
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable", said why
        return f"{type(exc).__name__}: {exc}"
    return None
