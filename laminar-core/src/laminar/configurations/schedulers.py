"""Schedulers: decide what runs when. ``Scheduler`` (asyncio) is the default."""

from laminar.runtime.scheduler import Scheduler

__all__ = ["Scheduler"]
