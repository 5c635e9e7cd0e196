"""Benchmarks of the engine (issue 7): `python -m bench [--quick] [--only N] [--mode ...]`.

Every figure is a ratio against a baseline measured in the same run on the same machine (a save
with the automation receivers disconnected, a hand-written Huey task, raw channel-layer and queue
round trips...), so the table means the same on a laptop and on a server. `bench/run.py` is the
command; `bench/suite.py` runs the benchmarks of one mode in a child process (settings are read
from the environment once per process); `bench/b*_*.py` are the benchmarks themselves.
"""
