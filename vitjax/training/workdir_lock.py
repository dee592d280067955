"""One run per workdir: ``<workdir>/run.lock``, taken when ``Trainer.train()`` starts, released when
it ends (also on errors and preemption).

    with WorkdirLock(workdir):          # WorkdirLockedError when another live run holds it
        ...

The file (JSON: host, pid, start time, the process's kernel start time) is created atomically (a
hard link of a complete temporary file, so it is never seen half-written). A second run in the same
workdir is refused with a ``WorkdirLockedError`` naming the holder. A lock is *stale*, and is taken
over with a one-line warning, when its holder is gone: on the same host, its pid no longer runs (a
SIGKILLed run) or now belongs to another process (pid reuse, e.g. a restarted container); on another
host (a shared filesystem), when its heartbeat (the file's mtime, touched every minute by the holder)
is older than 15 minutes. Multi-host runs: process 0 alone takes the lock (the others write nothing)
and all processes learn its answer (``lock_workdir``).
"""
from __future__ import annotations

import datetime
import json
import logging
import os
import socket
import threading
import time

import jax
import numpy as np
from jax.experimental import multihost_utils

from vitjax.config import ConfigError

log = logging.getLogger("vitjax")

LOCK_NAME = "run.lock"
HEARTBEAT_S = 60.0
STALE_AFTER_S = 900.0


class WorkdirLockedError(ConfigError):
    """Another live run holds the workdir's lock."""


def _proc_start(pid: int) -> str | None:
    """The kernel's start time of process ``pid`` (Linux /proc), or None when unknown."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:      # exists, owned by another user
        return True
    return True


def _read(path: str) -> dict | None:
    """The lock's content, {} when unreadable or not ours to parse, None when there is no lock."""
    try:
        with open(path) as fh:
            info = json.load(fh)
        return info if isinstance(info, dict) else {}
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}


def describe(info: dict) -> str:
    return (f"pid {info.get('pid', '?')} on host {info.get('host', '?')}, started "
            f"{info.get('start', 'at an unknown time')}")


def stale_reason(info: dict, path: str) -> str | None:
    """Why the lock ``info`` (read from ``path``) is abandoned, or None while its holder may run."""
    if not info or not isinstance(info.get("pid"), int):
        return "its lock file is unreadable"
    pid = info["pid"]
    if info.get("host") == socket.gethostname():
        if not _alive(pid):
            return "that process no longer runs"
        now = _proc_start(pid)
        if info.get("proc_start") and now and now != info["proc_start"]:
            return "that pid now belongs to another process"
        return None
    try:
        age = time.time() - os.path.getmtime(path)
    except OSError:
        return None
    if age > STALE_AFTER_S:
        return f"its heartbeat stopped {age / 60:.0f} minutes ago"
    return None


class WorkdirLock:
    """The lock of one workdir; ``acquire`` / ``release`` or a ``with`` block."""

    def __init__(self, workdir: str):
        self.workdir = os.path.abspath(workdir)
        self.path = os.path.join(self.workdir, LOCK_NAME)
        self.info: dict | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _own_info(self) -> dict:
        return {"host": socket.gethostname(), "pid": os.getpid(), "proc_start": _proc_start(os.getpid()),
                "start": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                "token": f"{os.getpid()}-{time.time_ns()}"}

    def _create(self, info: dict) -> bool:
        """Atomically creates the lock holding ``info``; False when one exists."""
        tmp = f"{self.path}.{info['token']}.tmp"
        with open(tmp, "w") as fh:
            json.dump(info, fh)
        try:
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        finally:
            os.remove(tmp)

    def acquire(self) -> None:
        os.makedirs(self.workdir, exist_ok=True)
        info = self._own_info()
        for _ in range(5):
            if self._create(info):
                self.info = info
                self._start_heartbeat()
                return
            held = _read(self.path)
            if held is None:              # released meanwhile: try again
                continue
            reason = stale_reason(held, self.path)
            if reason is None:
                raise WorkdirLockedError(
                    f"{self.workdir} is in use by another run ({describe(held)}); wait for it to end or stop "
                    f"it, or use another --workdir (if that run is gone, delete {self.path})")
            aside = f"{self.path}.stale.{info['token']}"
            try:
                os.rename(self.path, aside)
            except FileNotFoundError:     # another process took it over first
                continue
            if _read(aside) != held:      # it was replaced between reading and moving: put it back
                try:
                    os.link(aside, self.path)
                except FileExistsError:
                    pass
                os.remove(aside)
                continue
            os.remove(aside)
            log.warning("took over the stale lock %s of %s: %s", self.path, describe(held), reason)
        raise WorkdirLockedError(f"could not take the lock {self.path} (other processes keep changing it); "
                                 f"make sure one run at a time uses {self.workdir}")

    def _start_heartbeat(self) -> None:
        self._stop.clear()

        def beat():
            while not self._stop.wait(HEARTBEAT_S):
                try:
                    os.utime(self.path)
                except OSError:
                    pass

        self._thread = threading.Thread(target=beat, name="vitjax-workdir-lock", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Removes the lock if it is still this holder's."""
        if self.info is None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if (_read(self.path) or {}).get("token") == self.info["token"]:
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass
        self.info = None

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()


def lock_workdir(workdir: str) -> WorkdirLock | None:
    """Process 0 takes ``workdir``'s lock (returned; None on the other processes); every process
    raises WorkdirLockedError when process 0 could not."""
    lock, err = None, None
    if jax.process_index() == 0:
        lock = WorkdirLock(workdir)
        try:
            lock.acquire()
        except WorkdirLockedError as e:
            lock, err = None, e
    if jax.process_count() > 1:
        ok = bool(multihost_utils.broadcast_one_to_all(np.array(err is None)))
        if not ok and err is None:
            raise WorkdirLockedError(f"process 0 could not lock {workdir}: another run uses it (see process "
                                     f"0's message); use another --workdir")
    if err is not None:
        raise err
    return lock
