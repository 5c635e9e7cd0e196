"""The automation rule engine.

`__version__` is the release's single source: pyproject.toml reads it (setuptools' `attr`,
without importing this package), and `python -m automation --version` and
`manage.py serve --version` print it. docs/changelog.md has a heading for each version.
"""

__version__ = "0.3.0"
