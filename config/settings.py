"""Settings, read from the environment (django-environ).

With neither DATABASE_URL nor REDIS_URL set the server runs *embedded*: SQLite in WAL mode,
Huey on SQLite and Channels' in-memory layer, so one process needs no other service. Set
DATABASE_URL (PostgreSQL) and REDIS_URL to run *distributed*: RedisHuey, channels-redis and a
Redis cache shared by every server process and worker.
"""

import os
from pathlib import Path
from urllib.parse import urlsplit

import environ
from corsheaders.defaults import default_headers as cors_default_headers
from django.core.exceptions import ImproperlyConfigured

from config import operations

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

SECRET_KEY = env("SECRET_KEY", default="dev-insecure-change-me")
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# Where the embedded mode keeps its SQLite files.
DATA_DIR = Path(env("AUTOMATION_DATA_DIR", default=str(BASE_DIR / "var")))
if not DATA_DIR.is_absolute():
    DATA_DIR = BASE_DIR / DATA_DIR
DATA_DIR.mkdir(parents=True, exist_ok=True)

REDIS_URL = env("REDIS_URL", default="")
EMBEDDED = not env("DATABASE_URL", default="") and not REDIS_URL

# strawberry_django is used but not installed: every process would import it at start-up
# (graphql_api offers its export_schema command).
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "corsheaders",
    "accounts",
    "catalog",
    "automation",
    "graphql_api",
    "dashboard",
    "huey.contrib.djhuey",  # after automation: its `run_huey` wins (Django takes the first app's)
]
# Your own apps, whose models automation may watch (README, "Automate your own models"): dotted
# module paths of installed Python packages, e.g. "tasks" or "myproject.tasks".
EXTRA_INSTALLED_APPS = env.list("EXTRA_INSTALLED_APPS", default=[])
INSTALLED_APPS += [app for app in EXTRA_INSTALLED_APPS if app not in INSTALLED_APPS]

# Under ASGI an async-capable middleware (all of Django's) inside a sync-only one (ours) costs two
# more event-loop/thread crossings per hook, so ours come last: one sync call for the chain. With
# CORS_ALLOWED_ORIGINS set, django-cors-headers' goes first, to answer preflights (see below).
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "accounts.middleware.BearerTokenMiddleware",
    "accounts.middleware.CurrentUserMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------------------------
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{DATA_DIR / 'db.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            # WAL lets the web threads read while the Huey worker writes; IMMEDIATE takes the
            # write lock at BEGIN so concurrent writers wait (timeout) instead of failing.
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
        }
    )
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test-db.sqlite3")}
    # Django's backend with a pool of open connections per process (config/sqlite): opening one
    # (the file, the pragmas, Django's SQL functions) was about 1 ms of every request and run.
    DATABASES["default"]["ENGINE"] = "config.sqlite"
else:
    # Django's backend with the before-commit hook that journals a transaction's run events
    # in it (config/db.py, automation/live/journal.py).
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        DATABASES["default"]["ENGINE"] = "config.postgresql"
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=0))
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    if DATABASES["default"]["CONN_MAX_AGE"] == 0 and env.bool("DATABASE_POOL", default=True):
        # Under ASGI each request may run on another thread, so persistent connections do not
        # help; psycopg's pool (Django 5.1+) saves a connection set-up per request and per task.
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": 1,
            "max_size": env.int("DATABASE_POOL_MAX_SIZE", default=10),
            "timeout": 30,
        }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache: holds the rule index version, shared by every process in distributed mode ---------
if REDIS_URL:
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
    }
else:
    # The sign-in and invitation counters live here: at the default 300 keys, a flood of
    # attempts under new names made the cache drop (reset) older counters.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "OPTIONS": {"MAX_ENTRIES": 100_000},
        }
    }

# --- Task queue -------------------------------------------------------------------------------
if REDIS_URL:
    HUEY = {
        "huey_class": "automation.runs.queue.FairRedisHuey",
        "name": env("HUEY_NAME", default="automation"),
        "immediate": False,
        "connection": {"url": REDIS_URL},
        "consumer": {"workers": env.int("HUEY_WORKERS", default=2), "worker_type": "thread"},
    }
else:
    HUEY = {
        # Huey on SQLite whose workers an enqueue in this process wakes at once (SQLite cannot
        # block on a queue; see automation/runs/queue.py); tasks other processes enqueue are seen
        # within 50 ms.
        "huey_class": "automation.runs.queue.WakeableSqliteHuey",
        "name": "automation",
        "immediate": False,
        "filename": str(DATA_DIR / "huey.sqlite3"),
        "journal_mode": "wal",
        "consumer": {"workers": env.int("HUEY_WORKERS", default=2), "worker_type": "thread"},
    }

# --- Channels ---------------------------------------------------------------------------------
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            # Redis pub/sub channels are not per database: two deployments sharing a Redis
            # server on different database numbers would receive each other's live events
            # (organization ids repeat across deployments). The prefix keeps them apart.
            "CONFIG": {
                "hosts": [REDIS_URL],
                "prefix": env(
                    "CHANNEL_LAYER_PREFIX",
                    default=f"automation.db{urlsplit(REDIS_URL).path.strip('/') or '0'}",
                ),
            },
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            # group_expiry: the layer drops a group member a day after it joined (for channels
            # that vanished without leaving); a dashboard subscribed for longer would go quiet.
            # Subscriptions leave their groups when they end, so nothing needs that clean-up.
            "CONFIG": {"capacity": 10_000, "group_expiry": 10 * 365 * 24 * 3600},
        }
    }

# --- Browser pages on other origins ---------------------------------------------------------------


def _checked_origins(name: str, origins: list[str] | None) -> list[str] | None:
    """`origins` when each is a full origin ("https://app.example.com", "http://host:8080") or
    "*"; otherwise the process stops, naming the variable and the value."""
    for origin in origins or ():
        parts = urlsplit(origin)
        if origin != "*" and (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.path
            or parts.query
            or parts.fragment
            or parts.username
        ):
            raise ImproperlyConfigured(
                f"{name}: {origin!r} is not an origin; write scheme://host[:port] without a "
                "path or a trailing slash (https://app.example.com), or * for any."
            )
    return origins


# Pages on other origins whose scripts may call /graphql/ over HTTP (CORS, django-cors-headers):
# full origins, or "*" for any; empty: none, and no middleware at all. Their requests carry no
# cookies (no credentials allowed): such a page signs in with a token (Authorization: Bearer),
# so a listed origin never acts with a user's browser session.
CORS_ORIGINS = _checked_origins(
    "CORS_ALLOWED_ORIGINS", env.list("CORS_ALLOWED_ORIGINS", default=[])
)
if CORS_ORIGINS:
    MIDDLEWARE.insert(0, "corsheaders.middleware.CorsMiddleware")
CORS_ALLOW_ALL_ORIGINS = "*" in CORS_ORIGINS
CORS_ALLOWED_ORIGINS = [origin for origin in CORS_ORIGINS if origin != "*"]
CORS_URLS_REGEX = r"^/graphql/$"
CORS_ALLOW_METHODS = ["GET", "POST", "OPTIONS"]
CORS_ALLOW_HEADERS = list(cors_default_headers)  # Accept, Authorization, Content-Type...
CORS_ALLOW_CREDENTIALS = False
# Pages on other origins that may open a subscription WebSocket ("https://dash.example.com", "*"
# for any). Unset: the CORS_ALLOWED_ORIGINS, so one list lets a page both query and subscribe;
# set, even to nothing (WEBSOCKET_ALLOWED_ORIGINS=), it alone decides. Same-origin pages and
# non-browser clients (no Origin header) are always allowed.
WEBSOCKET_ALLOWED_ORIGINS = _checked_origins(
    "WEBSOCKET_ALLOWED_ORIGINS", env.list("WEBSOCKET_ALLOWED_ORIGINS", default=[])
)
if "WEBSOCKET_ALLOWED_ORIGINS" not in os.environ:  # django-environ reads "" as unset
    WEBSOCKET_ALLOWED_ORIGINS = list(CORS_ORIGINS)

# --- E-mail -----------------------------------------------------------------------------------
# Where e-mail goes (SEND_EMAIL, SEND_NOTIFICATION with "email": true, invitations): one URL read
# by django-environ. smtp://user:password@host:port (plain, port 25 unless given),
# smtp+tls://... (STARTTLS, port 587), smtp+ssl://... (TLS from the start, port 465),
# consolemail:// (printed on the standard output of the process that sends: `serve`, or the
# worker in distributed mode), dummymail:// (dropped). Unset: the console. Invitations are
# e-mailed only when it is set (EMAIL_CONFIGURED): printed ones would reach nobody.
EMAIL_CONFIGURED = bool(env("EMAIL_URL", default=""))
try:
    _email = env.email_url_config(env("EMAIL_URL", default="") or "consolemail://")
except ImproperlyConfigured:
    raise ImproperlyConfigured(
        f"EMAIL_URL: unknown scheme {env('EMAIL_URL').split(':', 1)[0]!r}; use one of "
        + ", ".join(f"{scheme}://" for scheme in environ.Env.EMAIL_SCHEMES)
    ) from None
EMAIL_BACKEND = _email["EMAIL_BACKEND"]
EMAIL_USE_TLS = _email.get("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = _email.get("EMAIL_USE_SSL", False)
EMAIL_HOST = _email["EMAIL_HOST"] or "localhost"
EMAIL_PORT = _email["EMAIL_PORT"] or (465 if EMAIL_USE_SSL else 587 if EMAIL_USE_TLS else 25)
EMAIL_HOST_USER = _email["EMAIL_HOST_USER"] or ""
EMAIL_HOST_PASSWORD = _email["EMAIL_HOST_PASSWORD"] or ""
# Seconds each exchange with the SMTP server may take (connect, each command): a slow or silent
# server fails the e-mail instead of holding a worker.
EMAIL_TIMEOUT = env.float("EMAIL_TIMEOUT", default=10.0)
# The From address of every e-mail.
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="automation@localhost")

# Days an invitation to join an organization (addMember) stays open before it must be renewed.
ACCOUNTS_INVITATION_DAYS = env.int("ACCOUNTS_INVITATION_DAYS", default=14)
# Invitations (addMember) an inviter, and an organization, may send in an hour (RATE_LIMITED
# beyond), and open invitations one username may hold from all organizations (CONFLICT beyond,
# until it answers some or they expire).
ACCOUNTS_INVITATIONS_PER_INVITER_PER_HOUR = env.int(
    "ACCOUNTS_INVITATIONS_PER_INVITER_PER_HOUR", default=50
)
ACCOUNTS_INVITATIONS_PER_ORGANIZATION_PER_HOUR = env.int(
    "ACCOUNTS_INVITATIONS_PER_ORGANIZATION_PER_HOUR", default=100
)
ACCOUNTS_OPEN_INVITATIONS_PER_USERNAME = env.int(
    "ACCOUNTS_OPEN_INVITATIONS_PER_USERNAME", default=20
)
# Organizations one user may create (createOrganization) in 24 hours (RATE_LIMITED beyond).
ACCOUNTS_ORGANIZATIONS_PER_USER_PER_DAY = env.int(
    "ACCOUNTS_ORGANIZATIONS_PER_USER_PER_DAY", default=10
)

# The plain login page (/accounts/login/) is for any user, staff or not; it leads to GraphiQL.
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/graphql/"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"

# Logs (LOG_FORMAT plain, or json: an object a line), metrics, health: config/operations.py, README.
LOG_FORMAT = env("LOG_FORMAT", default="plain").strip().lower()
LOGGING = operations.logging_config(
    LOG_FORMAT, env("LOG_LEVEL", default="INFO"), env("HUEY_LOG_LEVEL", default="WARNING")
)
METRICS_ALLOWED_NETWORKS = operations.networks(
    env.str("METRICS_ALLOWED_NETWORKS", default="127.0.0.0/8,::1/128")
)
METRICS_TOKEN = env("METRICS_TOKEN", default="")
AUTOMATION_WORKER_HEARTBEAT_SECONDS = env.float("AUTOMATION_WORKER_HEARTBEAT_SECONDS", default=10)
AUTOMATION_HEALTH_WORKER_STALE_SECONDS = env.float("AUTOMATION_HEALTH_WORKER_STALE_SECONDS", 60)
AUTOMATION_HEALTH_SCHEDULER_STALE_SECONDS = env.float(
    "AUTOMATION_HEALTH_SCHEDULER_STALE_SECONDS", 180
)

# --- The automation engine --------------------------------------------------------------------
# Models automation may watch, read and write: "fields" are readable (relations may be followed
# only into other models listed here), "writable" may be set by actions.
AUTOMATION_MODELS = {
    "catalog.product": {
        "fields": [
            "id",
            "name",
            "description",
            "status",
            "price",
            "stock",
            "category",
            "created_at",
            "updated_at",
        ],
        "writable": ["name", "description", "status", "price", "stock", "category"],
    },
    "catalog.category": {
        "fields": ["id", "name", "products", "created_at", "updated_at"],
        "writable": ["name"],
    },
}
# Where processes learn that rules changed (the rule index version): the Redis cache when there is
# one, else a file in DATA_DIR (a stat() per lookup), so a separate `run_huey` or shell process on
# the same machine sees rule changes too, which a process-local cache could not tell it.
AUTOMATION_RULE_INDEX_VERSION_FILE = None if REDIS_URL else str(DATA_DIR / "rule-index.version")
AUTOMATION_MAX_CHAIN_DEPTH = env.int("AUTOMATION_MAX_CHAIN_DEPTH", default=5)
# Fan-out budgets (automation/fanout/budget.py): per run tree (a root run and every run its writes cause)
# and per organization in a one-minute window; a run or write over one is FAILED with the reason.
AUTOMATION_MAX_RUNS_PER_ROOT = env.int("AUTOMATION_MAX_RUNS_PER_ROOT", default=100)
AUTOMATION_MAX_WRITES_PER_ROOT = env.int("AUTOMATION_MAX_WRITES_PER_ROOT", default=500)
# A schedule slot or runSchedule call is one tree: its record runs and all they cause.
AUTOMATION_MAX_RUNS_PER_SLOT = env.int("AUTOMATION_MAX_RUNS_PER_SLOT", default=2000)
AUTOMATION_MAX_WRITES_PER_SLOT = env.int("AUTOMATION_MAX_WRITES_PER_SLOT", default=5000)
# retryRun calls per user per minute (each is a new run in its original's tree).
AUTOMATION_RETRIES_PER_USER_PER_MINUTE = env.int(
    "AUTOMATION_RETRIES_PER_USER_PER_MINUTE", default=30
)
AUTOMATION_MAX_RUNS_PER_MINUTE = env.int("AUTOMATION_MAX_RUNS_PER_MINUTE", default=60_000)
AUTOMATION_MAX_WRITES_PER_MINUTE = env.int("AUTOMATION_MAX_WRITES_PER_MINUTE", default=60_000)
# Byte budgets (automation/fanout/budget.py, admit_bytes): bytes runs store (their snapshot and changes,
# records their actions write, action results, notifications) per run tree and per organization
# and minute; and the organization's stored run logs and notifications in all (0: no quota).
AUTOMATION_MAX_BYTES_PER_ROOT = env.int("AUTOMATION_MAX_BYTES_PER_ROOT", default=4 * 1024 * 1024)
AUTOMATION_MAX_BYTES_PER_MINUTE = env.int(
    "AUTOMATION_MAX_BYTES_PER_MINUTE", default=512 * 1024 * 1024
)
AUTOMATION_STORAGE_QUOTA_BYTES = env.int(
    "AUTOMATION_STORAGE_QUOTA_BYTES", default=10 * 1024 * 1024 * 1024
)
# E-mails (one per recipient) an organization's actions may send in a clock minute (UTC).
AUTOMATION_MAX_EMAILS_PER_MINUTE = env.int("AUTOMATION_MAX_EMAILS_PER_MINUTE", default=100)
AUTOMATION_WEBHOOK_ALLOW_PRIVATE_NETWORKS = env.bool(
    "AUTOMATION_WEBHOOK_ALLOW_PRIVATE_NETWORKS", default=False
)
# WEBHOOK rules (POST /hooks/<token>, automation/hooks.py). The URL the API shows is built on
# this base ("https://automation.example.com"); empty: on the address the API request came to,
# which behind a proxy may not be the public one.
AUTOMATION_WEBHOOK_BASE_URL = env("AUTOMATION_WEBHOOK_BASE_URL", default="").rstrip("/")
# The largest body a webhook request may send (413 beyond, refused before it is read): each run
# stores it in its log, and conditions and templates walk it.
AUTOMATION_WEBHOOK_MAX_BODY_BYTES = env.int("AUTOMATION_WEBHOOK_MAX_BODY_BYTES", default=262_144)
# Requests a rule, and all of an organization's rules, accept in a minute (429 beyond, counted in
# the cache: Redis in distributed mode); 0: no cap.
AUTOMATION_WEBHOOK_REQUESTS_PER_RULE_PER_MINUTE = env.int(
    "AUTOMATION_WEBHOOK_REQUESTS_PER_RULE_PER_MINUTE", default=120
)
AUTOMATION_WEBHOOK_REQUESTS_PER_ORGANIZATION_PER_MINUTE = env.int(
    "AUTOMATION_WEBHOOK_REQUESTS_PER_ORGANIZATION_PER_MINUTE", default=600
)
# How far a timestamped signature's time may be from the server's clock (replays of a recorded
# request are refused once it is older).
AUTOMATION_WEBHOOK_TIMESTAMP_TOLERANCE_SECONDS = env.int(
    "AUTOMATION_WEBHOOK_TIMESTAMP_TOLERANCE_SECONDS", default=300
)
# What action templates may render: per parameter, and in all for a run (placeholders repeating
# earlier results would otherwise multiply a run's size with each action).
AUTOMATION_TEMPLATE_MAX_PARAMETER_BYTES = env.int(
    "AUTOMATION_TEMPLATE_MAX_PARAMETER_BYTES", default=64 * 1024
)
AUTOMATION_TEMPLATE_MAX_RUN_BYTES = env.int(
    "AUTOMATION_TEMPLATE_MAX_RUN_BYTES", default=1024 * 1024
)
# A dry run (runRule(dryRun: true)) is executed inside the HTTP request: its evaluation and its
# rendering together may take this long (the actions left then fail), and an organization may
# have this many at once (counted in the cache, so across processes in distributed mode).
AUTOMATION_DRY_RUN_BUDGET_SECONDS = env.float("AUTOMATION_DRY_RUN_BUDGET_SECONDS", default=5.0)
AUTOMATION_DRY_RUNS_PER_ORGANIZATION = env.int("AUTOMATION_DRY_RUNS_PER_ORGANIZATION", default=2)
AUTOMATION_DRY_RUNS_PER_USER = env.int("AUTOMATION_DRY_RUNS_PER_USER", default=2)
# Bounds of a rule's condition tree, checked when it is saved: groups (the top-level one
# included), leaves in all, and levels of groups below the top-level one.
AUTOMATION_CONDITIONS_MAX_GROUPS = env.int("AUTOMATION_CONDITIONS_MAX_GROUPS", default=100)
AUTOMATION_CONDITIONS_MAX_LEAVES = env.int("AUTOMATION_CONDITIONS_MAX_LEAVES", default=200)
AUTOMATION_CONDITIONS_MAX_DEPTH = env.int("AUTOMATION_CONDITIONS_MAX_DEPTH", default=10)
# Seconds one evaluation of a rule's conditions may take (a run, a dry run, one record of a
# scheduled fan-out); the leaves left when it is spent fail closed.
AUTOMATION_CONDITIONS_BUDGET_SECONDS = env.float(
    "AUTOMATION_CONDITIONS_BUDGET_SECONDS", default=2.0
)
# CPU seconds one organization's condition evaluations may use per minute (all its runs, dry
# runs and scheduled fan-outs together); once spent, its conditions fail closed until the minute
# ends. 0 turns it off.
AUTOMATION_CONDITIONS_CPU_SECONDS_PER_MINUTE = env.float(
    "AUTOMATION_CONDITIONS_CPU_SECONDS_PER_MINUTE", default=10.0
)
AUTOMATION_REGEX_MAX_LENGTH = 500
# REGEX conditions run on RE2 (linear time). A pattern whose compiled program and matching cache
# need more memory than this is refused when the rule is saved.
AUTOMATION_REGEX_MAX_MEMORY = env.int("AUTOMATION_REGEX_MAX_MEMORY", default=2 * 1024 * 1024)
# Linear still multiplies: a match costs up to (program size x text length) steps. A match over
# this bound is refused as an error of its condition (about 0.5 s of RE2's slowest path here).
AUTOMATION_REGEX_MAX_STEPS = env.int("AUTOMATION_REGEX_MAX_STEPS", default=100_000_000)
# A PENDING run no worker claimed within this many seconds is enqueued again; a RUNNING run whose
# heartbeat is older than the stale threshold is put back to PENDING (its worker died).
AUTOMATION_SWEEP_PENDING_AFTER_SECONDS = env.int(
    "AUTOMATION_SWEEP_PENDING_AFTER_SECONDS", default=60
)
AUTOMATION_HEARTBEAT_STALE_SECONDS = env.int("AUTOMATION_HEARTBEAT_STALE_SECONDS", default=120)
# The longest a run may wait (runs/waits.py: holdFor, a WAIT's seconds or until): waiting runs
# are stored rows retention cannot purge, so a bound keeps them from growing without end.
AUTOMATION_MAX_WAIT_SECONDS = env.int("AUTOMATION_MAX_WAIT_SECONDS", default=30 * 24 * 3600)
# Most runs a worker takes off the queue at once and executes in one transaction when all their
# actions write the database (a burst of triggering writes); 1 executes every run alone.
AUTOMATION_RUN_BATCH_SIZE = env.int("AUTOMATION_RUN_BATCH_SIZE", default=50)
# Fair sharing between organizations (automation/runs/fair_queue.py): while other organizations are
# about, a worker takes at most this many runs of one organization at once (on SQLite a batch's
# transaction holds the whole database's write lock, so there one: another tenant's run waited
# for five at x3.5, for one at x1.25 in benchmark 8)...
AUTOMATION_FAIR_BATCH_SIZE = env.int(
    "AUTOMATION_FAIR_BATCH_SIZE",
    default=1 if DATABASES["default"]["ENGINE"] == "config.sqlite" else 5,
)
# ...and an organization with this many batches in progress is passed over for one under it.
AUTOMATION_WORKERS_PER_ORGANIZATION = env.int("AUTOMATION_WORKERS_PER_ORGANIZATION", default=1)
AUTOMATION_SCHEDULE_MAX_RECORDS = env.int("AUTOMATION_SCHEDULE_MAX_RECORDS", default=1000)
AUTOMATION_MISSED_RUNS_MAX = env.int("AUTOMATION_MISSED_RUNS_MAX", default=100)
# The SKIP missed-run policy runs a slot only when the tick is at most this late for it.
AUTOMATION_SCHEDULE_GRACE_SECONDS = env.int("AUTOMATION_SCHEDULE_GRACE_SECONDS", default=120)
AUTOMATION_LOG_RETENTION_DAYS = {"SKIPPED": 7, "SUCCEEDED": 30, "PARTIAL": 90, "FAILED": 90}
# How long the run stream's journal keeps events (automation/live/journal.py): a subscriber may
# resume from a cursor this recent; an older one ends with CURSOR_EXPIRED. Purged with the logs.
AUTOMATION_STREAM_RETENTION_HOURS = env.float("AUTOMATION_STREAM_RETENTION_HOURS", default=24)

# --- GraphQL ----------------------------------------------------------------------------------
GRAPHQL_MAX_DEPTH = env.int("GRAPHQL_MAX_DEPTH", default=12)
GRAPHQL_MAX_ALIASES = env.int("GRAPHQL_MAX_ALIASES", default=30)
GRAPHQL_MAX_TOKENS = env.int("GRAPHQL_MAX_TOKENS", default=5000)
# The most values an answer may hold, as graphql_api/cost.py counts them before execution.
GRAPHQL_MAX_COST = env.int("GRAPHQL_MAX_COST", default=1_000_000)
GRAPHQL_MAX_BODY_BYTES = env.int("GRAPHQL_MAX_BODY_BYTES", default=1_000_000)
# The largest answer, counted while it is built (graphql_api/answer_size.py): JSON values such as
# a run's context count by their size, which the cost cannot know before execution.
GRAPHQL_MAX_RESPONSE_BYTES = env.int("GRAPHQL_MAX_RESPONSE_BYTES", default=10_000_000)
# Operations costing at least GRAPHQL_EXPENSIVE_QUERY_COST take one of the user's
# GRAPHQL_EXPENSIVE_QUERIES_PER_USER leases (shared by every process) while they run.
GRAPHQL_EXPENSIVE_QUERY_COST = env.int("GRAPHQL_EXPENSIVE_QUERY_COST", default=20_000)
GRAPHQL_EXPENSIVE_QUERIES_PER_USER = env.int("GRAPHQL_EXPENSIVE_QUERIES_PER_USER", default=2)
GRAPHQL_MAX_SUBSCRIPTIONS_PER_CONNECTION = env.int(
    "GRAPHQL_MAX_SUBSCRIPTIONS_PER_CONNECTION", default=50
)
# WebSocket connections at once per user (every server process together), and per client address
# while they have not authenticated (graphql_api/websocket_slots.py).
GRAPHQL_MAX_WEBSOCKETS_PER_USER = env.int("GRAPHQL_MAX_WEBSOCKETS_PER_USER", default=20)
GRAPHQL_MAX_UNAUTHENTICATED_WEBSOCKETS_PER_ADDRESS = env.int(
    "GRAPHQL_MAX_UNAUTHENTICATED_WEBSOCKETS_PER_ADDRESS", default=50
)
DATA_UPLOAD_MAX_MEMORY_SIZE = GRAPHQL_MAX_BODY_BYTES
# Password attempts in a window (starting at the first attempt) for obtainToken, /accounts/login/
# and /admin/login/ together (accounts/ratelimit.py): per username from one client address, per
# address, and per username from all addresses (counting only the attempts the first two let
# through: a ceiling against guessers spread over many addresses, high so that one address
# cannot lock a user out).
LOGIN_ATTEMPTS_WINDOW_SECONDS = env.int("LOGIN_ATTEMPTS_WINDOW_SECONDS", default=60)
LOGIN_ATTEMPTS_PER_USERNAME_AND_ADDRESS = env.int(
    "LOGIN_ATTEMPTS_PER_USERNAME_AND_ADDRESS", default=5
)
LOGIN_ATTEMPTS_PER_ADDRESS = env.int("LOGIN_ATTEMPTS_PER_ADDRESS", default=20)
LOGIN_ATTEMPTS_PER_USERNAME = env.int("LOGIN_ATTEMPTS_PER_USERNAME", default=100)
