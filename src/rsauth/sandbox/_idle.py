"""A workgroup that sleeps when idle and takes a while to resume, as Serverless does.

Redshift Serverless bills no compute while no queries run ("When no queries
are running, you aren't billed for compute capacity",
https://docs.aws.amazon.com/redshift/latest/mgmt/serverless-billing.html); a
workgroup left idle answers its next connection only after a pause while
compute comes back. That pause, and how long a workgroup must be idle first,
are not documented (unverified): both are settings here, off by default.

The front asks :meth:`IdleResume.admit` before answering a connection's
SSLRequest (or plaintext startup packet) and calls :meth:`IdleResume.leave`
when that connection ends. A workgroup is asleep when no admitted connection
is open and none has been for ``idle_after`` seconds; the connection that
finds it asleep starts one resume of ``seconds``, and every connection that
arrives meanwhile waits for the same resume instead of being refused.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Resume:
    began: float
    done: asyncio.Event
    timer: asyncio.TimerHandle | None = None


class IdleResume:
    """Sleep and resume for one front; ``seconds == 0`` (the default) turns it off.

    ``clock`` is monotonic seconds, injectable for tests. :meth:`admit` and
    :meth:`leave` run on the front's event loop; :meth:`configure` and
    :meth:`snapshot` may be called from any thread.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        # Guards every field below: the loop admits while the admin thread configures.
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.seconds = 0.0
        self.idle_after = 60.0
        self._active = 0
        self._idle_since = clock()
        self._resume: _Resume | None = None
        self._held = 0
        self._held_total = 0
        self._resumes = 0

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The event loop that runs admit/leave (the front's)."""
        self._loop = loop

    def configure(self, seconds: float, idle_after: float = 60.0) -> None:
        """Resume in ``seconds`` after ``idle_after`` idle seconds; 0 seconds turns it off.

        The idle time counts from now when nothing is open, so ``idle_after=0``
        puts an idle workgroup to sleep at once. A resume under way is re-timed
        to end ``seconds`` after it began (at once when that has passed or for 0).
        """
        if not seconds >= 0:
            raise ValueError(f"seconds must be >= 0, got {seconds}")
        if not idle_after >= 0:
            raise ValueError(f"idle_after must be >= 0, got {idle_after}")
        with self._lock:
            self.seconds = float(seconds)
            self.idle_after = float(idle_after)
            if self._active == 0:
                self._idle_since = self._clock()
            retime = self._resume is not None
        if retime and self._loop is not None:
            self._loop.call_soon_threadsafe(self._retime)

    def state(self) -> str:
        with self._lock:
            return self._state_locked()

    def _state_locked(self) -> str:
        if self._resume is not None:
            return "resuming"
        if self.seconds <= 0:
            return "off"
        return "asleep" if self._asleep_locked() else "awake"

    def _asleep_locked(self) -> bool:
        return self._active == 0 and self._clock() - self._idle_since >= self.idle_after

    def snapshot(self) -> dict[str, object]:
        """The setting, the state, and how many connections wait and have waited."""
        with self._lock:
            return {
                "seconds": self.seconds,
                "idle_after": self.idle_after,
                "state": self._state_locked(),
                "open": self._active,
                "held": self._held,
                "held_total": self._held_total,
                "resumes": self._resumes,
            }

    async def admit(self) -> None:
        """Return once the workgroup is awake; the caller must :meth:`leave` afterwards."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._resume is None and self.seconds > 0 and self._asleep_locked():
                resume = _Resume(self._clock(), asyncio.Event())
                resume.timer = loop.call_later(self.seconds, self._finish, resume)
                self._resume = resume
                self._resumes += 1
            resume_now = self._resume
            if resume_now is None:
                self._active += 1
                return
            self._held += 1
            self._held_total += 1
        try:
            await resume_now.done.wait()
        except asyncio.CancelledError:
            with self._lock:
                if resume_now.done.is_set():
                    # _finish counted this connection as open already.
                    self._leave_locked()
                else:
                    self._held -= 1
            raise

    def leave(self) -> None:
        with self._lock:
            self._leave_locked()

    def _leave_locked(self) -> None:
        self._active -= 1
        if self._active == 0:
            self._idle_since = self._clock()

    def _finish(self, resume: _Resume) -> None:
        with self._lock:
            if self._resume is not resume:
                return
            self._resume = None
            # The waiting connections are open from now on, so none of them finds
            # the workgroup asleep again before it has started.
            self._active += self._held
            self._held = 0
            self._idle_since = self._clock()
            if resume.timer is not None:
                resume.timer.cancel()
        resume.done.set()

    def _retime(self) -> None:
        with self._lock:
            resume = self._resume
            if resume is None:
                return
            if resume.timer is not None:
                resume.timer.cancel()
            remaining = resume.began + self.seconds - self._clock()
        assert self._loop is not None
        if remaining <= 0:
            self._finish(resume)
        else:
            resume.timer = self._loop.call_later(remaining, self._finish, resume)

    def reset_counts(self) -> None:
        """Zero the totals (``held_total``, ``resumes``); open and held connections stay."""
        with self._lock:
            self._held_total = self._held
            self._resumes = 1 if self._resume is not None else 0

    def finish_now(self) -> None:
        """End a resume under way at once (the front stopping)."""
        with self._lock:
            resume = self._resume
        if resume is not None:
            self._finish(resume)
