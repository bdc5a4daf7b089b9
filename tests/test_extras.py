"""Issue 4, must show: each extra installs only the backend it names.

Wheels of every distribution are built from this checkout; ``laminar[gcs]`` (then ``[s3]``,
``[azure]``) is installed from them into a fresh virtual environment, which must not contain the
other backends' SDKs, and a flow on that backend's emulator runs in it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FORBIDDEN = {
    "s3": ("s3fs", "boto", "aiobotocore"),
    "gcs": ("google-cloud-storage", "google-api-core", "google-auth"),
    "azure": ("azure-storage-blob", "azure-core", "azure-identity"),
    "dask": ("dask", "distributed", "laminar-dask"),
}
BACKEND = {"s3": "laminar-s3", "gcs": "laminar-gcs", "azure": "laminar-azure"}

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


def uv() -> str:
    found = shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv")
    if not Path(found).exists():
        pytest.fail(
            "uv is needed to build and install the wheels: run ./run test (it installs uv into .tools/)"
        )
    return found


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheels")
    subprocess.run(
        [uv(), "build", "--all-packages", "--wheel", "--quiet", "--out-dir", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    return out


def installed(python: Path) -> set[str]:
    listing = subprocess.run(
        [
            python,
            "-c",
            "import importlib.metadata as m; print('\\n'.join(d.metadata['Name'] for d in m.distributions()))",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {name.strip().lower().replace("_", "-") for name in listing.splitlines() if name.strip()}


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param("gcs", marks=pytest.mark.gcs),
        pytest.param("s3", marks=pytest.mark.s3),
        pytest.param("azure", marks=pytest.mark.azure),
    ],
)
@pytest.mark.timeout(600)
def test_extra_installs_only_its_backend(
    extra: str, wheels: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    venv = tmp_path / "venv"
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    env.pop("VIRTUAL_ENV", None)
    subprocess.run([uv(), "venv", "--quiet", "--python", sys.executable, str(venv)], check=True, env=env)
    python = venv / "bin" / "python"
    subprocess.run(
        [uv(), "pip", "install", "--quiet", "--python", str(python), "--find-links", str(wheels),
         f"laminar[{extra}]==0.1.0"],
        check=True,
        env=env,
        capture_output=True,
    )  # fmt: skip
    names = installed(python)
    assert {"laminar", "laminar-core", BACKEND[extra]} <= names
    for other, packages in FORBIDDEN.items():
        if other == extra:
            continue
        present = sorted(name for name in names if any(name.startswith(p) for p in packages))
        assert not present, f"laminar[{extra}] pulled in {present}"
    assert not {"laminar-sqlite", *(b for e, b in BACKEND.items() if e != extra)} & names

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
