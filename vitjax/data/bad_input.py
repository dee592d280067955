"""Skipping bad examples without crashing, and stopping when there are too many.

Ops raise ``SkipExample`` (dropped and counted, e.g. an empty caption) or ``BadExampleError``
(dropped, counted *and* held against ``max_bad_fraction``: a corrupt, truncated or non-image record).
The pipeline catches both in ``BadInputMonitor``, which logs each offending record once and raises
``TooManyBadExamplesError`` when the bad fraction passes the threshold, because a silently
shrinking dataset is worse than a stopped run.

Counts are per process (grain worker processes keep their own); ``counts()`` reads this process's.
"""
from __future__ import annotations

import collections
import logging
import threading

log = logging.getLogger("vitjax.data")

#: Checked only once this many examples were read (or at the end of an eval pass), so that one
#: corrupt file among the first few does not read as 100% bad.
MIN_EXAMPLES_FOR_THRESHOLD = 100

_COUNTS: collections.Counter = collections.Counter()
_LOGGED: set[str] = set()        # records already named in the log (once per process, all passes)
_LOCK = threading.Lock()


def count(key: str, n: int = 1) -> int:
    """Adds ``n`` to this process's counter ``key`` and returns the new value."""
    with _LOCK:
        _COUNTS[key] += n
        return _COUNTS[key]


def counts() -> dict[str, int]:
    """A snapshot of this process's counters, e.g. ``{"bad_examples": 2, "dropped/empty caption": 5}``."""
    with _LOCK:
        return dict(_COUNTS)


def reset_counts() -> None:
    """Clears the counters and the set of records already logged."""
    with _LOCK:
        _COUNTS.clear()
        _LOGGED.clear()


def _first_time(name: str) -> bool:
    with _LOCK:
        if name in _LOGGED:
            return False
        _LOGGED.add(name)
        return True


class SkipExample(Exception):
    """An example that is dropped and counted but is not evidence of corrupt data."""

    counts_as_bad = False

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class BadExampleError(SkipExample):
    """A record that cannot be used (undecodable image bytes, ...); counts toward ``max_bad_fraction``."""

    counts_as_bad = True


class TooManyBadExamplesError(RuntimeError):
    """More than ``max_bad_fraction`` of the examples read were bad."""


class BadInputMonitor:
    """Counts good and bad examples of one pipeline (thread-safe) and enforces the threshold.

    Args:
      max_bad_fraction: the largest tolerated fraction of bad examples (0.01 = 1%).
      what: names the pipeline in messages ("train", "eval").
    """

    def __init__(self, max_bad_fraction: float = 0.01, what: str = "input"):
        if not 0.0 <= max_bad_fraction <= 1.0:
            raise ValueError(f"max_bad_fraction must be in [0, 1], got {max_bad_fraction}")
        self.max_bad_fraction = float(max_bad_fraction)
        self.what = what
        self.seen = 0
        self.bad = 0
        self.dropped = 0
        self.last_bad: str | None = None
        self._lock = threading.Lock()

    def __getstate__(self):  # grain pickles pipelines into worker processes; locks do not pickle
        state = dict(self.__dict__)
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def good(self) -> None:
        with self._lock:
            self.seen += 1

    def skipped(self, name: str, exc: SkipExample) -> None:
        """Records a dropped example; raises TooManyBadExamplesError past the threshold."""
        with self._lock:
            self.seen += 1
            if exc.counts_as_bad:
                self.bad += 1
                self.last_bad = f"{name}: {exc.reason}"
            else:
                self.dropped += 1
            bad, seen = self.bad, self.seen
        count("bad_examples" if exc.counts_as_bad else f"dropped/{exc.reason}")
        if _first_time(name):
            log.warning("%s: skipping %s: %s (%d bad, %d dropped of %d read so far)",
                        self.what, name, exc.reason, bad, self.dropped, seen)
        if exc.counts_as_bad and seen >= MIN_EXAMPLES_FOR_THRESHOLD:
            self.check()

    def check(self) -> None:
        """Raises if the bad fraction so far is above the threshold (call at the end of a pass too)."""
        with self._lock:
            bad, seen, last = self.bad, self.seen, self.last_bad
        if seen and bad > self.max_bad_fraction * seen:
            raise TooManyBadExamplesError(
                f"{self.what}: {bad} of the {seen} examples read so far could not be decoded "
                f"({bad / seen:.1%} > input.max_bad_fraction={self.max_bad_fraction:.1%}); the last "
                f"was {last}. The dataset is damaged or holds non-image records: re-create it with "
                f"`python -m vitjax.data convert ...` (which skips and reports bad files), or raise "
                f"--config.input.max_bad_fraction.")
