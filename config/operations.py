"""The settings of running the server (its log and who may read its metrics), built from values
config/settings.py reads from the environment (there, so that the README's configuration table
test finds every variable), and checked: a wrong value stops the process, saying why."""

import ipaddress

from django.core.exceptions import ImproperlyConfigured

LOG_FORMATS = ("plain", "json")


def logging_config(log_format: str, level: str, huey_level: str) -> dict:
    """Django's LOGGING: one console handler, plain text or one JSON object per line
    (observability/logs.py), with the run, rule, organization and correlation ids a record is
    about."""
    if log_format not in LOG_FORMATS:
        raise ImproperlyConfigured(f"LOG_FORMAT: {log_format!r} is neither plain nor json.")
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
            "json": {"()": "observability.logs.json_formatter"},
        },
        "filters": {"context": {"()": "observability.logs.ContextFilter"}},
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": log_format,
                "filters": ["context"],
            }
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": {"huey": {"level": huey_level}},
    }


def networks(value: str) -> list[str]:
    """METRICS_ALLOWED_NETWORKS: comma-separated CIDRs, each checked; empty, none."""
    found = [network.strip() for network in value.split(",") if network.strip()]
    for network in found:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ImproperlyConfigured(
                f"METRICS_ALLOWED_NETWORKS: {network!r} is not a network (write 10.0.0.0/8)."
            ) from None
    return found
