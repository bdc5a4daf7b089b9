"""Installing Laminar from this repository, as the README says.

Laminar is not on PyPI, and the ``laminar`` there is an unrelated earlier project (2022.5a1).
``./run build`` writes a wheel and an sdist of every distribution of the workspace, all at one
version that sorts after 2022.5a1, each pinning the others it needs to that version; each sdist
holds its own distribution only. ``./run version`` (scripts/bump-version) moves them all, after
CHANGELOG.md describes the version. The README's ``pip install "laminar[gcs]" --find-links dist/``
(real pip, its default index, no machine-wide pip configuration) into a fresh virtual environment
gives laminar-core and laminar-gcs and no other backend; the getting-started pages' ``flows.py`` and
``read.py`` run there, as does a flow on the GCS emulator and the ``laminar`` command. Every extra
resolves to what the README's table says it gives; each backend's extra (installed with ``uv pip``)
brings only its own backend, and a flow on that backend runs; the otel extras export spans. ``./run``
never removes a package a user added to the environment it syncs.

The wheels are built once per session (tests/distributions.py), as is the README's environment; each
other fresh environment is made once per module.
"""

from __future__ import annotations

import email
import http.server
import os
import re
import subprocess
import sys
import tarfile
import textwrap
import threading
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from distributions import (
    ROOT,
    built,
    clean_environment,
    installed,
    readme_environment,
    uv,
)
from distributions import version as current_version
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

VERSION = current_version()
EARLIER = Version("2022.5a1")  # the earlier, unrelated `laminar` on PyPI
README_COMMAND = 'pip install "laminar[gcs]" --find-links dist/'

FORBIDDEN = {
    "s3": ("s3fs", "boto", "aiobotocore"),
    "gcs": ("google-cloud-storage", "google-api-core", "google-auth"),
    "azure": ("azure-storage-blob", "azure-core", "azure-identity"),
    "dask": ("dask", "distributed"),
    "sftp": ("paramiko", "asyncssh"),
}
BACKEND = {"s3": "laminar-s3", "gcs": "laminar-gcs", "azure": "laminar-azure", "fsspec": "laminar-fsspec",
           "sftp": "laminar-fsspec"}  # fmt: skip

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


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``./run build DIR``: what the README tells a user to run, into a temporary directory (once per
    session: tests/test_readme.py uses the same build)."""
    return built(tmp_path_factory)


@pytest.fixture(scope="module")
def fresh_venv(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Path]]:
    """``fresh_venv(extra)``: the python of a new virtual environment with ``laminar[extra]`` installed.

    ``gcs`` is the README's own environment (its install lines run with real pip, once per session);
    the others are installed with ``uv pip``.
    """
    made: dict[str, Path] = {}

    def make(extra: str) -> Path:
        if extra == "gcs":
            return readme_environment(tmp_path_factory)
        if extra in made:
            return made[extra]
        venv = tmp_path_factory.mktemp(f"venv-{extra}")
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


def sdist_files(sdist: Path) -> set[str]:
    """The files of an sdist, below its top directory."""
    with tarfile.open(sdist) as archive:
        return {m.name.split("/", 1)[1] for m in archive.getmembers() if m.isfile()}


def tracked(directory: Path) -> set[str]:
    """The files of this checkout below ``directory`` that git keeps (or would), relative to it."""
    listing = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", "."],
        cwd=directory, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return {line for line in listing.splitlines() if (directory / line).is_file()}


#: What the umbrella `laminar` is made of: it has no code, and its folder is the whole repository's.
UMBRELLA_FILES = {"pyproject.toml", "README.md", "CHANGELOG.md"}
#: What the build backend (hatchling) adds to every sdist: the metadata, and the ignore rules it found.
SDIST_EXTRAS = {"PKG-INFO", ".gitignore"}


def test_each_sdist_holds_its_own_distribution_only(dist: Path) -> None:
    for name, pyproject in workspace().items():
        (sdist,) = dist.glob(f"{name.replace('-', '_')}-{VERSION}.tar.gz")
        own = UMBRELLA_FILES if name == "laminar" else tracked(pyproject.parent)
        assert sdist_files(sdist) == own | SDIST_EXTRAS, sdist.name


def test_every_distribution_the_lock_and_the_changelog_agree_on_one_version(dist: Path) -> None:
    for name, pyproject in workspace().items():
        assert Version(tomllib.loads(pyproject.read_text())["project"]["version"]) == VERSION, name
    # every wheel pins what it needs of this repository to exactly its own version; only the example
    # of an out-of-tree plugin asks for laminar-core as a plugin of its own would
    for wheel in dist.glob("*.whl"):
        name = parse_wheel_filename(wheel.name)[0]
        with zipfile.ZipFile(wheel) as archive:
            metadata = email.message_from_bytes(
                archive.read(f"{wheel.name.split('-')[0]}-{VERSION}.dist-info/METADATA")
            )
        ours = [Requirement(line) for line in metadata.get_all("Requires-Dist", [])]
        ours = [r for r in ours if canonicalize_name(r.name) in workspace()]
        if name == "laminar-sqlite":
            assert [str(r) for r in ours] == ["laminar-core"]
        elif name != "laminar-core":
            assert ours and all(str(r.specifier) == f"=={VERSION}" for r in ours), (
                name,
                [str(r) for r in ours],
            )
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    locked = {p["name"]: Version(p["version"]) for p in lock["package"] if p["name"] in workspace()}
    assert locked == dict.fromkeys(workspace(), VERSION), "uv.lock is stale: ./run version updates it"
    headings = re.findall(r"^## (\S+)\s*$", (ROOT / "CHANGELOG.md").read_text(), re.MULTILINE)
    assert headings[0] == str(VERSION), "CHANGELOG.md's newest section is not the current version"
    # the install instructions name the current version and no other
    for path in [ROOT / "README.md", ROOT / "docs" / "getting-started.md"]:
        named = set(re.findall(r"\b20\d\d\.\d+\.\d+\b", path.read_text()))
        assert named == {str(VERSION)}, path.name


def workspace_copy(tmp_path: Path) -> Path:
    """The files ``scripts/bump-version`` reads and writes, copied into ``tmp_path`` as they are here."""
    for pyproject in workspace().values():
        target = tmp_path / pyproject.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(pyproject.read_text())
    for name in ["CHANGELOG.md", "README.md", "docs/getting-started.md"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text((ROOT / name).read_text())
    return tmp_path


def bump(root: Path, new: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bump-version"), new, "--root", str(root)],
        capture_output=True, text=True,
    )  # fmt: skip


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def test_bump_version_moves_every_version_and_pin_and_nothing_else(tmp_path: Path) -> None:
    root = workspace_copy(tmp_path)
    changelog = root / "CHANGELOG.md"
    changelog.write_text(
        changelog.read_text().replace(f"## {VERSION}", f"## 2099.1.0\n\nA test.\n\n## {VERSION}", 1)
    )
    before = snapshot(root)
    result = bump(root, "2099.1.0")
    assert result.returncode == 0, result.stderr
    after = snapshot(root)
    assert after["CHANGELOG.md"] == before["CHANGELOG.md"]
    for name, text in after.items():
        # every line changed is the old version made the new one, and no line keeps the old version
        changed = [
            (a, b) for a, b in zip(before[name].splitlines(), text.splitlines(), strict=True) if a != b
        ]
        assert all(a.replace(str(VERSION), "2099.1.0") == b for a, b in changed), name
        if name != "CHANGELOG.md":
            assert str(VERSION) not in text, name
    for name, pyproject in workspace().items():
        moved = tomllib.loads((root / pyproject.relative_to(ROOT)).read_text())
        assert moved["project"]["version"] == "2099.1.0", name
        requirements = [*moved["project"].get("dependencies", [])]
        requirements += [
            r for extra in moved["project"].get("optional-dependencies", {}).values() for r in extra
        ]
        for requirement in map(Requirement, requirements):
            if canonicalize_name(requirement.name) in workspace() and requirement.specifier:
                assert str(requirement.specifier) == "==2099.1.0", (name, str(requirement))
    assert "2099.1.0-py3-none-any.whl" in after["README.md"]


@pytest.mark.parametrize(
    ("new", "message"),
    [
        ("2099.1.0", "CHANGELOG.md has no '## 2099.1.0' section: say what changed in 2099.1.0 there first"),
        (str(VERSION), f"version {VERSION} does not sort after the current {VERSION}: choose a later one"),
        ("2026.1.0", f"version 2026.1.0 does not sort after the current {VERSION}: choose a later one"),
        ("2099.1", "version '2099.1' is not YEAR.MONTH.N (for example 2026.12.1)"),
    ],
)
def test_bump_version_refuses_and_writes_nothing(tmp_path: Path, new: str, message: str) -> None:
    root = workspace_copy(tmp_path)
    before = snapshot(root)
    result = bump(root, new)
    assert result.returncode == 1
    assert result.stderr.strip().endswith(message), result.stderr
    assert snapshot(root) == before


def test_bump_version_refuses_distributions_that_disagree(tmp_path: Path) -> None:
    root = workspace_copy(tmp_path)
    core = root / "laminar-core" / "pyproject.toml"
    core.write_text(core.read_text().replace(f'version = "{VERSION}"', 'version = "2026.11.9"'))
    before = snapshot(root)
    result = bump(root, "2099.1.0")
    assert result.returncode == 1
    assert f"the distributions disagree on their version (2026.11.9, {VERSION})" in result.stderr
    assert snapshot(root) == before


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
        pytest.param("sftp"),  # on the SFTP server of tests/emulators/sftp.py
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


# ---- each extra gives what the README's table says ----------------------------------------------

TABLE_ROW = re.compile(r'^\| `"laminar(?:\[([\w-]+)\])?"` \| (.*) \|$', re.MULTILINE)
NAMED = re.compile(r"\((laminar-[\w-]+)(?:, with ([^)]*))?\)")


def readme_extras() -> dict[str, set[str]]:
    """The README's extras table: each extra (``""``: plain ``laminar``) -> the distributions its row
    names, ``(laminar-x, with a, b and c)``; ``all`` names those of every other row."""
    rows: dict[str, set[str]] = {}
    for extra, gives in TABLE_ROW.findall((ROOT / "README.md").read_text()):
        if extra == "all":
            assert gives == "all of the above", gives
            continue
        named = NAMED.search(gives)
        assert named, f"the README's row for laminar[{extra}] names no distribution: {gives}"
        others = re.split(r", | and ", named[2]) if named[2] else []
        rows[extra] = {canonicalize_name(name) for name in [named[1], *others]}
    rows["all"] = set().union(*rows.values())
    return rows


def resolved(dist: Path, extra: str) -> set[str]:
    """Every distribution ``laminar[extra]`` installs from ``dist`` and PyPI, for this Python."""
    command = [uv(), "pip", "compile", "-", "--quiet", "--no-header", "--no-annotate", "--python",
               sys.executable, "--find-links", str(dist)]  # fmt: skip
    wanted = f"laminar[{extra}]" if extra else "laminar"
    result = subprocess.run(
        command, input=wanted, env=clean_environment(), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return {canonicalize_name(line.split("==")[0]) for line in result.stdout.splitlines() if "==" in line}


def test_each_extra_installs_what_the_readme_table_says(dist: Path) -> None:
    rows = readme_extras()
    (wheel,) = dist.glob(f"laminar-{VERSION}-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        metadata = email.message_from_bytes(archive.read(f"laminar-{VERSION}.dist-info/METADATA"))
    assert set(metadata.get_all("Provides-Extra", [])) == set(rows) - {""}, (
        "an extra without a row, or a row without an extra"
    )
    for extra, named in rows.items():
        got = resolved(dist, extra)
        assert named <= got, (
            f"laminar[{extra}] does not install {sorted(named - got)}, which the README names"
        )
        ours = got & set(workspace())
        assert ours == {"laminar", "laminar-core"} | (named & set(workspace())), (
            f"laminar[{extra}] installs {sorted(ours)}"
        )


def test_sftp_needs_the_sftp_extra_and_the_fsspec_row_says_so(
    fresh_venv: Callable[[str], Path], sftp_location: str, tmp_path: Path
) -> None:
    """laminar[fsspec] alone cannot open sftp://, and says which package it lacks; the README's row for
    it names the extra that gives it (laminar[sftp] runs a flow there: test_extra_installs_only_its_backend)."""
    result = subprocess.run(
        [fresh_venv("fsspec"), "-c", FLOW], cwd=tmp_path, capture_output=True, text=True,
        env={**clean_environment(), "LAMINAR_DATASTORE": sftp_location},
    )  # fmt: skip
    assert result.returncode != 0
    assert "needs a package that is not installed" in result.stderr and "paramiko" in result.stderr, (
        result.stderr
    )
    (row,) = [
        gives for extra, gives in TABLE_ROW.findall((ROOT / "README.md").read_text()) if extra == "fsspec"
    ]
    assert "(`sftp://`: the `sftp` extra)" in row


OTEL_FLOW = textwrap.dedent(
    """
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    {imports}

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor({exporter}))
    trace.set_tracer_provider(provider)

    from laminar import Flow, Layer


    class Traced(Flow): ...


    @Traced.register
    class Step(Layer):
        def __call__(self) -> None:
            self.done = True


    if flow := Traced(executor="thread"):
        flow()
        provider.shutdown()
    """
)


def test_the_otel_extra_exports_every_run_to_the_console(
    fresh_venv: Callable[[str], Path], tmp_path: Path
) -> None:
    script = OTEL_FLOW.format(
        imports="from opentelemetry.sdk.trace.export import ConsoleSpanExporter",
        exporter="ConsoleSpanExporter()",
    )
    result = subprocess.run(
        [fresh_venv("otel"), "-c", script],
        cwd=tmp_path,
        env=clean_environment(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for span in ["execution Traced", "layer Step", "split Step"]:
        assert f'"name": "{span}"' in result.stdout, result.stdout


class _Collector(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP endpoint that keeps what it is sent."""

    received: list[tuple[str, bytes]]

    def do_POST(self) -> None:
        self.received.append((self.path, self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_the_otel_otlp_extra_exports_every_run_over_otlp(
    fresh_venv: Callable[[str], Path], tmp_path: Path
) -> None:
    python = fresh_venv("otel-otlp")
    _Collector.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
        script = OTEL_FLOW.format(
            imports="from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter",
            exporter=f"OTLPSpanExporter(endpoint={endpoint!r})",
        )
        env = {**clean_environment(), "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
        result = subprocess.run([python, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 0, result.stdout + result.stderr
    assert {path for path, _ in _Collector.received} == {"/v1/traces"}
    sent = b"".join(body for _, body in _Collector.received)
    for span in [b"execution Traced", b"layer Step", b"split Step"]:
        assert span in sent


# ---- ./run keeps what a user installed -----------------------------------------------------------


def wheel(directory: Path, name: str, version: str, *, at_start: str = "") -> Path:
    """A minimal pure-Python wheel of ``name`` (an empty package), written into ``directory``;
    ``at_start``: a line every start of the environment's Python runs (a ``.pth`` file)."""
    stem = f"{name.replace('-', '_')}-{version}"
    path = directory / f"{stem}-py3-none-any.whl"
    files = {
        f"{name.replace('-', '_')}/__init__.py": "",
        **({f"{name.replace('-', '_')}.pth": at_start + "\n"} if at_start else {}),
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
@pytest.mark.parametrize("given", ["absolute", "relative"])
def test_run_keeps_packages_a_user_added_to_the_environment(tmp_path: Path, given: str) -> None:
    venv = tmp_path / "venv"
    started = tmp_path / "started"  # a process of the environment's Python that imported laminar, as it ends
    env = clean_environment(LAMINAR_DEMO_DIR=str(tmp_path / "demo"))
    # ./run uses the environment uv syncs; uv reads a relative path from the workspace root
    pointed = str(venv) if given == "absolute" else os.path.relpath(venv, ROOT)
    subprocess.run([uv(), "venv", "--quiet", "--python", sys.executable, str(venv)], check=True, env=env)
    subprocess.run(
        [
            uv(),
            "pip",
            "install",
            "--quiet",
            "--python",
            str(venv / "bin" / "python"),
            wheel(
                tmp_path,
                "user-marker",
                "1.0",
                at_start=(  # not uv's look at the interpreter: the demo's run
                    "import atexit, sys; atexit.register(lambda: 'laminar' in sys.modules and "
                    f"open({str(started)!r}, 'a').write(sys.prefix + '\\n'))"
                ),
            ),
        ],
        check=True,
        env=env,
    )
    assert "user-marker" in installed(venv / "bin" / "python")

    demo = subprocess.run(  # started elsewhere: a relative path is not read from the working directory
        [str(ROOT / "run"), "demo"],
        cwd=tmp_path,
        env={**env, "UV_PROJECT_ENVIRONMENT": pointed},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "385 is large" in demo.stdout, demo.stdout
    runs = started.read_text().splitlines() if started.exists() else []
    assert str(venv) in runs, f"the demo did not run on the environment uv synced: {runs}"

    names = installed(venv / "bin" / "python")
    assert "laminar-core" in names, "./run did not sync the environment it was pointed at"
    assert "user-marker" in names, "./run removed a package the user installed"
