"""A child forked while another thread holds one of rsauth's module-level locks still works.

Each scenario runs in its own interpreter: a thread takes the lock(s) and keeps
them, the main thread forks, and the child (where a lock not replaced still
looks held, by a thread that does not exist there) takes each lock with a
timeout, then logs in. ``signal.alarm`` is the child's deadlock guard for the
login: a child stuck on a lock dies of SIGALRM instead of hanging the test.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from rsauth.sandbox import Sandbox

# Prints, one per line, "module.name" of every lock the child could not take,
# then the child's exit code (0: the login worked).
FORK_SCRIPT = """
import importlib, os, pkgutil, signal, sys, threading
import rsauth

LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()))
for info in pkgutil.walk_packages(rsauth.__path__, "rsauth."):
    if ".sandbox" not in info.name and not info.name.endswith("__main__"):
        try:
            importlib.import_module(info.name)
        except ImportError:  # an optional extra that is not installed
            pass
only = sys.argv[1]
locks = sorted(
    (module_name, name)
    for module_name, module in list(sys.modules.items())
    if module_name == "rsauth" or module_name.startswith("rsauth.")
    for name, value in list(vars(module).items())
    if isinstance(value, LOCK_TYPES) and only in ("*", f"{module_name}.{name}")
)
assert locks, "no module-level lock found"
held, release = threading.Event(), threading.Event()

def hold():
    taken = [getattr(sys.modules[m], n) for m, n in locks]
    for lock in taken:
        lock.acquire()
    held.set()
    release.wait()
    for lock in taken:
        lock.release()

threading.Thread(target=hold, daemon=True).start()
held.wait()
pid = os.fork()
if pid == 0:
    stuck = [f"{m}.{n}" for m, n in locks
             if not getattr(sys.modules[m], n).acquire(timeout=5)]
    if stuck:
        os.write(1, "".join(f"{name}\\n" for name in stuck).encode())
        os._exit(3)
    for m, n in locks:
        getattr(sys.modules[m], n).release()
    signal.alarm(60)
    try:
        rsauth.get_credentials(workgroup=os.environ["WORKGROUP"])
    except BaseException:
        os._exit(4)
    os._exit(0)
release.set()
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status))
"""


def _fork_while_held(sandbox: Sandbox, only: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", FORK_SCRIPT, only],
        env={**os.environ, "WORKGROUP": sandbox.workgroup},
        capture_output=True, text=True, timeout=180, check=True,
    ).stdout.split()
    return out


@pytest.mark.parametrize("lock", ["rsauth._config._RESOLVED_LOCK", "rsauth._api._lock"])
def test_a_child_forked_while_a_lock_is_held_logs_in(sandbox: Sandbox, lock: str) -> None:
    out = _fork_while_held(sandbox, lock)
    assert out == ["0"], f"the child could not take {lock} or log in: {out}"


def test_every_module_level_lock_is_fresh_in_a_forked_child(sandbox: Sandbox) -> None:
    out = _fork_while_held(sandbox, "*")
    assert out == ["0"], f"locks still held in the child (then its exit code): {out}"
