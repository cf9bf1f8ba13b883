"""`hpo serve`'s process settings (hpo_service/api/startup.py): the malloc arena cap (F17) and the
frozen start-up heap. Run in a child process: both change the interpreter process they run in."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

CHECK = textwrap.dedent("""
    import gc, sys
    from hpo_service.api.startup import freeze_startup_heap, limit_malloc_arenas
    took = limit_malloc_arenas()
    before = gc.get_freeze_count()
    freeze_startup_heap()
    print(took, before, gc.get_freeze_count())
""")


def run_check(env: dict[str, str]) -> list[str]:
    out = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, check=True)
    return out.stdout.split()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_arena_cap_takes_effect_on_glibc_and_the_start_up_heap_is_frozen() -> None:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    took, before, after = run_check(env)
    assert took == "True"  # this project's machines run glibc
    assert int(before) == 0 and int(after) > 10_000  # imports alone are tens of thousands of objects


def test_an_arena_setting_from_the_environment_wins() -> None:
    took, _before, _after = run_check({**os.environ, "MALLOC_ARENA_MAX": "4"})
    assert took == "False"


TRIM = textwrap.dedent("""
    from hpo_service.api.startup import trim_malloc

    def rss_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096 / 2**20

    blocks = [bytes(1500) for _ in range(40_000)]  # ~60 MB from glibc's heap (too big for pymalloc)
    pin = bytes(1500)  # allocated last, at the heap's top: free() alone cannot shrink the heap
    del blocks
    before = rss_mb()
    took = trim_malloc()
    print(took, before - rss_mb())
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_trimming_gives_freed_heap_memory_back() -> None:
    env = {**os.environ, "MALLOC_ARENA_MAX": "1"}  # one arena: the blocks are all in the main heap
    out = subprocess.run([sys.executable, "-c", TRIM], env=env, capture_output=True, text=True, check=True)
    took, released_mb = out.stdout.split()
    assert took == "True"
    assert float(released_mb) > 30  # most of the ~60 MB freed below the pinned block


def test_the_server_starts_a_trimming_thread() -> None:
    check = textwrap.dedent("""
        from hpo_service.api.startup import start_malloc_trimming
        thread = start_malloc_trimming(interval_s=0.01)
        import time; time.sleep(0.05)
        print(thread is not None and thread.daemon and thread.is_alive())
    """)
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ("True" if sys.platform.startswith("linux") else "False")
