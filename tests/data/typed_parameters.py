"""A layer reading declared parameters, checked by mypy --strict in ``./run lint``:
``parameters.lr`` is a ``float`` and ``parameters.region`` a ``Literal``. tests/test_parameters.py
adds a line assigning ``parameters.lr`` to an ``int`` and checks that mypy rejects it there."""

from __future__ import annotations

from typing import Annotated, Literal

from laminar import Flow, Help, Layer, Parameters


class Typed(Flow): ...


@Typed.register
class Settings(Parameters):
    lr: Annotated[float, Help("learning rate")] = 0.01
    region: Literal["west", "east"] = "west"


@Typed.register
class Fit(Layer):
    def __call__(self, parameters: Settings) -> None:
        rate: float = parameters.lr
        where: Literal["west", "east"] = parameters.region
        self.scaled = rate * 2, where
