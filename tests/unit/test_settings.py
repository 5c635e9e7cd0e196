"""Settings pick the embedded or the distributed stack from the environment.

Each case imports the settings in a fresh interpreter with a controlled environment, since the
module reads the environment once, at import.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Each case reads the settings in a child process with an environment of its own.
pytestmark = pytest.mark.embedded_only

REPO_ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json
from django.conf import settings
from huey.contrib.djhuey import HUEY  # built from settings.HUEY; needs no app registry
db = settings.DATABASES["default"]
print(json.dumps({
    "embedded": settings.EMBEDDED,
    "db_engine": db["ENGINE"],
    "db_name": str(db["NAME"]),
    "db_host": db.get("HOST"),
    "db_options": db.get("OPTIONS", {}),
    "huey_class": type(HUEY).__name__,
    "huey_consumer": settings.HUEY["consumer"],
    "huey_blocking": HUEY.storage.blocking,
    "huey_poll": getattr(HUEY.storage, "poll", None),
    "huey_immediate": HUEY.immediate,
    "channel_layer": settings.CHANNEL_LAYERS["default"]["BACKEND"],
    "channel_hosts": settings.CHANNEL_LAYERS["default"].get("CONFIG", {}).get("hosts"),
    "channel_prefix": settings.CHANNEL_LAYERS["default"].get("CONFIG", {}).get("prefix"),
    "cache": settings.CACHES["default"]["BACKEND"],
    "debug": settings.DEBUG,
    "secret_key": settings.SECRET_KEY,
    "allowed_hosts": settings.ALLOWED_HOSTS,
    "data_dir": str(settings.DATA_DIR),
    "invitation_days": settings.ACCOUNTS_INVITATION_DAYS,
    "schedule_grace_seconds": settings.AUTOMATION_SCHEDULE_GRACE_SECONDS,
}))
"""


def load_settings(tmp_path, **env) -> dict:
    """The settings a process started with `env` (on top of a clean environment) would see."""
    child_env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "REDIS_URL", "DEBUG", "SECRET_KEY", "ALLOWED_HOSTS"}
    }
    child_env.update(
        {"DJANGO_SETTINGS_MODULE": "config.settings", "AUTOMATION_DATA_DIR": str(tmp_path)}
    )
    child_env.update(env)
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=REPO_ROOT,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_no_urls_means_embedded_sqlite_huey_on_sqlite_and_in_memory_layer(tmp_path):
    loaded = load_settings(tmp_path)

    assert loaded["embedded"] is True
    assert loaded["db_engine"] == "config.sqlite"
    assert loaded["db_name"] == str(tmp_path / "db.sqlite3")
    assert "journal_mode=WAL" in loaded["db_options"]["init_command"]
    assert loaded["db_options"]["transaction_mode"] == "IMMEDIATE"
    assert loaded["huey_class"] == "WakeableSqliteHuey"
    assert loaded["huey_immediate"] is False
    assert loaded["channel_layer"] == "channels.layers.InMemoryChannelLayer"
    assert loaded["cache"] == "django.core.cache.backends.locmem.LocMemCache"
    assert loaded["data_dir"] == str(tmp_path)


def test_embedded_queue_wakes_its_workers_and_polls_other_processes_tasks_often(tmp_path):
    loaded = load_settings(tmp_path)

    assert loaded["huey_consumer"]["worker_type"] == "thread"
    # Workers wait in dequeue() (woken by an enqueue in this process) instead of sleeping.
    assert loaded["huey_blocking"] is True
    assert loaded["huey_poll"] <= 0.1


def test_urls_mean_distributed_postgres_redis_huey_and_redis_layer(tmp_path):
    loaded = load_settings(
        tmp_path,
        DATABASE_URL="postgres://app:secret@db.internal:5433/automation",
        REDIS_URL="redis://cache.internal:6380/2",
    )

    assert loaded["embedded"] is False
    # Django's backend with the before-commit hook of config/db.py (the run stream's journal).
    assert loaded["db_engine"] == "config.postgresql"
    assert loaded["db_name"] == "automation"
    assert loaded["db_host"] == "db.internal"
    assert loaded["huey_class"] == "FairRedisHuey"
    assert loaded["huey_immediate"] is False
    assert loaded["channel_layer"] == "channels_redis.pubsub.RedisPubSubChannelLayer"
    assert loaded["channel_hosts"] == ["redis://cache.internal:6380/2"]
    # Pub/sub is not per Redis database: the prefix keeps deployments on other databases apart.
    assert loaded["channel_prefix"] == "automation.db2"
    assert loaded["cache"] == "django.core.cache.backends.redis.RedisCache"
    assert loaded["db_options"]["pool"]["max_size"] == 10, "a connection pool per process"


def test_persistent_connections_replace_the_pool(tmp_path):
    loaded = load_settings(tmp_path, DATABASE_URL="postgres://h/db", CONN_MAX_AGE="60")
    assert "pool" not in loaded["db_options"], "Django refuses a pool with CONN_MAX_AGE"


@pytest.mark.parametrize(
    ("env", "embedded", "db_engine", "huey_class"),
    [
        (
            {"DATABASE_URL": "postgres://h/db"},
            False,
            "config.postgresql",
            "WakeableSqliteHuey",
        ),
        ({"REDIS_URL": "redis://h:6379/0"}, False, "config.sqlite", "FairRedisHuey"),
    ],
    ids=["database-only", "redis-only"],
)
def test_each_url_switches_its_own_service(tmp_path, env, embedded, db_engine, huey_class):
    loaded = load_settings(tmp_path, **env)

    assert loaded["embedded"] is embedded
    assert loaded["db_engine"] == db_engine
    assert loaded["huey_class"] == huey_class


def test_secret_debug_and_hosts_come_from_the_environment(tmp_path):
    loaded = load_settings(
        tmp_path, SECRET_KEY="s3cret", DEBUG="true", ALLOWED_HOSTS="a.example,b.example"
    )

    assert loaded["secret_key"] == "s3cret"
    assert loaded["debug"] is True
    assert loaded["allowed_hosts"] == ["a.example", "b.example"]


def test_debug_is_off_by_default(tmp_path):
    assert load_settings(tmp_path)["debug"] is False


def test_invitations_stay_open_14_days_unless_the_environment_says_otherwise(tmp_path):
    assert load_settings(tmp_path)["invitation_days"] == 14
    assert load_settings(tmp_path, ACCOUNTS_INVITATION_DAYS="3")["invitation_days"] == 3


def test_the_skip_policys_grace_is_120_seconds_unless_the_environment_says_otherwise(tmp_path):
    assert load_settings(tmp_path)["schedule_grace_seconds"] == 120
    loaded = load_settings(tmp_path, AUTOMATION_SCHEDULE_GRACE_SECONDS="600")
    assert loaded["schedule_grace_seconds"] == 600


ACCOUNT_LIMITS = {
    "LOGIN_ATTEMPTS_WINDOW_SECONDS": 60,
    "LOGIN_ATTEMPTS_PER_USERNAME_AND_ADDRESS": 5,
    "LOGIN_ATTEMPTS_PER_ADDRESS": 20,
    "LOGIN_ATTEMPTS_PER_USERNAME": 100,
    "ACCOUNTS_INVITATIONS_PER_INVITER_PER_HOUR": 50,
    "ACCOUNTS_INVITATIONS_PER_ORGANIZATION_PER_HOUR": 100,
    "ACCOUNTS_OPEN_INVITATIONS_PER_USERNAME": 20,
    "ACCOUNTS_ORGANIZATIONS_PER_USER_PER_DAY": 10,
}


def test_sign_in_invitation_and_organization_limits_come_from_the_environment(
    tmp_path, monkeypatch
):
    probe = (
        "import json\nfrom django.conf import settings\n"
        f"print(json.dumps({{name: getattr(settings, name) for name in {list(ACCOUNT_LIMITS)}}}))"
    )
    monkeypatch.setattr(sys.modules[__name__], "PROBE", probe)
    assert load_settings(tmp_path) == ACCOUNT_LIMITS
    changed = {name: value + 1 for name, value in ACCOUNT_LIMITS.items()}
    assert load_settings(tmp_path, **{k: str(v) for k, v in changed.items()}) == changed


EMAIL_PROBE = (
    "import json\nfrom django.conf import settings\n"
    "print(json.dumps({name: getattr(settings, name) for name in ["
    "'EMAIL_CONFIGURED', 'EMAIL_BACKEND', 'EMAIL_HOST', 'EMAIL_PORT', 'EMAIL_USE_TLS', "
    "'EMAIL_USE_SSL', 'EMAIL_HOST_USER', 'EMAIL_HOST_PASSWORD', 'EMAIL_TIMEOUT', "
    "'DEFAULT_FROM_EMAIL']}))"
)
SMTP = "django.core.mail.backends.smtp.EmailBackend"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            None,
            {
                "EMAIL_CONFIGURED": False,
                "EMAIL_BACKEND": "django.core.mail.backends.console.EmailBackend",
            },
        ),
        (
            "smtp://mailer:p%40ss@mail.example.com",
            {
                "EMAIL_BACKEND": SMTP,
                "EMAIL_HOST": "mail.example.com",
                "EMAIL_PORT": 25,
                "EMAIL_HOST_USER": "mailer",
                "EMAIL_HOST_PASSWORD": "p@ss",
                "EMAIL_USE_TLS": False,
            },
        ),
        (
            "smtp+tls://mail.example.com",
            {
                "EMAIL_BACKEND": SMTP,
                "EMAIL_PORT": 587,
                "EMAIL_USE_TLS": True,
                "EMAIL_USE_SSL": False,
            },
        ),
        (
            "smtp+ssl://mail.example.com:2465",
            {
                "EMAIL_BACKEND": SMTP,
                "EMAIL_PORT": 2465,
                "EMAIL_USE_TLS": False,
                "EMAIL_USE_SSL": True,
            },
        ),
        (
            "dummymail://",
            {
                "EMAIL_CONFIGURED": True,
                "EMAIL_BACKEND": "django.core.mail.backends.dummy.EmailBackend",
            },
        ),
    ],
    ids=["unset", "smtp", "starttls", "tls", "dummy"],
)
def test_email_goes_where_email_url_says(tmp_path, monkeypatch, url, expected):
    monkeypatch.setattr(sys.modules[__name__], "PROBE", EMAIL_PROBE)
    loaded = load_settings(tmp_path, **({} if url is None else {"EMAIL_URL": url}))
    assert {name: loaded[name] for name in expected} == expected
    assert loaded["EMAIL_CONFIGURED"] is (url is not None)
    assert loaded["EMAIL_TIMEOUT"] == 10.0
    assert loaded["DEFAULT_FROM_EMAIL"] == "automation@localhost"


def test_a_bad_email_url_stops_the_server_saying_why(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=REPO_ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "EMAIL_URL": "smpt://h"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "EMAIL_URL: unknown scheme 'smpt'; use one of smtp://, smtps://" in result.stderr


CORS_PROBE = (
    "import json\nfrom django.conf import settings\n"
    "print(json.dumps({name: getattr(settings, name) for name in ["
    "'CORS_ALLOWED_ORIGINS', 'CORS_ALLOW_ALL_ORIGINS', 'CORS_URLS_REGEX', "
    "'CORS_ALLOW_CREDENTIALS', 'WEBSOCKET_ALLOWED_ORIGINS', 'MIDDLEWARE']}))"
)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, ([], False, None, [])),
        (
            {"CORS_ALLOWED_ORIGINS": "https://a.example,http://localhost:3000"},
            (
                ["https://a.example", "http://localhost:3000"],
                False,
                r"^/graphql/$",
                ["https://a.example", "http://localhost:3000"],
            ),
        ),
        ({"CORS_ALLOWED_ORIGINS": "*"}, ([], True, r"^/graphql/$", ["*"])),
        (
            {"CORS_ALLOWED_ORIGINS": "https://a.example", "WEBSOCKET_ALLOWED_ORIGINS": ""},
            (["https://a.example"], False, r"^/graphql/$", []),
        ),
        (
            {"CORS_ALLOWED_ORIGINS": "https://a.example", "WEBSOCKET_ALLOWED_ORIGINS": "*"},
            (["https://a.example"], False, r"^/graphql/$", ["*"]),
        ),
        (
            {"WEBSOCKET_ALLOWED_ORIGINS": "https://b.example"},
            ([], False, None, ["https://b.example"]),
        ),
    ],
    ids=["off", "listed", "any", "websocket-none", "websocket-any", "websocket-only"],
)
def test_cors_origins_and_the_websocket_origins_that_follow_them(
    tmp_path, monkeypatch, env, expected
):
    monkeypatch.setattr(sys.modules[__name__], "PROBE", CORS_PROBE)
    monkeypatch.delenv("CORS_ALLOWED_ORIGINS", raising=False)
    monkeypatch.delenv("WEBSOCKET_ALLOWED_ORIGINS", raising=False)
    loaded = load_settings(tmp_path, **env)
    origins, any_origin, urls, websocket = expected
    assert loaded["CORS_ALLOWED_ORIGINS"] == origins
    assert loaded["CORS_ALLOW_ALL_ORIGINS"] is any_origin
    if urls is None:  # off: no middleware at all
        assert "corsheaders.middleware.CorsMiddleware" not in loaded["MIDDLEWARE"]
    else:  # on: first, for /graphql/ only
        assert loaded["MIDDLEWARE"][0] == "corsheaders.middleware.CorsMiddleware"
        assert loaded["CORS_URLS_REGEX"] == urls
    assert loaded["CORS_ALLOW_CREDENTIALS"] is False
    assert loaded["WEBSOCKET_ALLOWED_ORIGINS"] == websocket


OPS_PROBE = (
    "import json\nfrom django.conf import settings\n"
    "print(json.dumps({name: getattr(settings, name) for name in ["
    "'LOG_FORMAT', 'METRICS_ALLOWED_NETWORKS', 'METRICS_TOKEN', "
    "'AUTOMATION_WORKER_HEARTBEAT_SECONDS', 'AUTOMATION_HEALTH_WORKER_STALE_SECONDS', "
    "'AUTOMATION_HEALTH_SCHEDULER_STALE_SECONDS']} | "
    "{'formatter': settings.LOGGING['handlers']['console']['formatter']}))"
)


def ops_settings(tmp_path, **env) -> subprocess.CompletedProcess:
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("METRICS_", "LOG_FORMAT", "AUTOMATION_HEALTH", "AUTOMATION_WORKER"))
    }
    environment.update(
        {"DJANGO_SETTINGS_MODULE": "config.settings", "AUTOMATION_DATA_DIR": str(tmp_path), **env}
    )
    return subprocess.run(
        [sys.executable, "-c", OPS_PROBE],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_metrics_health_and_log_settings_default_and_come_from_the_environment(tmp_path):
    default = json.loads(ops_settings(tmp_path).stdout)
    assert default == {
        "LOG_FORMAT": "plain",
        "METRICS_ALLOWED_NETWORKS": ["127.0.0.0/8", "::1/128"],
        "METRICS_TOKEN": "",
        "AUTOMATION_WORKER_HEARTBEAT_SECONDS": 10,
        "AUTOMATION_HEALTH_WORKER_STALE_SECONDS": 60,
        "AUTOMATION_HEALTH_SCHEDULER_STALE_SECONDS": 180,
        "formatter": "plain",
    }
    chosen = ops_settings(
        tmp_path,
        LOG_FORMAT="JSON",
        METRICS_ALLOWED_NETWORKS="10.0.0.0/8,fd00::/8",
        METRICS_TOKEN="t",
        AUTOMATION_HEALTH_WORKER_STALE_SECONDS="5",
    )
    assert chosen.returncode == 0, chosen.stderr
    values = json.loads(chosen.stdout)
    assert values["formatter"] == values["LOG_FORMAT"] == "json"
    assert values["METRICS_ALLOWED_NETWORKS"] == ["10.0.0.0/8", "fd00::/8"]
    assert values["AUTOMATION_HEALTH_WORKER_STALE_SECONDS"] == 5
    # Set to nothing: no network (a token only), not the loopback default.
    assert (
        json.loads(ops_settings(tmp_path, METRICS_ALLOWED_NETWORKS="").stdout)[
            "METRICS_ALLOWED_NETWORKS"
        ]
        == []
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT: 'xml' is neither plain nor json."),
        ({"METRICS_ALLOWED_NETWORKS": "10.0.0.0/33"}, "'10.0.0.0/33' is not a network"),
    ],
)
def test_bad_ops_settings_stop_the_process_saying_why(tmp_path, env, message):
    result = ops_settings(tmp_path, **env)
    assert result.returncode != 0
    assert message in result.stderr
