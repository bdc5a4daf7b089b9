"""``laminar run`` and declared parameters: ``FILE --help`` lists them, each is an option read by its
type, ``--params FILE`` reads many from JSON, TOML or YAML, and a bad value of any type is one line
with nothing stored. A flow that declares none keeps ``--param NAME=VALUE``, where text that starts
as JSON must parse."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from laminar._cli import loading
from laminar._cli.main import cli

FLOW = textwrap.dedent(
    """
    from __future__ import annotations

    import dataclasses
    import datetime
    import enum
    from pathlib import Path
    from typing import Annotated, Literal

    import pydantic
    from laminar import Flow, Help, Layer, Parameters


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


    class Typed(Flow): ...


    @Typed.register
    class Settings(Parameters):
        title: Annotated[str, Help("what the run is called")]
        epochs: int = 10
        lr: Annotated[float, Help("learning rate")] = 0.01
        shuffle: bool = False
        data: Path = Path("data.csv")
        day: datetime.date = datetime.date(2026, 1, 1)
        at: datetime.datetime = datetime.datetime(2026, 1, 1, 12, 0)
        color: Color = Color.red
        region: Literal["west", "east"] = "west"
        rates: list[float] = [0.1, 0.2]
        shape: tuple[int, int] = (2, 3)
        weights: dict[str, float] = {}
        seed: int | None = None
        optimizer: Optimizer = Optimizer(name="sgd")
        window: Window = Window(0, 10)


    @Typed.register
    class Fit(Layer):
        def __call__(self, parameters: Settings) -> None:
            self.steps = parameters.epochs * 2


    if flow := Typed():
        flow()
    """
)

PLAIN = textwrap.dedent(
    """
    from laminar import Flow, Layer, Parameters


    class Plain(Flow): ...


    @Plain.register
    class Echo(Layer):
        def __call__(self, parameters: Parameters) -> None:
            self.rates = parameters.rates
    """
)

#: Each type's option, a good text and what it reads as, and a bad text.
CASES: list[tuple[str, str, Any, str]] = [
    ("title", "hello", "hello", ""),
    ("epochs", "3", 3, "ten"),
    ("lr", "0.05", 0.05, "fast"),
    ("shuffle", "true", True, "maybe"),
    ("data", "in/x.csv", Path("in/x.csv"), ""),
    ("day", "2026-02-03", datetime.date(2026, 2, 3), "someday"),
    ("at", "2026-02-03T04:05:06", datetime.datetime(2026, 2, 3, 4, 5, 6), "noon"),
    ("color", "blue", "<Color.blue: 'blue'>", "green"),
    ("region", "east", "east", "north"),
    ("rates", "[0.5, 1]", [0.5, 1.0], '["x"]'),
    ("shape", "[4, 5]", (4, 5), "[4]"),
    ("weights", '{"a": 2}', {"a": 2.0}, '{"a": "b"}'),
    ("seed", "7", 7, "x"),
    ("optimizer", '{"name": "adam"}', "Optimizer(name='adam', momentum=0.9)", '{"momentum": 1}'),
    ("window", '{"start": 1, "stop": 2}', "Window(start=1, stop=2)", '{"start": "a", "stop": 2}'),
]


@pytest.fixture
def flow_file(tmp_path: Path) -> Path:
    path = tmp_path / "typed_flow.py"
    path.write_text(FLOW)
    return path


@pytest.fixture
def store(tmp_path: Path) -> str:
    return (tmp_path / "store").as_uri()


def laminar(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(arg) for arg in args], catch_exceptions=False)


def run(flow_file: Path, store: str, *extra: str) -> Result:
    return laminar("run", flow_file, "--datastore", store, "--executor", "thread", *extra)


def error_line(result: Result) -> str:
    assert result.exit_code != 0, result.output
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.stderr
    return lines[0]


def executions(store: str) -> list[str]:
    return sorted(p.name for p in Path(store.removeprefix("file://")).glob("flows/*/executions/*"))


def parameters_of(flow_file: Path, store: str, execution: str) -> dict[str, Any]:
    flow = loading.load(str(flow_file)).kind(datastore=store, executor="thread")
    return dict(flow.execution(execution).status.parameters)


def shown(value: Any) -> Any:
    return (
        value if isinstance(value, (str, int, float, list, tuple, dict, Path, datetime.date)) else repr(value)
    )


def test_help_lists_every_declared_parameter_with_its_type_and_default(flow_file: Path) -> None:
    laminar_command = Path(sys.executable).parent / "laminar"
    result = subprocess.run(
        [str(laminar_command), "run", str(flow_file), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip().startswith("--")}
    expected = {
        "--title": "TEXT str, required: what the run is called",
        "--epochs": "INT int, default 10",
        "--lr": "FLOAT float, default 0.01: learning rate",
        "--shuffle": "BOOL bool, default false",
        "--data": "PATH Path, default data.csv",
        "--day": "DATE date, default 2026-01-01",
        "--at": "DATETIME datetime, default 2026-01-01T12:00:00",
        "--color": "[red|blue] Color, default red",
        "--region": "[west|east] Literal['west', 'east'], default west",
        "--rates": "JSON list[float], default [0.1,0.2]",
        "--shape": "JSON tuple[int, int], default [2,3]",
        "--weights": "JSON dict[str, float], default {}",
        "--seed": "INT int | None, default null",
        "--optimizer": 'JSON Optimizer, default {"name":"sgd","momentum":0.9}',
        "--window": 'JSON Window, default {"start":0,"stop":10}',
    }
    for option, text in expected.items():
        assert option in lines, result.stdout
        assert " ".join(lines[option].split()[1:]) == text
    assert "--param NAME=VALUE" in result.stdout and "--params FILE" in result.stdout


def test_each_type_is_read_from_its_option(flow_file: Path, store: str) -> None:
    arguments = [text for name, good, _, _ in CASES for text in (f"--{name}", good)]
    result = run(flow_file, store, "--execution", "typed", *arguments)
    assert result.exit_code == 0, result.output
    found = parameters_of(flow_file, store, "typed")
    assert {name: shown(found[name]) for name, *_ in CASES} == {name: value for name, _, value, _ in CASES}


@pytest.mark.parametrize(("name", "bad"), [(name, bad) for name, _, _, bad in CASES if bad])
def test_a_bad_value_of_each_type_is_one_line_and_nothing_is_stored(
    flow_file: Path, store: str, name: str, bad: str
) -> None:
    assert run(flow_file, store, "--title", "first").exit_code == 0
    before = executions(store)
    line = error_line(run(flow_file, store, "--title", "t", f"--{name}", bad))
    assert f"parameter '{name}" in line and "of flow Typed" in line and "expected" in line
    assert executions(store) == before


def test_a_required_parameter_left_out_is_named(flow_file: Path, store: str) -> None:
    line = error_line(run(flow_file, store))
    assert "parameter 'title' of flow Typed is required: give a str" in line
    assert "resume" not in line
    assert executions(store) == []


@pytest.mark.parametrize(
    ("suffix", "text"),
    [
        (".json", json.dumps({"title": "from a file", "epochs": 4, "day": "2026-05-06", "rates": [1, 2]})),
        (".toml", 'title = "from a file"\nepochs = 4\nday = 2026-05-06\nrates = [1, 2]\n'),
        (".yaml", "title: from a file\nepochs: 4\nday: 2026-05-06\nrates: [1, 2]\n"),
    ],
)
def test_params_reads_a_json_toml_or_yaml_file(
    flow_file: Path, store: str, tmp_path: Path, suffix: str, text: str
) -> None:
    file = tmp_path / f"parameters{suffix}"
    file.write_text(text)
    result = run(flow_file, store, "--params", str(file), "--execution", "filed", "--lr", "0.5")
    assert result.exit_code == 0, result.output
    found = parameters_of(flow_file, store, "filed")
    assert found["title"] == "from a file" and found["epochs"] == 4 and found["rates"] == [1.0, 2.0]
    assert found["day"] == datetime.date(2026, 5, 6) and found["lr"] == 0.5  # the option over the file


@pytest.mark.parametrize(
    ("suffix", "text", "message"),
    [
        (
            ".json",
            '{"title": "x", "epochs": "ten"}',
            "parameter 'epochs' of flow Typed: got 'ten' (str), expected int",
        ),
        (
            ".toml",
            'title = "x"\ncolor = "green"',
            "parameter 'color' of flow Typed: got 'green' (str), expected Color",
        ),
        (".yaml", "title: x\nbogus: 1", "flow Typed has no parameter 'bogus'"),
        (".json", '{"title": ', "is not valid JSON"),
        (".toml", "title = ", "is not valid TOML"),
        (".yaml", "title: [", "is not valid YAML"),
        (".yaml", "- a\n- b", "holds a list, not a mapping of parameter names to values"),
        (".ini", "title=x", "is not a .json, .toml, .yaml or .yml file"),
    ],
)
def test_a_bad_parameters_file_is_one_line_and_nothing_is_stored(
    flow_file: Path, store: str, tmp_path: Path, suffix: str, text: str, message: str
) -> None:
    file = tmp_path / f"parameters{suffix}"
    file.write_text(text)
    assert message in error_line(run(flow_file, store, "--params", str(file)))
    assert executions(store) == []


def test_a_missing_parameters_file_is_named(flow_file: Path, store: str, tmp_path: Path) -> None:
    line = error_line(run(flow_file, store, "--params", str(tmp_path / "none.json")))
    assert f"cannot read {tmp_path / 'none.json'}" in line


def test_an_option_the_flow_does_not_declare_is_refused(flow_file: Path, store: str) -> None:
    assert "No such option '--bogus'" in error_line(run(flow_file, store, "--title", "t", "--bogus", "1"))
    assert "flow Typed has no parameter 'bogus'" in error_line(run(flow_file, store, "--param", "bogus=1"))
    assert executions(store) == []


@pytest.fixture
def plain_file(tmp_path: Path) -> Path:
    path = tmp_path / "plain_flow.py"
    path.write_text(PLAIN)
    return path


def test_a_flow_without_declared_parameters_takes_param_as_before(plain_file: Path, store: str) -> None:
    result = run(plain_file, store, "--param", "rates=[0.1, 0.2]", "--execution", "a")
    assert result.exit_code == 0, result.output
    assert parameters_of(plain_file, store, "a") == {"rates": [0.1, 0.2]}
    assert run(plain_file, store, "--param", "rates=v1.2", "--execution", "b").exit_code == 0
    assert parameters_of(plain_file, store, "b") == {"rates": "v1.2"}  # not JSON: its text


@pytest.mark.parametrize("text", ["[0.1,", "{'a': 1}", '"open'])
def test_text_that_starts_as_json_but_does_not_parse_is_refused(
    plain_file: Path, store: str, text: str
) -> None:
    line = error_line(run(plain_file, store, "--param", f"rates={text}"))
    assert f"parameter 'rates': {text!r} starts as JSON but does not parse" in line
    assert executions(store) == []


def test_a_plain_flow_reads_a_parameters_file_as_it_is(plain_file: Path, store: str, tmp_path: Path) -> None:
    file = tmp_path / "p.toml"
    file.write_text("rates = [1, 2]\n")
    assert run(plain_file, store, "--params", str(file), "--execution", "f").exit_code == 0
    assert parameters_of(plain_file, store, "f") == {"rates": [1, 2]}


# ---- stored with their types, and shown ---------------------------------------------------------


def ran(flow_file: Path, store: str, execution: str, *extra: str) -> None:
    result = run(flow_file, store, "--execution", execution, "--title", "t", *extra)
    assert result.exit_code == 0, result.output


def test_show_gives_each_value_with_its_type(flow_file: Path, store: str) -> None:
    ran(flow_file, store, "a", "--lr", "0.05", "--region", "east")
    result = laminar("show", flow_file, "a", "--datastore", store)
    assert result.exit_code == 0, result.output
    assert "lr=0.05 (float)" in result.stdout
    assert "region='east' (Literal['west', 'east'])" in result.stdout
    assert "rates=[0.1, 0.2] (list[float])" in result.stdout


def test_show_json_has_a_json_schema_that_validates_the_stored_values(flow_file: Path, store: str) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    ran(flow_file, store, "a", "--day", "2026-03-04", "--optimizer", '{"name": "adam"}', "--data", "x.csv")
    result = laminar("show", flow_file, "a", "--datastore", store, "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    values, schema = document["parameters"], document["parameter_schema"]
    assert values["day"] == "2026-03-04" and values["data"] == "x.csv" and values["color"] == "red"
    assert values["optimizer"] == {"name": "adam", "momentum": 0.9}
    assert (
        document["parameter_types"]["day"] == "date" and document["parameter_types"]["seed"] == "int | None"
    )
    jsonschema.validate(values, schema)
    for name, wrong in [("region", "north"), ("epochs", "ten"), ("bogus", 1), ("window", {"start": 1})]:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**values, name: wrong}, schema)
    without = dict(values)
    del without["title"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(without, schema)


def test_show_json_of_a_flow_without_declared_parameters(plain_file: Path, store: str) -> None:
    assert run(plain_file, store, "--param", "rates=[1]", "--execution", "p").exit_code == 0
    document = json.loads(laminar("show", plain_file, "p", "--datastore", store, "--json").stdout)
    assert document["parameters"] == {"rates": [1]}
    assert document["parameter_types"] == {"rates": "list"} and document["parameter_schema"] is None


def test_diff_names_a_changed_parameter_with_its_type(flow_file: Path, store: str) -> None:
    ran(flow_file, store, "a", "--lr", "0.05")
    ran(flow_file, store, "b", "--lr", "0.5")
    rows = json.loads(laminar("diff", flow_file, "a", "b", "--datastore", store, "--json").stdout)
    found = {(row["layer"], row["name"]): row for row in rows}
    assert found[("Parameters", "lr")]["type"] == "float"
    assert (found[("Parameters", "lr")]["a"], found[("Parameters", "lr")]["b"]) == ("0.05", "0.5")
    assert "lr (float)" in laminar("diff", flow_file, "a", "b", "--datastore", store).stdout


def test_the_report_gives_each_parameter_its_type(flow_file: Path, store: str, tmp_path: Path) -> None:
    ran(flow_file, store, "a", "--lr", "0.05")
    page = tmp_path / "report.html"
    result = laminar("report", flow_file, "a", "--datastore", store, "-o", str(page))
    assert result.exit_code == 0, result.output
    html = page.read_text()
    assert "<th>type</th>" in html
    assert "<tr><td><code>lr</code></td><td><code>0.05</code></td><td><code>float</code></td></tr>" in html


def test_resume_refuses_new_parameters_and_changes_nothing(flow_file: Path, store: str) -> None:
    ran(flow_file, store, "a", "--lr", "0.05")
    for extra in (["--lr", "0.5"], ["--param", "lr=0.5"], ["--params", "p.json"]):
        line = error_line(laminar("resume", flow_file, "a", "--datastore", store, *extra))
        assert "execution a resumes with the parameters it was started with, and takes no " in line
        assert " ".join(extra) in line
    assert parameters_of(flow_file, store, "a")["lr"] == 0.05
    flow = loading.load(str(flow_file)).kind(datastore=store, executor="thread")
    assert len(flow.execution("a").status.runs) == 1  # nothing resumed
    assert laminar("resume", flow_file, "a", "--datastore", store, "--executor", "thread").exit_code == 0


def test_a_flow_file_with_declared_parameters_runs_on_the_process_executor(
    flow_file: Path, store: str
) -> None:
    result = laminar(
        "run", flow_file, "--datastore", store, "--executor", "process", "--execution", "p",
        "--title", "t", "--epochs", "4", "--window", '{"start": 1, "stop": 2}',
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    flow = loading.load(str(flow_file)).kind(datastore=store, executor="thread")
    assert flow.execution("p").layer("Fit").steps == 8
