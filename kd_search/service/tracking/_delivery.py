"""MLflow writes that outlive a briefly unreachable tracking server: buffered, replayed, saved.

A tracking server that is briefly unreachable does not stop a study. MLflow's client
retries each request (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, with backoff); a write that
still fails is buffered, in order, and replayed before the next one. While the buffer
waits, a write is tried again only once a quick health check passes (at most one every
``PROBE_INTERVAL_SECONDS``): MLflow's retries take about two minutes a request by default,
and the driver, with every trial's event behind it, would wait that long for each write.
Writes still undelivered when the launch ends are saved to the study's ``mlflow-backlog.json``
(versioned JSON, see ``kd_search.service.backlog``; never a pickle) and replayed by the
next launch of the study, so no metric is lost.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kd_search.errors import TrackingError
from kd_search.service.backlog import Write, legacy_backlog, load_backlog, save_backlog
from kd_search.service.tracking._reachability import check_tracking_uri, is_unreachable
from kd_search.urls import display_url

logger = logging.getLogger("kd_search")

# While MLflow is out of reach: how often, and how long, the writer checks whether it is back.
PROBE_INTERVAL_SECONDS = 10.0
PROBE_TIMEOUT_SECONDS = 2.0
# The names of the buffered writes: the only methods a saved backlog may name.
BUFFERED_WRITES: set[str] = set()


def buffered(write: Callable) -> Callable:
    """Make ``write``, a method of a ``BufferedWriter``, run after every write buffered
    before it, and stay buffered while MLflow is unreachable.

    Example:
        >>> from kd_search.service.tracking import StudyTracker
        >>> StudyTracker.log_epoch.__wrapped__.__name__, "log_epoch" in BUFFERED_WRITES
        ('log_epoch', True)
    """
    BUFFERED_WRITES.add(write.__name__)

    @functools.wraps(write)
    def deliver(self: BufferedWriter, *args: Any, **kwargs: Any) -> None:
        self.backlog.append((write.__name__, args, kwargs))
        self.flush()

    return deliver


class BufferedWriter:
    """The delivery of a writer's ``@buffered`` methods: in order, buffered while MLflow is
    unreachable, saved by ``close`` to ``backlog_file`` for the next launch to replay.

    Example:
        >>> writer = BufferedWriter("sqlite:///runs/mlflow.db")
        >>> writer.flush(), writer.close()
        (True, 0)
    """

    def __init__(self, tracking_uri: str, backlog_file: str | Path | None = None,
                 notify: Callable[[str], None] | None = None):
        self.tracking_uri = tracking_uri
        # Writes not yet delivered: (method name, args, kwargs), oldest first.
        self.backlog: list[Write] = []
        self.backlog_file = Path(backlog_file) if backlog_file is not None else None
        self.notify = notify or logger.warning
        self._unreachable_since: float | None = None
        self._last_probe = -math.inf

    def _replay_saved(self) -> None:
        # Called once the writer can deliver: the file goes only when every write in it has.
        if self.backlog_file is not None and (self.backlog_file.is_file()
                                             or legacy_backlog(self.backlog_file).exists()):
            self.backlog = load_backlog(self.backlog_file, BUFFERED_WRITES)
            self.notify(f"replaying {len(self.backlog)} MLflow writes a past launch could not deliver")
            if self.flush():
                self.backlog_file.unlink()

    def flush(self) -> bool:
        """Deliver the buffered writes in order; False (and they stay buffered) while unreachable."""
        if self.backlog and self._unreachable_since is not None and not self._back_again():
            return False
        while self.backlog:
            name, args, kwargs = self.backlog[0]
            try:
                getattr(type(self), name).__wrapped__(self, *args, **kwargs)
            except Exception as error:
                if not is_unreachable(error):
                    self.backlog.pop(0)
                    raise
                if self._unreachable_since is None:
                    self._unreachable_since = time.monotonic()
                    reason = str(getattr(error, "message", error)).splitlines()[0][:160]
                    self.notify(f"MLflow at {display_url(self.tracking_uri)} unreachable ({reason}); "
                                "buffering its writes, the study goes on")
                return False
            self.backlog.pop(0)
        if self._unreachable_since is not None:
            self.notify(f"MLflow at {display_url(self.tracking_uri)} reachable again after "
                        f"{time.monotonic() - self._unreachable_since:.0f} s; buffered writes delivered")
            self._unreachable_since = None
        return True

    def _back_again(self) -> bool:
        """Whether the unreachable store answers a quick health check (never asked more often
        than every ``PROBE_INTERVAL_SECONDS``)."""
        if time.monotonic() - self._last_probe < PROBE_INTERVAL_SECONDS:
            return False
        self._last_probe = time.monotonic()
        try:
            check_tracking_uri(self.tracking_uri, timeout=PROBE_TIMEOUT_SECONDS)
        except TrackingError:
            return False
        return True

    def close(self, grace_seconds: float = 60.0) -> int:
        """Deliver what is buffered, waiting up to ``grace_seconds``; save the rest for the
        next launch (``backlog_file``). Returns how many writes were saved."""
        deadline = time.monotonic() + grace_seconds
        while not self.flush() and time.monotonic() < deadline:
            time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
        if not self.backlog:
            return 0
        if self.backlog_file is None:
            raise TrackingError(f"MLflow at {display_url(self.tracking_uri)} unreachable: "
                                f"{len(self.backlog)} writes not delivered")
        save_backlog(self.backlog_file, self.backlog)
        self.notify(f"MLflow at {display_url(self.tracking_uri)} still unreachable: {len(self.backlog)} writes "
                    f"saved to {self.backlog_file}; the next launch of the study delivers them")
        return len(self.backlog)
