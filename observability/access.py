"""Who may read the metrics: a client in METRICS_ALLOWED_NETWORKS (loopback by default), or any
client that sends `Authorization: Bearer <METRICS_TOKEN>` when a token is set; others get 403.

Metrics say how busy the deployment is and what fails; they name no organization or rule, but
are still for its operators. The same rule guards `/metrics` on servers and a worker's
`run_huey --metrics-port`.
"""

import functools
import hmac
import ipaddress

from django.conf import settings


@functools.lru_cache(maxsize=8)
def _networks(networks: tuple[str, ...]) -> tuple:
    return tuple(ipaddress.ip_network(network, strict=False) for network in networks)


def _address(remote_addr: str | None):
    try:
        address = ipaddress.ip_address((remote_addr or "").split("%")[0])
    except ValueError:
        return None
    # An IPv4 client of a dual-stack socket shows as ::ffff:a.b.c.d.
    return getattr(address, "ipv4_mapped", None) or address


def token_matches(authorization: str | None) -> bool:
    """Is `authorization` (the header's value) `Bearer <METRICS_TOKEN>`, a token being set?"""
    token = settings.METRICS_TOKEN
    if not token or not authorization:
        return False
    scheme, _, value = authorization.strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip(), token)


def allowed(remote_addr: str | None, authorization: str | None) -> bool:
    """May a client at `remote_addr`, sending this Authorization value, read the metrics?"""
    if token_matches(authorization):
        return True
    address = _address(remote_addr)
    if address is None:
        return False
    return any(
        address.version == network.version and address in network
        for network in _networks(tuple(settings.METRICS_ALLOWED_NETWORKS))
    )
