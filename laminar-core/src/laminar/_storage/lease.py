"""Run leases: one scheduler per execution, and a dead one visible as such.

A run or resume takes the next *generation* of the execution's lease by creating
``leases/<generation>.json`` with the datastore's atomic create, so of two schedulers racing exactly
one succeeds. The holder rewrites its own file as a heartbeat; nobody else ever writes it. A lease is
free when it was released, when its heartbeat is older than its time to live, or when its holder
ran on this host and its process is gone (so a killed scheduler is taken over at once on the same
machine, and after the time to live from any other). A holder that finds a newer generation than
its own has been taken over and stops.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, fields, replace

from laminar._storage import layout
from laminar._storage.records import LAYOUT
from laminar._transport.datastore import Datastore
from laminar.errors import LeaseHeld, LeaseLost

#: Seconds a lease lives without a heartbeat; the holder beats every third of it.
DEFAULT_TTL = 30.0
#: On a store whose create is not atomic (it asks, then writes), racing creators may all "succeed";
#: the last write wins, so each waits this long and reads its lease back before it counts as held.
SETTLE = 0.5
TTL_VARIABLE = "LAMINAR_LEASE_TTL"


#: The tokens of the leases schedulers in this process hold now: a lease of this process whose token
#: is not here belongs to a scheduler that stopped (say, its storage failed as it released).
_HELD_HERE: set[str] = set()


def ttl_from_environment() -> float:
    value = os.environ.get(TTL_VARIABLE)
    return float(value) if value else DEFAULT_TTL


@dataclass(frozen=True)
class Holder:
    """Who holds (or held) a lease, and until when it counts."""

    generation: int
    host: str
    pid: int
    since: float
    heartbeat: float
    ttl: float
    released: bool = False
    token: str = ""

    def live(self, now: float | None = None) -> bool:
        """Whether this holder may still be running the execution."""
        if self.released:
            return False
        if self.host == socket.gethostname():
            if not _alive(self.pid):
                return False
            if self.pid == os.getpid() and self.token not in _HELD_HERE:
                return False  # a scheduler of this very process that has stopped
        return (now if now is not None else time.time()) - self.heartbeat <= self.ttl

    def describe(self) -> str:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        return f"pid {self.pid} on {self.host}, since {started}"

    def dumps(self) -> bytes:
        """Its members in order after the layout, as ``json.dumps`` of ``asdict`` gave them, without
        ``asdict``'s deep copy of each (a run writes a lease as it starts and as it ends)."""
        members = self.__dict__
        return _ENCODE({"layout": LAYOUT, **{name: members[name] for name in _HOLDER}}).encode()

    @classmethod
    def loads(cls, data: bytes) -> Holder:
        payload = json.loads(data)
        return cls(
            int(payload["generation"]),
            str(payload["host"]),
            int(payload["pid"]),
            float(payload["since"]),
            float(payload["heartbeat"]),
            float(payload["ttl"]),
            bool(payload.get("released", False)),
            str(payload.get("token", "")),
        )


_HOLDER = tuple(member.name for member in fields(Holder))
_ENCODE = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Lease:
    """The lease of one execution, as this process sees and holds it."""

    def __init__(self, datastore: Datastore, flow: str, execution: str, *, ttl: float | None = None) -> None:
        self.datastore = datastore
        self.flow = flow
        self.execution = execution
        self.ttl = ttl if ttl is not None else ttl_from_environment()
        self.held: Holder | None = None

    def _generations(self) -> list[int]:
        names = self.datastore.list_prefix(layout.leases(self.flow, self.execution))
        return sorted(g for g in (layout.parse_lease(name) for name in names) if g is not None)

    def _read(self, generation: int) -> Holder | None:
        try:
            return Holder.loads(
                self.datastore.read_bytes(layout.lease(self.flow, self.execution, generation))
            )
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):
            return None  # a damaged lease holds nothing: its holder could not have written it whole

    def current(self) -> Holder | None:
        """The newest holder of this execution's lease, live or not; None if it never had one."""
        generations = self._generations()
        return self._read(generations[-1]) if generations else None

    def generations(self) -> list[int]:
        """The lease's generations stored, oldest first (what ``acquire`` lists first)."""
        return self._generations()

    def acquire(self, generations: list[int] | None = None) -> Holder:
        """Take the lease, or raise :class:`LeaseHeld` naming the live holder. ``generations``: as
        ``generations()`` listed them just before (listed here if not given): a start lists them
        while it checks whether the execution exists, one round trip for both."""
        if generations is None:
            generations = self._generations()
        latest = generations[-1] if generations else 0
        if latest:
            holder = self._read(latest)
            if holder is not None and holder.live():
                raise self._held(holder)
        now = time.time()
        mine = Holder(
            latest + 1, socket.gethostname(), os.getpid(), now, now, self.ttl, token=uuid.uuid4().hex
        )
        _HELD_HERE.add(mine.token)
        try:
            created = self.datastore.create(
                layout.lease(self.flow, self.execution, mine.generation), mine.dumps()
            )
            if created and not self.datastore.atomic_create:
                time.sleep(SETTLE)  # racing ask-then-write creators: the last write is the one kept
                stored = self._read(mine.generation)
                created = stored is not None and stored.token == mine.token
        except BaseException:
            _HELD_HERE.discard(mine.token)
            raise
        if not created:
            winner = self._read(mine.generation)
            if winner is None or winner.token != mine.token:
                _HELD_HERE.discard(mine.token)
                raise self._held(winner if winner is not None else mine)
            # ours after all: a create retried after a lost answer finds what its first try wrote
        self.held = mine
        return mine

    def refresh(self) -> None:
        """Beat: rewrite this holder's heartbeat; :class:`LeaseLost` if a newer generation exists."""
        if self.held is None:
            return
        newer = [g for g in self._generations() if g > self.held.generation]
        if newer:
            taker = self._read(newer[-1])
            raise LeaseLost(
                f"the lease on execution {self.execution} of flow {self.flow} was taken over by "
                f"{taker.describe() if taker else 'another scheduler'}, which found this one "
                f"({self.held.describe()}) silent for longer than {self.ttl:g} s; this run stops"
            )
        self._write(heartbeat=time.time())

    def release(self) -> None:
        if self.held is not None:
            _HELD_HERE.discard(self.held.token)  # stopped, even if the write below fails
            try:
                self._write(heartbeat=time.time(), released=True)
            finally:
                self.held = None

    def forget(self) -> None:
        """Stop holding without writing: the lease was taken over."""
        if self.held is not None:
            _HELD_HERE.discard(self.held.token)
            self.held = None

    def _write(self, *, heartbeat: float, released: bool = False) -> None:
        assert self.held is not None
        self.held = replace(self.held, heartbeat=heartbeat, released=released)
        self.datastore.write_bytes(
            layout.lease(self.flow, self.execution, self.held.generation), self.held.dumps()
        )

    def _held(self, holder: Holder) -> LeaseHeld:
        return LeaseHeld(
            f"execution {self.execution} of flow {self.flow} is being run by another scheduler "
            f"({holder.describe()}); wait for it to finish, or stop it — its lease is taken over once "
            f"it has been silent for {holder.ttl:g} s"
        )


class Heartbeat:
    """Keeps a held lease fresh, every third of its time to live, off the run's event loop.

    Not from the loop: a split the scheduler runs on the loop's own thread (a chain's one-split
    layer, see ``Executor.inline_chains``) holds the loop for as long as it runs, and a long one
    must not let the lease go stale. The beats of every lease this process holds are timed by one
    thread of the process's own (``_Beats``, started once: a thread started per run cost a run a
    millisecond), and each refresh runs on a daemon thread of its own, as before: a store that
    stopped answering holds up neither the other leases' beats nor the end of the run (:meth:`stop`
    does not wait for a refresh under way). A refresh that fails for a storage hiccup is tried again
    at the next beat, well within the time to live; a lease taken over (a newer generation) stops
    the beating and is handed to ``lost``, called on the refresh's thread (the run's callback
    forgets the lease and fails the run, on its own loop).
    """

    def __init__(self, lease: Lease, lost: Callable[[LeaseLost], object]) -> None:
        self.lease = lease
        self.lost = lost
        self.stopped = False
        self.refreshing = False  # a refresh is under way (one that hangs is not doubled)

    def start(self) -> Heartbeat:
        _beats().add(self, time.monotonic() + self.lease.ttl / 3)
        return self

    def stop(self) -> None:
        self.stopped = True
        _beats().remove(self)

    def beat(self) -> None:
        """On the beats' thread: refresh on a thread of its own, unless the last one is under way."""
        if self.stopped or self.refreshing:
            return
        self.refreshing = True
        threading.Thread(target=self._refresh, name="laminar-lease-refresh", daemon=True).start()

    def _refresh(self) -> None:
        try:
            self.lease.refresh()
        except LeaseLost as error:
            if not self.stopped:  # (the run ended meanwhile: its own outcome stands)
                self.stop()
                self.lost(error)
        except Exception:  # a storage hiccup: the next beat tries again
            pass
        finally:
            self.refreshing = False


class _Beats:
    """The thread of this process that times every held lease's heartbeat (see :class:`Heartbeat`).

    A heartbeat added is due no sooner than a third of its time to live from now: the thread is woken
    for it only if it would not wake by itself before then. Runs one after another each add one, and
    the thread, waiting for the beat of a run that has ended meanwhile, wakes once for the lot, not
    once a run (a thread woken takes the interpreter from the run for a moment)."""

    def __init__(self) -> None:
        self.changed = threading.Condition(threading.Lock())
        self.due: dict[Heartbeat, float] = {}  # each heartbeat's next beat (time.monotonic())
        self.wakes: float | None = None  # when the waiting thread wakes by itself (None: not waiting)
        self.thread = threading.Thread(target=self._run, name="laminar-lease-heartbeat", daemon=True)
        self.thread.start()

    def add(self, heartbeat: Heartbeat, due: float) -> None:
        with self.changed:
            self.due[heartbeat] = due
            if self.wakes is None or due < self.wakes:  # else it wakes in time, and finds it due
                self.changed.notify()

    def remove(self, heartbeat: Heartbeat) -> None:
        with self.changed:
            self.due.pop(heartbeat, None)

    def _run(self) -> None:
        while True:
            with self.changed:
                now = time.monotonic()
                beating = [heartbeat for heartbeat, due in self.due.items() if due <= now]
                for heartbeat in beating:
                    self.due[heartbeat] = now + heartbeat.lease.ttl / 3
                if not beating:
                    self.wakes = min(self.due.values(), default=now + 3600)
                    self.changed.wait(self.wakes - now)
                    self.wakes = None
            for heartbeat in beating:
                heartbeat.beat()


_beating: list[_Beats] = []  # this process's, once started (a forked child starts its own)
_beating_lock = threading.Lock()


def _beats() -> _Beats:
    with _beating_lock:
        if not _beating:
            _beating.append(_Beats())
        return _beating[0]


def heartbeat_threads() -> list[threading.Thread]:
    """The thread timing the heartbeats, while it times none (no run of this process holds a lease):
    safe to fork around, since a fork holds its lock and the child starts its own when it needs one
    (the process executor forks its template between runs, ``forking.unsafe_to_fork``)."""
    with _beating_lock:
        beats = _beating[0] if _beating else None
    if beats is None:
        return []
    with beats.changed:
        return [] if beats.due else [beats.thread]


def _before_fork() -> None:
    _beating_lock.acquire()
    if _beating:
        _beating[0].changed.acquire()


def _after_fork_in_parent() -> None:
    if _beating:
        _beating[0].changed.release()
    _beating_lock.release()


def _after_fork_in_child() -> None:
    global _beating_lock
    _beating.clear()  # its thread was not forked
    _beating_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
    )
