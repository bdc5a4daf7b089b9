"""Declared parameters: a ``Parameters`` subclass registered on a flow, its values checked (and
converted, defaults filled in) before anything is stored, reserved names refused when the class is
defined, and flows that declare nothing running as before."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Literal

import cloudpickle
import pydantic
import pytest
from helpers import EXECUTORS
from laminar import Flow, Help, Layer, Parameters
from laminar.configurations import datastores, executors
from laminar.errors import ConfigurationError, FlowDefinitionError


class Color(enum.Enum):
    red = "red"
    blue = "blue"


class Optimizer(pydantic.BaseModel):
    name: str
    momentum: float = 0.9


@dataclasses.dataclass
class Window:
    start: int
    stop: int


class Training(Flow): ...


@Training.register
class Settings(Parameters):
    lr: Annotated[float, Help("learning rate")] = 0.01
    region: Literal["west", "east"]
    epochs: int = 10
    shuffle: bool = False
    data: Path = Path("data.csv")
    day: datetime.date = datetime.date(2026, 1, 1)
    at: datetime.datetime = datetime.datetime(2026, 1, 1, 12, 0)
    color: Color = Color.red
    rates: list[float] = [0.1, 0.2]
    shape: tuple[int, int] = (2, 3)
    weights: dict[str, float] = {}
    seed: int | None = None
    optimizer: Optimizer = Optimizer(name="sgd")
    window: Window = Window(0, 10)


@Training.register
class Fit(Layer):
    def __call__(self, parameters: Settings) -> None:
        self.steps = parameters.epochs * 2
        self.lr = parameters.lr
        self.seen = {name: getattr(parameters, name) for name in Settings.__laminar_parameters__.fields}  # type: ignore[union-attr]


def executions_in(root: Path) -> list[str]:
    return sorted(p.name for p in root.glob("flows/*/executions/*"))


def make(root: Path, executor: executors.Executor | None = None) -> Training:
    return Training(datastore=datastores.Local(root), executor=executor or executors.Thread())


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_layer_reads_the_checked_values_with_defaults_filled_in(
    tmp_path: Path, executor: type[executors.Executor]
) -> None:
    run = make(tmp_path, executor())(region="east", epochs="3", lr=1, rates=(0.5,), seed=None)
    fit = run.layer(Fit)
    assert fit.steps == 6  # "3" was converted to 3 before it was stored
    assert fit.lr == 1.0 and type(fit.lr) is float
    assert fit.seen == {
        "lr": 1.0,
        "region": "east",
        "epochs": 3,
        "shuffle": False,
        "data": Path("data.csv"),
        "day": datetime.date(2026, 1, 1),
        "at": datetime.datetime(2026, 1, 1, 12, 0),
        "color": Color.red,
        "rates": [0.5],
        "shape": (2, 3),
        "weights": {},
        "seed": None,
        "optimizer": Optimizer(name="sgd"),
        "window": Window(0, 10),
    }
    assert run.status.parameters["epochs"] == 3  # stored as converted: the status reads them back


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({}, "parameter 'region' of flow Training is required: give a Literal['west', 'east']"),
        (
            {"region": "north"},
            "parameter 'region' of flow Training: got 'north' (str), expected Literal['west', 'east']",
        ),
        (
            {"region": "west", "bogus": 1},
            "flow Training has no parameter 'bogus' (given 1 (int)); its parameters are lr,",
        ),
        (
            {"region": "west", "epochs": "ten"},
            "parameter 'epochs' of flow Training: got 'ten' (str), expected int",
        ),
        (
            {"region": "west", "lr": "fast"},
            "parameter 'lr' of flow Training: got 'fast' (str), expected float",
        ),
        (
            {"region": "west", "shuffle": "maybe"},
            "parameter 'shuffle' of flow Training: got 'maybe' (str), expected bool",
        ),
        (
            {"region": "west", "day": "someday"},
            "parameter 'day' of flow Training: got 'someday' (str), expected date",
        ),
        (
            {"region": "west", "at": "noon"},
            "parameter 'at' of flow Training: got 'noon' (str), expected datetime",
        ),
        (
            {"region": "west", "color": "green"},
            "parameter 'color' of flow Training: got 'green' (str), expected Color",
        ),
        ({"region": "west", "data": 3}, "parameter 'data' of flow Training: got 3 (int), expected Path"),
        (
            {"region": "west", "rates": ["x"]},
            "parameter 'rates.0' of flow Training: got 'x' (str), expected list[float]",
        ),
        ({"region": "west", "shape": [1]}, "parameter 'shape.1' of flow Training"),
        ({"region": "west", "weights": {"a": "b"}}, "parameter 'weights.a' of flow Training: got 'b' (str)"),
        (
            {"region": "west", "seed": "x"},
            "parameter 'seed' of flow Training: got 'x' (str), expected int | None",
        ),
        ({"region": "west", "optimizer": {"momentum": 1}}, "parameter 'optimizer.name' of flow Training"),
        (
            {"region": "west", "window": {"start": "a", "stop": 1}},
            "parameter 'window.start' of flow Training",
        ),
    ],
)
def test_a_bad_value_is_refused_before_anything_is_stored(
    tmp_path: Path, given: dict[str, object], message: str
) -> None:
    flow = make(tmp_path)
    flow(region="west")
    before = executions_in(tmp_path)
    with pytest.raises(ConfigurationError) as raised:
        flow(**given)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)
    assert "resume" not in str(raised.value)  # parameters are fixed: resuming cannot help
    assert executions_in(tmp_path) == before and len(before) == 1


def test_every_problem_is_named_in_one_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as raised:
        make(tmp_path)(epochs="x", bogus=2)
    text = str(raised.value)
    assert "'region'" in text and "'epochs'" in text and "'bogus'" in text
    assert executions_in(tmp_path) == []


@pytest.mark.parametrize(
    "name", ["execution", "name", "state", "index", "shard", "flow", "resume", "datastore"]
)
def test_a_reserved_name_is_refused_when_the_class_is_declared(name: str) -> None:
    with pytest.raises(
        FlowDefinitionError, match=f"parameter '{name}' of Bad has a name reserved by Laminar"
    ):
        type("Bad", (Parameters,), {"__annotations__": {name: int}})


def test_a_private_name_is_refused_when_the_class_is_declared() -> None:
    with pytest.raises(FlowDefinitionError, match="parameter '_hidden' of Bad starts with '_'"):
        type("Bad", (Parameters,), {"__annotations__": {"_hidden": int}})


def test_a_flow_declares_its_parameters_once() -> None:
    class Twice(Flow): ...

    class First(Parameters):
        a: int = 1

    class Second(Parameters):
        b: int = 1

    Twice.register(First)
    with pytest.raises(FlowDefinitionError, match=r"flow Twice already declares its parameters with .*First"):
        Twice.register(Second)


class Plain(Flow): ...


@Plain.register
class Echo(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.anything = parameters.anything


def test_a_flow_that_declares_nothing_takes_any_keyword_as_before(tmp_path: Path) -> None:
    flow = Plain(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    run = flow(anything="3")
    assert run.layer(Echo).anything == "3"  # not converted: nothing says what it should be
    assert run.store.metadata().parameters is None  # type: ignore[union-attr]
    assert b'"parameters"' not in (
        next(tmp_path.glob("flows/Plain/executions/*/execution.json")).read_bytes()
    )


def test_a_merged_flow_takes_the_declared_parameters(tmp_path: Path) -> None:
    class Both(Plain, Training): ...

    assert Both.registry["Parameters"].layer is Settings
    assert Both.registry["Echo"].layer is Echo
    with pytest.raises(ConfigurationError, match="parameter 'region' of flow Both is required"):
        Both(datastore=datastores.Local(tmp_path), executor=executors.Thread())()


def test_resume_runs_with_the_stored_parameters_and_refuses_new_ones(tmp_path: Path) -> None:
    flow = make(tmp_path)
    run = flow(region="west", epochs=4)
    with pytest.raises(
        ConfigurationError, match=f"execution {run.id} of flow Training resumes with the parameters it"
    ):
        flow.execution(run.id).run(parameters={"epochs": 5}, resume=True)
    flow.execution(run.id).resume()
    assert flow.execution(run.id).layer(Fit).steps == 8


def test_the_declaration_is_stored_with_the_execution(tmp_path: Path) -> None:
    run = make(tmp_path)(region="west")
    stored = json.loads(run.store.metadata().parameters)  # type: ignore[union-attr,arg-type]
    assert stored["class"] == "Settings"
    assert stored["types"]["lr"] == "float" and stored["types"]["rates"] == "list[float]"
    assert stored["types"]["region"] == "Literal['west', 'east']"
    assert stored["schema"]["properties"]["lr"]["description"] == "learning rate"
    assert stored["schema"]["required"] == ["region"]


TYPED = Path(__file__).parent / "data" / "typed_parameters.py"


def mypy(path: Path) -> subprocess.CompletedProcess[str]:
    """mypy --strict as ``./run lint`` runs it (the repository's configuration), on one file."""
    root = Path(__file__).parent.parent
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(root / "pyproject.toml"),
            "--cache-dir",
            str(path.parent / ".mypy_cache"),
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=root,
    )


def test_a_type_checker_reads_a_declared_float_as_a_float(tmp_path: Path) -> None:
    assert (
        "tests/data/typed_parameters.py" in (Path(__file__).parent.parent / "run").read_text()
    )  # ./run lint
    fixture = tmp_path / "typed_parameters.py"
    fixture.write_text(TYPED.read_text())
    accepted = mypy(fixture)
    assert accepted.returncode == 0, accepted.stdout
    lines = TYPED.read_text().splitlines()
    fixture.write_text(
        "\n".join([*lines, "        steps: int = parameters.lr", "        self.steps = steps", ""])
    )
    rejected = mypy(fixture)
    assert rejected.returncode == 1
    errors = [line for line in rejected.stdout.splitlines() if ": error: " in line]
    assert errors == [
        f"{fixture}:{len(lines) + 1}: error: Incompatible types in assignment (expression has type "
        '"float", variable has type "int")  [assignment]'
    ]


def test_a_declaration_travels_to_workers_without_its_model() -> None:
    declared = Settings.__laminar_parameters__
    assert declared is not None
    declared.validate({"region": "west"}, flow="Training")  # builds (and caches) the Pydantic model
    copy = pickle.loads(cloudpickle.dumps(declared))
    assert "model" not in vars(copy) and "fields" not in vars(copy)
    assert copy.fields["region"].required and not copy.fields["lr"].required  # the sentinel kept
    with pytest.raises(ConfigurationError, match="parameter 'region' of flow Training is required"):
        copy.validate({}, flow="Training")


def test_help_sits_beside_other_constraints_and_the_class_reads_its_layer(tmp_path: Path) -> None:
    class Bounded(Flow): ...

    @Bounded.register
    class Limits(Parameters):
        workers: Annotated[int, pydantic.Field(gt=0), Help("how many")] = 1

    declared = Limits.__laminar_parameters__
    assert declared is not None and declared.fields["workers"].help == "how many"
    flow = Bounded(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    with pytest.raises(
        ConfigurationError, match="parameter 'workers' of flow Bounded: got 0 \\(int\\), expected"
    ):
        flow(workers=0)  # the other constraint still holds
    run = flow(workers="2")
    assert run.layer(Limits).workers == 2 and run.layer(Parameters).workers == 2  # by class, either one
    assert declared.schema()["properties"]["workers"] == {
        "default": 1, "description": "how many", "exclusiveMinimum": 0, "title": "Workers", "type": "integer"
    }  # fmt: skip
