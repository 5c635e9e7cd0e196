from django.contrib import admin
from django.urls import path

from automation.health import healthz
from graphql_api.views import graphql_view

urlpatterns = [
    path("admin/", admin.site.urls),
    path("graphql/", graphql_view, name="graphql"),
    path("healthz", healthz, name="healthz"),
]
