"""bench/common.py's CPU accounting of a process tree (`hpo serve --processes N` is a supervisor and N children)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from bench import common

BURN_IN_CHILD = (
    "import subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time\\nend = time.process_time() + 0.6\\n"
    "while time.process_time() < end: pass\\ntime.sleep(30)'])\n"
    "print(child.pid, flush=True)\n"
    "time.sleep(30)\n"
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")
def test_the_tree_counts_a_childs_cpu_and_the_process_alone_does_not() -> None:
    parent = subprocess.Popen([sys.executable, "-c", BURN_IN_CHILD], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        deadline = time.monotonic() + 20
        while common.process_cpu_seconds(child) < 0.5 and time.monotonic() < deadline:
            time.sleep(0.1)
        alone, tree = common.process_cpu_seconds(parent.pid), common.process_tree_cpu_seconds(parent.pid)
        assert tree - alone >= 0.5  # the child's burn
        assert alone < 0.5  # the parent only sleeps (its start-up is well under this)
    finally:
        subprocess.run(["pkill", "-P", str(parent.pid)], check=False)  # the child
        parent.kill()
        parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()
