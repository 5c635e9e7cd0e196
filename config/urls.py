from django.contrib import admin
from django.contrib.auth.views import LoginView, LogoutView
from django.urls import path, re_path

from accounts.forms import RateLimitedLoginForm
from automation.health import healthz, livez
from automation.hooks import PATH_PATTERN, receive_webhook
from automation.metrics import metrics_view
from dashboard.views import runs_page
from graphql_api.views import graphql_view

urlpatterns = [
    path("admin/", admin.site.urls),
    # Any user's browser session (GraphiQL, session subscriptions); /admin/ admits staff only.
    # Logout is POST-only (Django's LogoutView) and leads back here; the admin's keeps its page.
    path(
        "accounts/login/",
        LoginView.as_view(authentication_form=RateLimitedLoginForm),
        name="login",
    ),
    path("accounts/logout/", LogoutView.as_view(next_page="login"), name="logout"),
    path("graphql/", graphql_view, name="graphql"),
    # The live runs page: a signed-in user's organizations' runs, read over /graphql/.
    path("runs/", runs_page, name="runs"),
    path("healthz", healthz, name="healthz"),
    path("livez", livez, name="livez"),
    path("metrics", metrics_view, name="metrics"),
    # WEBHOOK rules: the token is the credential (automation/hooks.py); with or without a slash.
    re_path(PATH_PATTERN, receive_webhook, name="webhook"),
]
