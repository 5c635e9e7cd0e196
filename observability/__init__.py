"""What operators watch: the Prometheus metrics every layer counts into (metrics.py), who may
read them (access.py), a worker's own metrics port (exposition.py) and the log format (logs.py).

The lowest layer of the project (pyproject.toml's import-linter contracts): it imports Django's
settings and its libraries only, so accounts, the engine and the API can all count into it.
"""
