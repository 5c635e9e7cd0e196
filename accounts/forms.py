"""Login forms: one rate limit for every door that checks a password.

`RateLimitedLoginForm` counts each attempt against the counters obtainToken uses
(accounts/ratelimit.py) before the password is checked, so a guesser gains nothing by switching
between /accounts/login/, /admin/login/ and the API. The admin's form is the same class combined
with Django's admin form, which adds the staff check.
"""

from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError

from accounts.ratelimit import count_login_attempt


class RateLimitedLoginForm(AuthenticationForm):
    """Django's login form, refusing unchecked once an attempt is over a LOGIN_ATTEMPTS_* limit
    (counted for the username as the form resolves it: NFKC, see accounts/ratelimit.py)."""

    def clean(self):
        address = self.request.META.get("REMOTE_ADDR", "") if self.request else ""
        retry_after = count_login_attempt(self.data.get("username") or "", address)
        if retry_after is not None:
            raise ValidationError(
                "Too many login attempts. Try again in %(seconds)s seconds.",
                code="rate_limited",
                params={"seconds": retry_after},
            )
        return super().clean()


class RateLimitedAdminLoginForm(RateLimitedLoginForm, AdminAuthenticationForm):
    """The admin login: the same limit, then the admin's own checks (staff only)."""
