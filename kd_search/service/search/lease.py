"""The driver lease: which process drives a study now, and whether it still lives.

While a ``launch`` or ``confirm`` runs, it holds a lease on its study in the study's
Optuna storage: one row of the table ``kd_search_driver_leases`` (study name, a random
token, host, pid, start, heartbeat), its heartbeat renewed every few seconds by a thread.
A second driver of the same study finds the row; while the heartbeat is younger than the
grace period (default 60 s, ``KD_SEARCH_DRIVER_GRACE`` or ``--driver-grace``) the holder
lives and the second driver is refused (``DriverRunning``). Older, the holder is dead (a
SIGKILL, a lost node): the lease passes to the new driver, which then adopts the RUNNING
trials the dead one left. A driver that ends, normally, by an error or by Ctrl-C,
deletes its row.

Why not Optuna's RDB trial heartbeats (``RDBStorage(heartbeat_interval=...,
grace_period=...)`` with ``fail_stale_trials``)? They beat per trial and only while
``Study.optimize`` runs it (an ask/tell driver like kd-search's gets no thread); nothing
beats while a driver prepares its teacher or runs confirmations, when no trial is
RUNNING; they record no host or pid to name in a refusal; their remedy is to FAIL stale
trials, where kd-search continues them from their checkpoints; and nothing in them stops
a second driver from starting. A lease row is taken with one INSERT, so the database's
primary key decides between two launches at the same instant, and taken over with one
compare-and-set UPDATE. Its times are the database server's clock, so the clocks of a
cluster's nodes need not agree.

Example:
    >>> with hold_lease("sqlite:////tmp/kd-search-doc.db", "demo", grace=60):  # doctest: +SKIP
    ...     read_lease("sqlite:////tmp/kd-search-doc.db", "demo").describe()
    'pid 4242 on node-1, started 18:02:11 UTC, last seen 0 s ago'
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import sqlalchemy as sa

from kd_search.errors import OptionsError, SearchError
from kd_search.service.search.optuna_study import open_storage, storage_error

GRACE_ENV = "KD_SEARCH_DRIVER_GRACE"
DEFAULT_GRACE = 60.0
# A heartbeat at most this often; a holder is judged against at least 3 of its own beats,
# whatever grace the reader uses, so a short grace never takes a live driver for dead.
MAX_INTERVAL, BEATS_PER_GRACE = 5.0, 3
LEASES = sa.Table(
    "kd_search_driver_leases", sa.MetaData(),
    sa.Column("study_name", sa.String(512), primary_key=True),
    sa.Column("token", sa.String(64), nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("started_at", sa.Double, nullable=False),  # seconds since the epoch, database clock
    sa.Column("heartbeat_at", sa.Double, nullable=False),
    sa.Column("interval_s", sa.Double, nullable=False),
)
# Leases this process holds now: a row with this host and pid but another token was left
# by a driver in this very process that could not delete it (the storage was down).
_HELD: set[str] = set()


def driver_grace(value: float | None = None) -> float:
    """The grace period in seconds: ``value``, else ``KD_SEARCH_DRIVER_GRACE``, else 60.

    Example:
        >>> driver_grace(10), driver_grace()
        (10.0, 60.0)
    """
    if value is None:
        text = os.environ.get(GRACE_ENV)
        if not text:
            return DEFAULT_GRACE
        try:
            value = float(text)
        except ValueError:
            raise OptionsError(f"{GRACE_ENV}={text!r}: expected a number of seconds") from None
    if not value > 0:
        raise OptionsError(f"driver grace period {value!r}: expected a positive number of seconds")
    return float(value)


def heartbeat_interval(grace: float) -> float:
    """How often a holder with this grace period renews its lease.

    Example:
        >>> heartbeat_interval(60), heartbeat_interval(4)
        (5.0, 1.0)
    """
    return min(MAX_INTERVAL, grace / (BEATS_PER_GRACE + 1))


@dataclass(frozen=True)
class Lease:
    """A study's lease as read from storage; ``age`` is seconds since its last heartbeat."""

    study: str
    token: str
    host: str
    pid: int
    started_at: float
    age: float
    interval: float

    def is_dead(self, grace: float) -> bool:
        """Whether its driver is taken as dead: unseen for the grace period (and 3 of its beats)."""
        return self.age > max(grace, BEATS_PER_GRACE * self.interval) or self._left_by_this_process()

    def _left_by_this_process(self) -> bool:
        return (self.host, self.pid) == (socket.gethostname(), os.getpid()) and self.token not in _HELD

    def describe(self) -> str:
        """Where the driver runs and when it was last seen, for people.

        Example:
            >>> Lease("s", "t", "node-1", 4242, 0.0, 2.4, 5.0).describe()
            'pid 4242 on node-1, started 00:00:00 UTC, last seen 2 s ago'
        """
        started = time.strftime("%H:%M:%S UTC", time.gmtime(self.started_at))
        return f"pid {self.pid} on {self.host}, started {started}, last seen {self.age:.0f} s ago"


class DriverRunning(SearchError):
    """The study is driven by a live launch elsewhere: a second driver must not start."""

    def __init__(self, lease: Lease, grace: float, follow: str | None = None):
        self.lease, self.grace = lease, grace
        follow = follow or f"kd-search status {lease.study}"
        super().__init__(f"study {lease.study!r} is being run by another driver ({lease.describe()}); "
                         f"follow it with `{follow}`, or launch again once it has ended "
                         f"(a driver unseen for {grace:g} s counts as dead)")


def _now(engine: sa.Engine) -> sa.ColumnElement:
    """The database server's clock in seconds since the epoch, with sub-second precision."""
    dialect = engine.dialect.name
    if dialect == "sqlite":
        return sa.literal_column("((julianday('now') - 2440587.5) * 86400.0)")
    if dialect == "postgresql":
        return sa.literal_column("extract(epoch from clock_timestamp())")
    if dialect in ("mysql", "mariadb"):
        return sa.literal_column("UNIX_TIMESTAMP(NOW(6))")
    return sa.literal(time.time())  # an unknown server: this host's clock


def _engine(storage: str) -> sa.Engine:
    return open_storage(storage).engine  # type: ignore[attr-defined]


@contextmanager
def _connected(storage: str) -> Iterator[sa.Engine]:
    """An engine for one lease operation, its connections closed after it (a long study's
    driver and every `status` would otherwise keep pooled connections open on the server)."""
    engine = _engine(storage)
    try:
        yield engine
    finally:
        engine.dispose()


def _read(engine: sa.Engine, study: str) -> Lease | None:
    if not sa.inspect(engine).has_table(LEASES.name):
        return None
    query = sa.select(LEASES, (_now(engine) - LEASES.c.heartbeat_at).label("age")).where(LEASES.c.study_name == study)
    with engine.connect() as connection:
        row = connection.execute(query).mappings().first()
    if row is None:
        return None
    return Lease(row["study_name"], row["token"], row["host"], int(row["pid"]), float(row["started_at"]),
                 max(0.0, float(row["age"])), float(row["interval_s"]))


def read_lease(storage: str, study: str) -> Lease | None:
    """The study's lease, live or left by a dead driver, or None when no driver holds it.

    Example:
        >>> read_lease("sqlite:////tmp/kd-search-doc.db", "demo") is None  # doctest: +SKIP
        True
    """
    try:
        with _connected(storage) as engine:
            return _read(engine, study)
    except sa.exc.SQLAlchemyError as error:
        raise storage_error(storage, error, "cannot read the driver lease") from None


def check_no_live_driver(storage: str, study: str, grace: float | None = None) -> None:
    """Raise ``DriverRunning`` if a live driver holds the study's lease (reads only; the
    launch itself takes the lease atomically).

    Example:
        >>> check_no_live_driver("sqlite:////tmp/kd-search-doc.db", "demo")  # doctest: +SKIP
    """
    grace = driver_grace(grace)
    lease = read_lease(storage, study)
    if lease is not None and not lease.is_dead(grace):
        raise DriverRunning(lease, grace)


def _create_table(engine: sa.Engine) -> None:
    try:
        LEASES.create(engine, checkfirst=True)
    except sa.exc.SQLAlchemyError:
        if not sa.inspect(engine).has_table(LEASES.name):  # not another driver creating it at once
            raise


def _take(engine: sa.Engine, study: str, token: str, interval: float, replacing: Lease | None) -> bool:
    """Insert the lease as ``token`` (or take over ``replacing``, compare-and-set on its
    token); False when another driver got there first."""
    now = _now(engine)
    values = {"token": token, "host": socket.gethostname(), "pid": os.getpid(), "started_at": now,
              "heartbeat_at": now, "interval_s": interval}
    try:
        with engine.begin() as connection:
            if replacing is None:
                connection.execute(sa.insert(LEASES).values(study_name=study, **values))
            elif connection.execute(sa.update(LEASES).values(**values).where(
                    LEASES.c.study_name == study, LEASES.c.token == replacing.token)).rowcount != 1:
                return False
    except sa.exc.IntegrityError:  # the primary key: another driver inserted it first
        return False
    return True


def acquire(storage: str, study: str, grace: float) -> tuple[str, Lease | None]:
    """Take the study's lease; returns its token and the dead driver's lease it replaced
    (None for a free study). Raises ``DriverRunning`` while a live driver holds it.

    Example:
        >>> token, replaced = acquire("sqlite:////tmp/kd-search-doc.db", "demo", grace=60)  # doctest: +SKIP
    """
    token = secrets.token_hex(16)
    _HELD.add(token)  # before it is stored: another thread here must not take it for a dead one's
    try:
        with _connected(storage) as engine:
            _create_table(engine)
            for _ in range(3):  # each miss means another driver took or freed it in between
                current = _read(engine, study)
                if current is not None and not current.is_dead(grace):
                    raise DriverRunning(current, grace)
                if _take(engine, study, token, heartbeat_interval(grace), current):
                    return token, current
    except sa.exc.SQLAlchemyError as error:
        _HELD.discard(token)
        raise storage_error(storage, error, "cannot take the driver lease") from None
    except DriverRunning:
        _HELD.discard(token)
        raise
    _HELD.discard(token)
    raise SearchError(f"study {study!r}: the driver lease changed hands three times while taking it; launch again")


class Heartbeat:
    """A daemon thread renewing a held lease every ``interval`` seconds until ``stop``.

    A renewal the storage refuses (an outage) is retried at the next beat. A renewal
    that finds the lease gone (another driver took it over after this one went unseen
    for the grace period) is told once through ``notify``.
    """

    def __init__(self, storage: str, study: str, token: str, interval: float,
                 notify: Callable[[str], None] | None = None):
        self.engine, self.study, self.token, self.interval = _engine(storage), study, token, interval
        self.notify, self.lost = notify, False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"kd-search-lease-{study}", daemon=True)
        self._thread.start()

    def beat(self) -> bool:
        """Renew once; False when the lease is no longer this driver's."""
        with self.engine.begin() as connection:
            renewed = connection.execute(sa.update(LEASES).values(heartbeat_at=_now(self.engine)).where(
                LEASES.c.study_name == self.study, LEASES.c.token == self.token))
        return renewed.rowcount == 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if not self.beat():
                    self.lost = True
                    if self.notify:
                        self.notify(f"warning: study {self.study!r}: this driver's lease was taken over by another "
                                    "driver (this one went unseen for the grace period)")
                    return
            except sa.exc.SQLAlchemyError:
                continue  # the storage is away; the launch itself reports it

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 10)
        self.engine.dispose()


def release(storage: str, study: str, token: str) -> bool:
    """Delete the lease if it is still ``token``'s; False when the storage cannot be reached
    (the row then ages out after the grace period, or this process's next launch takes it).

    Example:
        >>> release("sqlite:////tmp/kd-search-doc.db", "demo", token)  # doctest: +SKIP
        True
    """
    _HELD.discard(token)
    try:
        with _connected(storage) as engine, engine.begin() as connection:
            connection.execute(sa.delete(LEASES).where(LEASES.c.study_name == study, LEASES.c.token == token))
    except (sa.exc.SQLAlchemyError, SearchError):
        return False
    return True


@contextmanager
def hold_lease(storage: str, study: str, grace: float | None = None,
               notify: Callable[[str], None] | None = None) -> Iterator[Lease | None]:
    """Hold the study's driver lease for the ``with`` block, heartbeat included; yields the
    dead driver's lease it took over, or None. Released however the block ends.

    Example:
        >>> with hold_lease("sqlite:////tmp/kd-search-doc.db", "demo") as replaced:  # doctest: +SKIP
        ...     pass
    """
    grace = driver_grace(grace)
    token, replaced = acquire(storage, study, grace)
    try:
        heartbeat = Heartbeat(storage, study, token, heartbeat_interval(grace), notify)
    except BaseException:
        release(storage, study, token)
        raise
    try:
        yield replaced
    finally:
        heartbeat.stop()
        release(storage, study, token)
