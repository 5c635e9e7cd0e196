"""obtainToken's rate limit: the password attempt counters (accounts/ratelimit.py), which the
admin login shares, as the API's RATE_LIMITED error."""

from accounts.ratelimit import count_login_attempt
from graphql_api.errors import RateLimited


def check_obtain_token(username: str, client_address: str) -> None:
    """Count this attempt; raise RATE_LIMITED when the username or the address is over the limit."""
    retry_after = count_login_attempt(username, client_address)
    if retry_after is not None:
        raise RateLimited(retry_after=retry_after)
