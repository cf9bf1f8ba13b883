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
