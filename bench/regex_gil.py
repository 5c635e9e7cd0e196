"""Does a slow RE2 match in one thread hold back the other threads of its process (the GIL), or
only take a core? `python -m bench.regex_gil`. Not part of `python -m bench`.

A request-like task (about 2 ms of Python in 20 pieces, each ending with a call that releases the
GIL, as a request's database and socket calls do) is timed alone, then beside: slow RE2 matches
(a REGEX condition at AUTOMATION_REGEX_MAX_STEPS' scale, about 0.5 s each) in another thread,
the same matches in another process (no GIL shared: a core taken, nothing else), and a pure
Python loop in another thread (holds the GIL but at each switch interval). If RE2 kept the GIL,
the task would slow beside the thread as beside the Python loop; it slows as beside the process.
"""

import multiprocessing
import threading
import time

import re2

PATTERN = "(?:[a-z]+ ?){1000}!"  # the noisy tenant's condition (bench/noisy_tenant.py)
TEXT = "a" * 20_000
PHASE_SECONDS = 1.5


def matches() -> None:
    options = re2.Options()
    options.max_mem = 2 * 1024 * 1024  # AUTOMATION_REGEX_MAX_MEMORY: the DFA runs out, RE2
    options.log_errors = False  # falls back to its slowest path (the NFA), as in a run
    compiled = re2.compile(PATTERN, options)
    for _ in range(4):
        compiled.search(TEXT)


def python_loop() -> None:
    end = time.thread_time() + PHASE_SECONDS
    while time.thread_time() < end:
        pass


def request_like() -> float:
    started = time.perf_counter()
    for _ in range(20):
        total = 0
        for number in range(3000):
            total += number
        time.sleep(0)  # releases the GIL, as a database or socket call does
    return time.perf_counter() - started


def timed_beside(start_other) -> list[float]:
    other = start_other() if start_other else None
    time.sleep(0.05)
    times = []
    end = time.monotonic() + PHASE_SECONDS
    while time.monotonic() < end and (other is None or other.is_alive()):
        times.append(request_like())
        time.sleep(0.002)
    if other is not None:
        other.join()
    return sorted(times)


def in_thread(target):
    def start():
        thread = threading.Thread(target=target)
        thread.start()
        return thread

    return start


def in_process(target):
    def start():
        process = multiprocessing.get_context("fork").Process(target=target)
        process.start()
        return process

    return start


def main() -> int:
    phases = (
        ("alone", None),
        ("beside RE2 matches in a thread", in_thread(matches)),
        ("beside RE2 matches in another process", in_process(matches)),
        ("beside a Python loop in a thread", in_thread(python_loop)),
    )
    for name, start in phases:
        times = timed_beside(start)
        print(
            f"{name}: request-like task p50 {times[len(times) // 2] * 1000:.1f} ms, "
            f"max {times[-1] * 1000:.1f} ms ({len(times)} tasks)",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
