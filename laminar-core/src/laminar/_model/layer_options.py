"""Per-layer options: fan-out (ForEach), recovery (Catch, Retry) and resources (Container).

Public as :mod:`laminar.configurations.layers`. Pure values: nothing here runs or stores anything.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from laminar.errors import ConfigurationError

if TYPE_CHECKING:
    from laminar._model.layer import Layer

#: Set on the Layer base class, so a Parameter can tell a layer class without importing it
#: (``laminar._model.layer`` imports this module for the unbound layer's configuration).
LAYER_MARKER = "__laminar_layer__"


@dataclass(frozen=True)
class Parameter:
    """One axis of a ForEach: the artifact ``attribute`` of ``layer``.

    ``index`` is the upstream split to read it from (``0`` for an ordinary layer). ``index=None`` on a
    foreach layer's attribute maps this layer's split *i* to that layer's split *i* (chained foreach).
    """

    layer: type[Layer]
    attribute: str
    index: int | None = 0

    def __post_init__(self) -> None:
        if not (isinstance(self.layer, type) and getattr(self.layer, LAYER_MARKER, False)):
            raise ConfigurationError(f"Parameter(layer=...) must be a Layer class, got {self.layer!r}")
        if not isinstance(self.attribute, str) or not self.attribute.isidentifier():
            raise ConfigurationError(
                f"Parameter(attribute=...) must name an artifact of {self.layer.__name__}, got {self.attribute!r}"
            )
        if self.index is not None and (not isinstance(self.index, int) or self.index < 0):
            raise ConfigurationError(
                f"Parameter(index=...) must be None or a split number >= 0, got {self.index!r}"
            )


@dataclass(frozen=True)
class ForEach:
    """Run one split per item of the parameters' values; several parameters run their grid."""

    parameters: list[Parameter]

    def __post_init__(self) -> None:
        if not self.parameters or not all(isinstance(p, Parameter) for p in self.parameters):
            raise ConfigurationError(
                "ForEach(parameters=[...]) needs at least one Parameter(layer=..., attribute=...)"
            )


@dataclass(frozen=True)
class Retry:
    """Run a failing split up to ``attempts`` times in all, in each run (a resume tries it again).

    The back-off before retry *n* (``self.attempt == n``, the first try being attempt 0) is
    ``delay * backoff ** (n - 1)`` plus up to ``jitter`` of that, at random. A resume numbers its
    attempts on from the split's last recorded one, and counts *n* from its own first try.
    """

    attempts: int = 1
    delay: float = 0.1
    backoff: float = 2.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if not isinstance(self.attempts, int) or self.attempts < 1:
            raise ConfigurationError(
                f"Retry(attempts=...) must be at least 1 (the first try), got {self.attempts!r}"
            )
        for name in ("delay", "backoff", "jitter"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0:
                raise ConfigurationError(f"Retry({name}=...) must be a number >= 0, got {value!r}")

    def wait(self, attempt: int) -> float:
        """Seconds to wait before ``attempt`` (>= 1). The one back-off formula: storage retries use it too."""
        base = self.delay * self.backoff ** (attempt - 1)
        return base + base * self.jitter * random.random()


class Catch:
    """Errors (and their subclasses) that end the layer as finished, keeping what it assigned so far."""

    def __init__(self, *exceptions: type[BaseException]) -> None:
        for exception in exceptions:
            if not (isinstance(exception, type) and issubclass(exception, BaseException)):
                raise ConfigurationError(
                    f"Catch() takes exception classes such as Catch(TypeError), got {exception!r}"
                )
        self.exceptions = exceptions

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Catch) and other.exceptions == self.exceptions

    def __hash__(self) -> int:
        return hash(self.exceptions)

    def __repr__(self) -> str:
        return f"Catch({', '.join(e.__name__ for e in self.exceptions)})"


@dataclass
class Container:
    """Resources for executors that use them. Submission hooks may change them per split."""

    cpu: float = 1
    memory: int = 1500
    image: str = "python:3.11"
    command: str = "python main.py"
    workdir: str = "/laminar"


@dataclass
class Configuration:
    """A layer's configuration within one flow (``MyFlow.registry["A"].configuration``)."""

    catch: Catch | None = None
    container: Container = field(default_factory=Container)
    foreach: ForEach | None = None
    retry: Retry = field(default_factory=Retry)
    #: Whether a run with reuse on may reuse the layer (False: side effects, randomness, time).
    reuse: bool = True
    #: What the layer reads that its code does not show: files (relative to the project's root)
    #: and ``$NAME`` environment variables, keyed by content (see docs/incremental.md).
    inputs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        checks: list[tuple[str, Any, type]] = [
            ("catch", self.catch, Catch),
            ("container", self.container, Container),
            ("foreach", self.foreach, ForEach),
            ("retry", self.retry, Retry),
        ]
        for name, value, kind in checks:
            if value is not None and not isinstance(value, kind):
                raise ConfigurationError(f"register({name}=...) takes a {kind.__name__}, got {value!r}")
        if not isinstance(self.reuse, bool):
            raise ConfigurationError(f"register(reuse=...) takes True or False, got {self.reuse!r}")
        if isinstance(self.inputs, str) or not all(isinstance(i, str) and i for i in self.inputs):
            raise ConfigurationError(
                f"register(inputs=...) takes a list of file paths and $ENVIRONMENT variables, got {self.inputs!r}"
            )
