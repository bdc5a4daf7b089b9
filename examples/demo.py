"""Laminar's demo: a small flow with parameters, fan-out, a join and a condition, on the local datastore.

    ./run demo            (or: uv run python examples/demo.py)

It runs the flow, then reads every value back through the results API, as another program would.
"""

from __future__ import annotations

from laminar import Flow, Layer, Parameters
from laminar.configurations import hooks
from laminar.configurations.layers import ForEach, Parameter


class Demo(Flow):
    """Squares some numbers in parallel, sums them, and reports whether the sum is large."""


@Demo.register
class Numbers(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.shard(values=range(1, parameters.count + 1))


@Demo.register(foreach=ForEach(parameters=[Parameter(layer=Numbers, attribute="values")]))
class Square(Layer):
    def __call__(self, numbers: Numbers) -> None:
        self.value = numbers.values**2


@Demo.register
class Total(Layer):
    def __call__(self, square: Square) -> None:
        self.total = sum(square.value)


@Demo.register
class Large(Layer):
    def __call__(self, total: Total) -> None:
        self.message = f"{total.total} is large"

    @hooks.entry
    def only_if_large(self, total: Total) -> bool:
        return bool(total.total > 100)


def show(flow: Demo, execution_id: str) -> None:
    datastore = flow.configuration.datastore
    execution = flow.execution(execution_id)
    print(f"datastore: {datastore.url}")
    print(f"execution: {execution!r}")
    for layer in datastore.list_layers(execution=execution):
        artifacts = datastore.list_artifacts(layer=layer)
        print(f"  layer {layer.name:<10} finished={layer.state.finished!s:<5} artifacts={artifacts}")
    print(f"squares: {list(execution.layer(Square).value)}")
    print(f"total:   {execution.layer(Total).total}")
    large = execution.layer(Large)
    print(f"large:   {large.message if large.state.finished else 'skipped'}")


if flow := Demo():
    execution = flow(count=10)
    show(flow, execution.id)
