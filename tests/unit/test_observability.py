"""The log format (LOG_FORMAT=json: one JSON object per line, with the ids of the run being
executed) and the metrics access rule, without a server."""

import io
import json
import logging

import pytest

from observability import access, logs


@pytest.fixture
def json_log():
    """A logger writing JSON lines into a buffer, as settings.LOGGING configures the console."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logs.json_formatter())
    handler.addFilter(logs.ContextFilter())
    logger = logging.getLogger("tests.json_log")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield logger, buffer
    finally:
        logger.removeHandler(handler)


def lines(buffer) -> list[dict]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_each_record_is_one_json_object_with_the_ids_of_its_context(json_log):
    logger, buffer = json_log
    with logs.context(run_id=7, rule_id=3, organization_id=1, correlation_id="abc"):
        logger.info("calling %s", "the webhook")
        logger.warning("two\nlines", extra={"rule_id": 99})  # extra= wins over the context
    logger.info("outside")
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("failed")

    first, second, outside, failed = lines(buffer)
    assert first["message"] == "calling the webhook"
    assert first["level"] == "INFO" and first["logger"] == "tests.json_log"
    assert (first["run_id"], first["rule_id"], first["organization_id"]) == (7, 3, 1)
    assert first["correlation_id"] == "abc"
    assert first["time"].endswith("+00:00")
    assert second["message"] == "two\nlines" and second["rule_id"] == 99
    assert "run_id" not in outside
    assert "ValueError: boom" in failed["exc_info"]


def test_contexts_nest_and_end(json_log):
    logger, buffer = json_log
    with logs.context(organization_id=1), logs.context(run_id=2, rule_id=None):
        logger.info("inner")
    logger.info("after")
    inner, after = lines(buffer)
    assert (inner["organization_id"], inner["run_id"]) == (1, 2) and "rule_id" not in inner
    assert "organization_id" not in after


@pytest.mark.parametrize(
    "address, allowed",
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),  # an IPv4 client of a dual-stack socket
        ("10.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("", False),
        ("not an address", False),
        (None, False),
    ],
)
def test_loopback_only_by_default(settings, address, allowed):
    settings.METRICS_ALLOWED_NETWORKS = ["127.0.0.0/8", "::1/128"]
    settings.METRICS_TOKEN = ""
    assert access.allowed(address, None) is allowed


def test_the_token_admits_any_address_and_only_as_a_bearer(settings):
    settings.METRICS_ALLOWED_NETWORKS = []
    settings.METRICS_TOKEN = "t0ken-for-scrapers"
    assert access.allowed("198.51.100.7", "Bearer t0ken-for-scrapers")
    assert access.allowed("198.51.100.7", "bearer  t0ken-for-scrapers ")
    assert not access.allowed("198.51.100.7", "Basic t0ken-for-scrapers")
    assert not access.allowed("198.51.100.7", "Bearer t0ken")
    assert not access.allowed("127.0.0.1", None)  # no network listed: none
    settings.METRICS_TOKEN = ""
    assert not access.allowed("198.51.100.7", "Bearer ")
