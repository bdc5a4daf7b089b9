"""Schedulers: decide what runs when. ``Scheduler`` (asyncio) is the default."""

from laminar._runtime.scheduler import Scheduler

__all__ = ["Scheduler"]
