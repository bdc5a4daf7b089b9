"""The executor contract (laminar.testing.ExecutorConformance) on every executor in this repository."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from laminar.configurations import executors
from laminar.plugins import Executor
from laminar.testing import ExecutorConformance
from laminar_dask import Dask


class TestThread(ExecutorConformance):
    @pytest.fixture
    def make_executor(self) -> Callable[..., Executor]:
        return lambda **options: executors.Thread(**options)


class TestProcess(ExecutorConformance):
    @pytest.fixture
    def make_executor(self) -> Callable[..., Executor]:
        return lambda **options: executors.Process(**options)


@pytest.mark.dask
class TestDask(ExecutorConformance):
    @pytest.fixture
    def make_executor(self, address: str) -> Callable[..., Executor]:
        def make(**options: Any) -> Executor:
            return Dask(address, **options)

        return make
