"""Threads kept between runs for a run's background work (``_runtime/background.py``): a run hands its
records' writing to an idle thread instead of starting one, and a fork finds no thread at work."""

from __future__ import annotations

import functools
import os
import threading

import pytest
from laminar import Flow, Layer
from laminar._runtime import background, forking
from laminar.configurations import datastores, executors

BOUND = 30.0  # seconds a test waits for what it expects (never reached)


def _run_on_kept(name: str) -> tuple[threading.Thread, str]:
    """Run a piece of work on a kept thread; the thread and the name it had while running it."""
    done = threading.Event()
    seen: list[str] = []

    def call() -> None:
        seen.append(threading.current_thread().name)
        done.set()

    work = background.start(call, name)
    assert done.wait(BOUND) and work.wait(BOUND) and work.thread is not None
    assert work.thread in background.idle_threads()  # idle once the work is over
    return work.thread, seen[0]


def _wait_for(event: threading.Event) -> None:
    event.wait(BOUND)


def test_work_runs_on_the_thread_an_earlier_piece_left_idle_under_its_own_name() -> None:
    first, first_name = _run_on_kept("laminar-first")
    second, second_name = _run_on_kept("laminar-second")
    assert second is first and second.is_alive()  # no new thread started
    assert (first_name, second_name) == ("laminar-first", "laminar-second")
    assert first.name == "laminar-idle"


def test_work_given_while_every_kept_thread_is_busy_starts_a_new_one() -> None:
    release = threading.Event()
    busy = background.start(functools.partial(_wait_for, release), "laminar-busy")
    try:
        other, _ = _run_on_kept("laminar-other")
        assert other is not busy.thread
    finally:
        release.set()
    assert busy.wait(BOUND) and busy.thread in background.idle_threads()


def test_an_idle_thread_ends_after_a_while_without_work(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(background, "IDLE_FOR", 0.05)
    release = threading.Event()
    work = background.start(functools.partial(_wait_for, release), "laminar-short")  # a new thread
    release.set()
    assert work.thread is not None
    work.thread.join(BOUND)
    assert not work.thread.is_alive() and work.thread not in background.idle_threads()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX")
def test_kept_threads_idle_between_runs_do_not_stop_a_fork_and_a_child_starts_its_own() -> None:
    thread, _ = _run_on_kept("laminar-before-fork")
    # Idle: safe to fork around. (Threads of other tests of this process may be named: a Dask
    # cluster's, when a test of it ran here before; never the kept one.)
    unsafe = forking.unsafe_to_fork()
    assert unsafe is None or thread.name not in unsafe.partition(": ")[2].split(", "), unsafe
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: none kept, and work still runs, on a thread of the child's own
        try:
            ok = background.idle_threads() == []
            child, name = _run_on_kept("laminar-in-child")
            os.write(write, b"ok" if ok and name == "laminar-in-child" and child is not thread else b"no")
        finally:
            os._exit(0)
    os.close(write)
    try:
        assert os.read(read, 16) == b"ok"
    finally:
        os.close(read)
        os.waitpid(pid, 0)


class Chain(Flow): ...


@Chain.register
class First(Layer):
    def __call__(self) -> None:
        self.value = 1


@Chain.register
class Second(Layer):
    def __call__(self, first: First) -> None:
        self.value = first.value + 1


def test_runs_one_after_another_write_their_records_on_the_same_kept_threads() -> None:
    started: list[str] = []
    real_start = threading.Thread.start

    def counting_start(thread: threading.Thread) -> None:
        started.append(thread.name)
        real_start(thread)

    for _ in range(2):  # the first run may start the threads its records need
        assert Chain(datastore=datastores.Memory(), executor=executors.Thread())().layer(Second).value == 2
    threading.Thread.start = counting_start  # type: ignore[method-assign]
    try:
        for _ in range(3):
            assert (
                Chain(datastore=datastores.Memory(), executor=executors.Thread())().layer(Second).value == 2
            )
    finally:
        threading.Thread.start = real_start  # type: ignore[method-assign]
    assert started == []  # the records' and the status records' threads were idle ones, kept
