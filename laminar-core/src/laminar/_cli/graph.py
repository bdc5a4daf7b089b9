"""``laminar graph``: a flow's DAG as text, Mermaid or Graphviz dot, and the layered layout the
report draws it with. ``Parameters`` is left out: every layer may read it, it never runs."""

from __future__ import annotations

import json
from dataclasses import dataclass

import click

from laminar import Flow
from laminar._cli.common import file_argument
from laminar._cli.loading import build, load


@dataclass(frozen=True)
class Graph:
    """Layers in plan order and the layers each depends on."""

    order: tuple[str, ...]
    dependencies: dict[str, tuple[str, ...]]
    foreach: frozenset[str]

    @classmethod
    def of(cls, flow: Flow) -> Graph:
        plan = flow.plan
        order = tuple(name for name in plan.order if name != "Parameters")
        dependencies = {
            name: tuple(d for d in plan.order if d in plan.dependencies[name] and d != "Parameters")
            for name in order
        }
        foreach = frozenset(name for name in order if flow.registry[name].configuration.foreach is not None)
        return cls(order, dependencies, foreach)

    def edges(self) -> list[tuple[str, str]]:
        return [(dependency, name) for name in self.order for dependency in self.dependencies[name]]

    def ranks(self) -> dict[str, int]:
        """Each layer's column: one more than its deepest dependency's (a longest-path layering)."""
        found: dict[str, int] = {}
        for name in self.order:  # plan order is topological
            found[name] = 1 + max((found[d] for d in self.dependencies[name]), default=-1)
        return found


def text(graph: Graph) -> str:
    lines = []
    for name in graph.order:
        label = name + (" [foreach]" if name in graph.foreach else "")
        needs = graph.dependencies[name]
        lines.append(label + (f"  <- {', '.join(needs)}" if needs else ""))
    return "\n".join(lines)


def mermaid(graph: Graph) -> str:
    lines = ["flowchart LR"]
    for name in graph.order:
        shape = f"{name}[[{name}]]" if name in graph.foreach else f"{name}[{name}]"
        lines.append(f"    {shape}")
    lines.extend(f"    {a} --> {b}" for a, b in graph.edges())
    return "\n".join(lines)


def dot(graph: Graph, name: str) -> str:
    lines = [f"digraph {json.dumps(name)} {{", "    rankdir=LR;", "    node [shape=box];"]
    for layer in graph.order:
        style = ' [style="rounded,bold"]' if layer in graph.foreach else ""
        lines.append(f"    {json.dumps(layer)}{style};")
    lines.extend(f"    {json.dumps(a)} -> {json.dumps(b)};" for a, b in graph.edges())
    lines.append("}")
    return "\n".join(lines)


@click.command(name="graph")
@file_argument
@click.option(
    "--format",
    "form",
    type=click.Choice(["text", "mermaid", "dot"]),
    default="text",
    show_default=True,
    help="How to print the DAG.",
)
def graph(file: str, form: str) -> None:
    """Print the DAG of the flow in FILE: each layer and the layers it depends on."""
    loaded = load(file)
    flow = loaded.instance if loaded.instance is not None else build(loaded)
    found = Graph.of(flow)
    click.echo({"text": text, "mermaid": mermaid}[form](found) if form != "dot" else dot(found, flow.name))
