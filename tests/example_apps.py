"""The suite's own example of "your own models": `tests.projects`, installed the documented way.

Loaded with `-p tests.example_apps` (pyproject.toml's addopts), before pytest-django reads the
settings: it adds the app to EXTRA_INSTALLED_APPS in the environment, so this process and every
server, worker and scheduler the tests start have it (README, "Automate your own models").
"""

import os

EXAMPLE_APP = "tests.projects"

_apps = [app for app in os.environ.get("EXTRA_INSTALLED_APPS", "").split(",") if app]
if EXAMPLE_APP not in _apps:
    os.environ["EXTRA_INSTALLED_APPS"] = ",".join([*_apps, EXAMPLE_APP])
