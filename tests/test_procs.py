"""procs.alive on a process whose thread-group leader has exited while another thread still runs:
the state a Go program is in for a moment after SIGTERM, while it still holds its listening socket."""

from __future__ import annotations

import subprocess
import sys
import time

from opencs.procs import alive, proc_state

# The leader calls exit(2) (not exit_group): it turns Z while the second thread keeps running.
_CHILD = r"""
import ctypes, sys, threading, time
threading.Thread(target=lambda: (sys.stdout.write("up\n"), sys.stdout.flush(), time.sleep(1.5)), daemon=False).start()
time.sleep(0.2)
ctypes.CDLL(None, use_errno=True).syscall(60, 0)  # SYS_exit on x86_64: this thread only
"""


def test_zombie_leader_with_a_running_thread_is_alive() -> None:
    child = subprocess.Popen([sys.executable, "-c", _CHILD], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "up\n"
        deadline = time.monotonic() + 5
        while proc_state(child.pid) != "Z" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc_state(child.pid) == "Z"  # the leader is done ...
        assert alive(child.pid)  # ... but its other thread still runs
        child.wait(timeout=10)  # the thread ends, the group exits and is reaped
        assert not alive(child.pid)
    finally:
        child.kill()
        child.wait()


def test_exited_process_is_not_alive() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 5
    while proc_state(child.pid) != "Z" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not alive(child.pid)  # an unreaped zombie with no threads left
    child.wait()
    assert not alive(child.pid)
