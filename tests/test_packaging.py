"""Installing Laminar from this repository, as the README says.

Laminar is not on PyPI, and the ``laminar`` there is an unrelated earlier project (2022.5a1).
``./run build`` writes a wheel and an sdist of every distribution of the workspace, all at one
version that sorts after 2022.5a1, and the umbrella ``laminar`` pins its parts to that version.
The README's ``pip install "laminar[gcs]" --find-links dist/`` (real pip, its default index, no
machine-wide pip configuration) into a fresh virtual environment gives laminar-core and laminar-gcs
and no other backend; the getting-started pages' ``flows.py`` and ``read.py`` run there, as does a
flow on the GCS emulator and the ``laminar`` command. Each other extra (installed with
``uv pip``) brings only its own backend, and a flow on that backend runs. ``./run`` never removes a
package a user added to the environment it syncs.

The wheels are built once per module; each fresh environment is made once per module.
"""

from __future__ import annotations

import email
import os
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

ROOT = Path(__file__).resolve().parent.parent
VERSION = Version("2026.12.0")
EARLIER = Version("2022.5a1")  # the earlier, unrelated `laminar` on PyPI
README_COMMAND = 'pip install "laminar[gcs]" --find-links dist/'

FORBIDDEN = {
    "s3": ("s3fs", "boto", "aiobotocore"),
    "gcs": ("google-cloud-storage", "google-api-core", "google-auth"),
    "azure": ("azure-storage-blob", "azure-core", "azure-identity"),
    "dask": ("dask", "distributed"),
    "fsspec": ("paramiko", "asyncssh"),
}
BACKEND = {"s3": "laminar-s3", "gcs": "laminar-gcs", "azure": "laminar-azure", "fsspec": "laminar-fsspec"}

FLOW = textwrap.dedent(
    """
    from laminar import Flow, Layer, Parameters
    from laminar.configurations.layers import ForEach, Parameter


    class Extra(Flow): ...


    @Extra.register
    class Numbers(Layer):
        def __call__(self, parameters: Parameters) -> None:
            self.shard(values=list(range(parameters.count)))


    @Extra.register(foreach=ForEach(parameters=[Parameter(layer=Numbers, attribute="values")]))
    class Double(Layer):
        def __call__(self, numbers: Numbers) -> None:
            self.value = numbers.values * 2


    if flow := Extra():
        execution = flow(count=4)
        print("doubled:", list(execution.layer(Double).value), flow.configuration.datastore.url)
    """
)


def workspace() -> dict[str, Path]:
    """Every distribution of the workspace (the umbrella included): name -> its pyproject.toml."""
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    found: dict[str, Path] = {canonicalize_name(root["project"]["name"]): ROOT / "pyproject.toml"}
    for member in root["tool"]["uv"]["workspace"]["members"]:
        path = ROOT / member / "pyproject.toml"
        found[canonicalize_name(tomllib.loads(path.read_text())["project"]["name"])] = path
    return found


def uv() -> str:
    found = shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv")
    if not Path(found).exists():
        pytest.fail(
            "uv is needed to build and install the wheels: run ./run test (it installs uv into .tools/)"
        )
    return found


def clean_environment(**extra: str) -> dict[str, str]:
    """This process's environment without its virtual environment, pip's and uv's machine-wide settings
    and any ``LAMINAR_*`` choice: as a user's shell would be."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PIP_", "UV_", "LAMINAR_")) and k != "VIRTUAL_ENV"
    }
    if "PIP_CERT" in os.environ:
        env["PIP_CERT"] = os.environ["PIP_CERT"]
    return {**env, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "UV_PYTHON_DOWNLOADS": "never", **extra}  # fmt: skip


def installed(python: Path) -> dict[str, Version]:
    listing = subprocess.run(
        [
            python,
            "-c",
            "import importlib.metadata as m\n"
            "for d in m.distributions(): print(d.metadata['Name'], d.version)",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {
        canonicalize_name(name): Version(version)
        for name, version in (line.split() for line in listing.splitlines() if line.strip())
    }


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``./run build DIR``: what the README tells a user to run, into a temporary directory."""
    out = tmp_path_factory.mktemp("checkout") / "dist"  # installed from its parent as `--find-links dist/`
    result = subprocess.run(
        [str(ROOT / "run"), "build", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return out


@pytest.fixture(scope="module")
def fresh_venv(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Path]]:
    """``fresh_venv(extra)``: the python of a new virtual environment with ``laminar[extra]`` installed.

    ``gcs`` is installed exactly as the README says, with pip; the others with ``uv pip``.
    """
    made: dict[str, Path] = {}

    def make(extra: str) -> Path:
        if extra in made:
            return made[extra]
        venv = tmp_path_factory.mktemp(f"venv-{extra}")
        if extra == "gcs":
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=clean_environment())
            command = [
                str(venv / "bin" / "pip"),
                "install",
                "--quiet",
                f"laminar[{extra}]",
                "--find-links",
                "dist/",
            ]
        else:
            subprocess.run([uv(), "venv", "--quiet", "--python", sys.executable, str(venv)], check=True,
                           env=clean_environment())  # fmt: skip
            command = [uv(), "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"),
                       f"laminar[{extra}]", "--find-links", "dist/"]  # fmt: skip
        result = subprocess.run(
            command, cwd=dist.parent, env=clean_environment(), capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, result.stdout + result.stderr
        made[extra] = venv / "bin" / "python"
        return made[extra]

    yield make


# ---- the build ------------------------------------------------------------------------------------


def test_build_writes_a_wheel_and_an_sdist_of_every_distribution_at_one_version(dist: Path) -> None:
    wheels = {parse_wheel_filename(p.name)[:2] for p in dist.glob("*.whl")}
    sdists = {parse_sdist_filename(p.name) for p in dist.glob("*.tar.gz")}
    expected = {(name, VERSION) for name in workspace()}
    assert wheels == expected
    assert sdists == expected


def test_the_umbrella_pins_every_part_to_the_same_version(dist: Path) -> None:
    (wheel,) = dist.glob("laminar-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        metadata = email.message_from_bytes(archive.read(f"laminar-{VERSION}.dist-info/METADATA"))
    requirements = [Requirement(line) for line in metadata.get_all("Requires-Dist", [])]
    ours = [r for r in requirements if canonicalize_name(r.name) in workspace()]
    assert ours and all(str(r.specifier) == f"=={VERSION}" for r in ours), [str(r) for r in ours]
    # every distribution but the example plugin is reachable through the umbrella
    parts = {canonicalize_name(r.name) for r in ours}
    assert parts == {name for name, path in workspace().items() if "examples" not in path.parts} - {"laminar"}
    assert set(metadata.get_all("Provides-Extra", [])) >= {"s3", "gcs", "azure", "fsspec", "dask", "all"}


def chosen_laminar(tool: str, find_links: Path, pip: Path, scratch: Path) -> Version:
    """The ``laminar`` a resolver picks from PyPI plus ``find_links``, pre-releases allowed (so that
    only the version order decides), without installing it."""
    if tool == "pip":
        out = scratch / "download"
        command = [
            str(pip),
            "download",
            "--quiet",
            "--pre",
            "--no-deps",
            "laminar",
            "--find-links",
            str(find_links),
            "-d",
            str(out),
        ]
        result = subprocess.run(command, env=clean_environment(), capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        (file,) = out.iterdir()
        name, version = (
            parse_wheel_filename(file.name)[:2] if file.suffix == ".whl" else parse_sdist_filename(file.name)
        )
        assert name == "laminar"
        return version
    command = [uv(), "pip", "compile", "-", "--quiet", "--no-header", "--no-annotate", "--no-deps",
               "--prerelease", "allow", "--find-links", str(find_links)]  # fmt: skip
    result = subprocess.run(
        command, input="laminar\n", env=clean_environment(), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("laminar==")]
    return Version(line.removeprefix("laminar=="))


@pytest.mark.parametrize("tool", ["pip", "uv"])
def test_no_resolver_prefers_the_earlier_laminar_on_pypi(
    tool: str, dist: Path, fresh_venv: Callable[[str], Path], tmp_path: Path
) -> None:
    pip = fresh_venv("gcs").parent / "pip"
    # the control: a local wheel whose version sorts before 2022.5a1 loses to PyPI's earlier project
    decoy = tmp_path / "decoy"
    decoy.mkdir()
    wheel(decoy, "laminar", "2000.1")
    assert chosen_laminar(tool, decoy, pip, tmp_path / "a") == EARLIER
    # ours sorts after it
    assert chosen_laminar(tool, dist, pip, tmp_path / "b") == VERSION


# ---- the README's install, with pip ---------------------------------------------------------------


def test_readme_and_getting_started_give_the_command_this_test_runs() -> None:
    assert README_COMMAND in (ROOT / "README.md").read_text()
    assert README_COMMAND in (ROOT / "docs" / "getting-started.md").read_text()
    # every install command for a Laminar distribution says where the wheels are (the README's own
    # warning, "never `pip install laminar` from the registry", is not a command)
    command = re.compile(r"^\s*(uv )?pip install .*\blaminar|`pip install \"laminar")
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]:
        for line in path.read_text().splitlines():
            if command.search(line):
                assert "--find-links" in line or "dist/" in line, f"{path.name}: {line}"


def test_laminar_gcs_from_dist_gives_core_and_gcs_only(fresh_venv: Callable[[str], Path]) -> None:
    names = installed(fresh_venv("gcs"))
    assert names["laminar"] == VERSION, "pip took the earlier laminar from PyPI"
    assert names["laminar-core"] == VERSION and names["laminar-gcs"] == VERSION
    assert "google-cloud-storage" in names
    others = sorted(n for n in names if n.startswith("laminar-") and n not in {"laminar-core", "laminar-gcs"})
    assert not others, f"laminar[gcs] pulled in {others}"
    for extra, packages in FORBIDDEN.items():
        if extra != "gcs":
            present = sorted(n for n in names if n.startswith(packages))
            assert not present, f"laminar[gcs] pulled in {present}"


def getting_started_files() -> list[tuple[str, str]]:
    """The ```python title="NAME" blocks of docs/getting-started.md, in order."""
    text = (ROOT / "docs" / "getting-started.md").read_text()
    return re.findall(r'^```python title="([^"]+)"\n(.*?)^```', text, re.DOTALL | re.MULTILINE)


def test_getting_started_runs_in_the_fresh_environment(
    fresh_venv: Callable[[str], Path], tmp_path: Path
) -> None:
    python = fresh_venv("gcs")
    files = getting_started_files()
    assert [name for name, _ in files] == ["flows.py", "read.py"]
    for name, code in files:
        (tmp_path / name).write_text(code)
    env = clean_environment()
    ran = subprocess.run(
        [python, "flows.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert re.fullmatch(r"execution \S{27}: total 30\n", ran.stdout), ran.stdout
    assert (tmp_path / ".laminar").is_dir()
    read = subprocess.run(
        [python, "read.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert read.returncode == 0, read.stdout + read.stderr
    assert ran.stdout.split()[1].rstrip(":") in read.stdout and "total 30" in read.stdout


def test_the_laminar_command_runs_a_flow_in_the_fresh_environment(
    fresh_venv: Callable[[str], Path], tmp_path: Path
) -> None:
    python = fresh_venv("gcs")
    laminar = python.parent / "laminar"
    assert laminar.exists(), "laminar-core installs no `laminar` command"
    (tmp_path / "flows.py").write_text(dict(getting_started_files())["flows.py"])
    env = clean_environment()
    ran = subprocess.run(
        [laminar, "run", "flows.py", "--param", "count=3"], cwd=tmp_path, env=env, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stdout + ran.stderr
    check = (
        "from flows import Squares, Total\n"
        "flow = Squares()\n"
        "execution = flow.configuration.datastore.list_executions(flow=flow)[-1]\n"
        "print(execution.id, execution.layer(Total).total)"
    )
    read = subprocess.run([python, "-c", check], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert read.returncode == 0, read.stdout + read.stderr
    execution, total = read.stdout.split()
    assert execution in ran.stdout  # the command names the execution it ran
    assert total == "14"  # 1 + 4 + 9: the parameter reached the flow, and the run is stored


# ---- each extra installs only its backend, and a flow runs on it ---------------------------------


@pytest.fixture
def fsspec_location(tmp_path: Path) -> str:
    """Any fsspec filesystem through laminar-fsspec; the local one needs no server."""
    return f"fsspec+file://{tmp_path}/runs"


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param("gcs", marks=pytest.mark.gcs),
        pytest.param("s3", marks=pytest.mark.s3),
        pytest.param("azure", marks=pytest.mark.azure),
        pytest.param("fsspec"),
    ],
)
@pytest.mark.timeout(600)
def test_extra_installs_only_its_backend(
    extra: str, fresh_venv: Callable[[str], Path], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    python = fresh_venv(extra)
    names = installed(python)
    assert (
        names["laminar"] == VERSION and names["laminar-core"] == VERSION and names[BACKEND[extra]] == VERSION
    )
    for other, packages in FORBIDDEN.items():
        if other == extra:
            continue
        present = sorted(name for name in names if name.startswith(packages))
        assert not present, f"laminar[{extra}] pulled in {present}"
    assert not (set(workspace()) - {"laminar", "laminar-core", BACKEND[extra]}) & set(names)

    location = request.getfixturevalue(f"{extra}_location")  # the emulator, with its environment
    script = tmp_path / "flow.py"
    script.write_text(FLOW)
    result = subprocess.run(
        [python, str(script)],
        cwd=tmp_path,
        env={**os.environ, "LAMINAR_DATASTORE": location},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"doubled: [0, 2, 4, 6] {location}" in result.stdout


# ---- ./run keeps what a user installed -----------------------------------------------------------


def wheel(directory: Path, name: str, version: str) -> Path:
    """A minimal pure-Python wheel of ``name`` (an empty package), written into ``directory``."""
    stem = f"{name.replace('-', '_')}-{version}"
    path = directory / f"{stem}-py3-none-any.whl"
    files = {
        f"{name.replace('-', '_')}/__init__.py": "",
        f"{stem}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{stem}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{stem}.dist-info/RECORD"] = "".join(
        f"{file},,\n" for file in [*files, f"{stem}.dist-info/RECORD"]
    )
    with zipfile.ZipFile(path, "w") as archive:
        for file, text in files.items():
            archive.writestr(file, text)
    return path


@pytest.mark.timeout(600)
def test_run_keeps_packages_a_user_added_to_the_environment(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    env = clean_environment(UV_PROJECT_ENVIRONMENT=str(venv), LAMINAR_DEMO_DIR=str(tmp_path / "demo"))
    subprocess.run([uv(), "venv", "--quiet", "--python", sys.executable, str(venv)], check=True, env=env)
    subprocess.run(
        [
            uv(),
            "pip",
            "install",
            "--quiet",
            "--python",
            str(venv / "bin" / "python"),
            wheel(tmp_path, "user-marker", "1.0"),
        ],
        check=True,
        env=env,
    )
    assert "user-marker" in installed(venv / "bin" / "python")

    demo = subprocess.run(
        [str(ROOT / "run"), "demo"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr

    names = installed(venv / "bin" / "python")
    assert "laminar-core" in names, "./run did not sync the environment it was pointed at"
    assert "user-marker" in names, "./run removed a package the user installed"
