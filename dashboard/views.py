"""The live runs page at /runs/: a signed-in user's window on their organizations' runs.

The view serves an empty shell, nothing else: the page's script (dashboard/static/dashboard/)
reads everything over the project's own GraphQL API, on one graphql-transport-ws connection to
/graphql/ authenticated by the session cookie, as GraphiQL's is. So the page sees exactly what the
API lets the user see (the organizations they are a member of, any role), and it only queries and
subscribes: it changes nothing.

Stored texts (organization and rule names, action results, errors) are hostile: the script writes
them with textContent only, and the Content-Security-Policy sent here lets no script run but this
server's static files (no inline script or style, no eval), lets the page connect only to its own
origin (the WebSocket included: ws:// and wss:// of the host, named explicitly because browsers
before CSP Level 3 do not count them as 'self'), and forbids framing, plugins, <base> and forms
posting elsewhere.
"""

from django.contrib.auth.decorators import login_required
from django.shortcuts import render

TEMPLATE = "dashboard/runs.html"


def content_security_policy(host: str) -> str:
    """The policy of the page served to `host` (the request's Host, checked against
    ALLOWED_HOSTS by Django before a view runs)."""
    directives = {
        "default-src": "'none'",
        "script-src": "'self'",
        "style-src": "'self'",
        "img-src": "'self'",
        "connect-src": f"'self' ws://{host} wss://{host}",
        "base-uri": "'none'",
        "form-action": "'self'",
        "frame-ancestors": "'none'",
    }
    return "; ".join(f"{name} {value}" for name, value in directives.items())


@login_required
def runs_page(request):
    response = render(request, TEMPLATE)
    response["Content-Security-Policy"] = content_security_policy(request.get_host())
    # The shell holds no data, but whose page it is should not linger in shared caches.
    response["Cache-Control"] = "no-store"
    return response
