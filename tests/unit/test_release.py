"""The release's version: one source (automation.__version__), printed by the commands, given by
the package's metadata, and headed in the changelog with its date."""

import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import automation

# Commands run in embedded mode, whatever the suite's (run() below).
pytestmark = pytest.mark.embedded_only

REPO_ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, **env) -> subprocess.CompletedProcess:
    """The command in embedded mode (whatever the suite's mode), with `env` set besides."""
    environment = {**os.environ, **env}
    for name in ("DATABASE_URL", "REDIS_URL"):
        environment.pop(name, None)
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_python_m_automation_prints_the_version():
    done = run("-m", "automation", "--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"automation {automation.__version__}"


@pytest.mark.slow
@pytest.mark.parametrize("command", ["serve", "run_huey", "backup", "restore"])
def test_the_commands_print_the_engines_version_not_djangos(command):
    done = run("manage.py", command, "--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == automation.__version__


def test_the_installed_package_has_the_same_version():
    assert importlib.metadata.version("automation-rule-engine") == automation.__version__


def test_the_changelog_heads_the_version_with_its_date():
    changelog = (REPO_ROOT / "docs" / "changelog.md").read_text()
    headings = re.findall(r"^## (\d+\.\d+\.\d+) - (\d{4}-\d{2}-\d{2})$", changelog, re.MULTILINE)
    assert headings, "version headings: ## X.Y.Z - YYYY-MM-DD"
    assert headings[0][0] == automation.__version__, "the newest version comes first"
    versions = [tuple(int(part) for part in version.split(".")) for version, _ in headings]
    assert versions == sorted(versions, reverse=True)
    dates = [date for _, date in headings]
    assert dates == sorted(dates, reverse=True)


@pytest.mark.slow
def test_serve_skip_migrate_refuses_a_database_with_unapplied_migrations(tmp_path):
    done = run(
        "manage.py", "serve", "--skip-migrate", "--port", "1", AUTOMATION_DATA_DIR=str(tmp_path)
    )
    assert done.returncode != 0
    assert "not applied" in done.stderr and "run `manage.py migrate` first" in done.stderr
