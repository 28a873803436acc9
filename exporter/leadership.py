"""Which provider instances this replica polls.

A provider's rate limit belongs to its account, so each provider instance is polled by
one replica at a time. With the SQLite store there is one process, and it polls every
instance. With PostgreSQL, replicas hold *leases*: a row per provider instance naming
its poller until a time of the database's clock (:meth:`Store.heartbeat`). Every
``HEARTBEAT`` seconds a replica renews its leases and takes its fair share of free
ones; a replica that dies stops renewing, its leases expire ``LEASE_TTL`` seconds after
its last renewal, and another replica takes them at its next heartbeat and polls them
at once: failover takes at most ``LEASE_TTL + HEARTBEAT`` seconds.

A replica stops polling on its own once it has not renewed for ``LEASE_TTL - MARGIN``
seconds (the database may be unreachable from it but not from the others), so a
partitioned leader yields before its lease can pass to someone else. Should two
replicas poll at once anyway, it costs calls, never counts: every change locks its row.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Sequence

from .errors import StoreError
from .store.base import Store

log = logging.getLogger(__name__)

#: seconds between renewals
HEARTBEAT = 2.0
#: seconds a lease lasts without renewal: failover takes at most LEASE_TTL + HEARTBEAT
LEASE_TTL = 10.0
#: a leader stops this long before its lease could expire
MARGIN = 2.0


def replica_name() -> str:
    """``host:pid:random``: unique per process, readable in the leases table."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def holder_for(name: str) -> str:
    """A lease holder for the replica called ``name`` (``exporter.replica_name`` or
    host:port): the name, then ``#pid.random``, so that two processes given the same
    name still hold their leases apart."""
    return f"{name}#{os.getpid()}.{secrets.token_hex(3)}"


def shown(holder: str) -> str:
    """The replica's name in a lease holder (the part an operator chose or recognises)."""
    return holder.rsplit("#", 1)[0]


class Leadership:
    """The leases this replica holds, renewed by :meth:`beat` (a scheduler job)."""

    def __init__(self, store: Store, *, holder: str | None = None, ttl: float = LEASE_TTL):
        self.store = store
        self.holder = holder or replica_name()
        self.ttl = ttl
        self._held: frozenset[str] = frozenset()
        #: provider instance → the name of the replica polling it, as of the last beat
        self._leaders: dict[str, str] = {}
        self._valid_until = 0.0  # time.monotonic(): our leases hold until then
        self._failing = False
        self._lock = threading.Lock()

    def leads(self, name: str) -> bool:
        """True while this replica polls ``name``."""
        return not self.store.shared or name in self.held()

    def polled_by(self, name: str) -> str | None:
        """The name of the replica that polls ``name`` (this one's if it leads; None
        while nobody holds its lease). Read from the last beat: no store query."""
        if self.leads(name):
            return shown(self.holder)
        return self._leaders.get(name)

    def held(self) -> frozenset[str]:
        """The leases held now: none once the last renewal is too old (self-fencing)."""
        return self._held if time.monotonic() < self._valid_until else frozenset()

    def beat(self, names: Sequence[str]) -> frozenset[str]:
        """Renew and rebalance the leases; return the instances this replica has just
        begun to poll. Never raises."""
        if not self.store.shared:
            return frozenset()
        with self._lock:
            started = time.monotonic()
            before = self.held()
            try:
                held = frozenset(self.store.heartbeat(self.holder, names, self.ttl))
                with contextlib.suppress(StoreError):  # for display: the lease is what counts
                    self._leaders = {p: shown(h) for p, h in self.store.leaders().items()}
                self._valid_until = started + self.ttl - MARGIN
                if self._failing:
                    log.info("the polling leases are renewed again")
                self._failing = False
            except StoreError as e:
                if not self._failing:
                    log.warning("cannot renew the polling leases: %s", e)
                self._failing = True
                held = self._held  # they stay ours until _valid_until, no longer
            self._held = held
            after = self.held()
            for name in sorted(after - before):
                log.info("this replica (%s) now polls provider %s", self.holder, name)
            for name in sorted(before - after):
                log.info("this replica (%s) no longer polls provider %s", self.holder, name)
            return after - before

    def release(self) -> None:
        """On a clean stop: hand the leases over at once."""
        if self.store.shared and self._held:
            self.store.release(self.holder, sorted(self._held))
            self._held = frozenset()
