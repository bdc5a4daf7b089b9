"""The built distributions and the README's own environment, made once per test session.

``./run build`` takes a while and the README's ``pip install "laminar[gcs]" --find-links dist/``
longer: tests/test_packaging.py and tests/test_readme.py share one of each (``built`` and
``readme_environment`` keep them in this module, which pytest imports once).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SHELL_BLOCK = re.compile(r"^```(?:bash|console)\n(.*?)^```", re.DOTALL | re.MULTILINE)

#: The README's install, as a user types it (after ``./run build``): tests/test_readme.py checks that
#: these are the README's own lines.
README_INSTALL = [
    "python3 -m venv ~/flows-env && . ~/flows-env/bin/activate",
    'pip install "laminar[gcs]" --find-links dist/',
]

_made: dict[str, Path] = {}


def readme_commands() -> list[str]:
    """Every command of the README's shell blocks, in order: a ``$ `` prompt and a trailing
    ``# comment`` taken off, comment lines left out."""
    found = []
    for block in SHELL_BLOCK.findall(README.read_text()):
        for line in block.splitlines():
            command = re.sub(r"\s+#.*$", "", line.removeprefix("$ ")).strip()
            if command and not command.startswith("#"):
                found.append(command)
    return found


def version() -> Version:
    """The version the umbrella's pyproject.toml gives (every distribution's, tests/test_packaging.py checks)."""
    return Version(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


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


def user_shell(home: Path) -> dict[str, str]:
    """A new user's shell whose home is ``home`` (``~/flows-env`` lands there), with this machine's
    pip cache and pyenv (whose ``python3`` shim looks under ``$HOME`` otherwise)."""
    real = Path.home()
    env = clean_environment(HOME=str(home), PIP_CACHE_DIR=str(real / ".cache" / "pip"))
    pyenv = os.environ.get("PYENV_ROOT") or str(real / ".pyenv")
    if Path(pyenv).is_dir():
        env["PYENV_ROOT"] = pyenv
    return env


def bash(
    script: str, cwd: Path, env: dict[str, str], timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """``script`` run as a user types it, stopping at the first command that fails."""
    return subprocess.run(
        ["bash", "-c", f"set -euo pipefail\n{script}"], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


def built(factory: pytest.TempPathFactory) -> Path:
    """``./run build DIR``: what the README tells a user to run, into ``<tmp>/checkout/dist``. Once."""
    if "dist" not in _made:
        out = factory.mktemp("checkout") / "dist"  # installed from its parent as `--find-links dist/`
        result = subprocess.run(
            [str(ROOT / "run"), "build", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, result.stdout + result.stderr
        _made["dist"] = out
    return _made["dist"]


def readme_environment(factory: pytest.TempPathFactory) -> Path:
    """The README's install run as it is written, in the built checkout, by a user whose home is a
    fresh folder: the python of ``~/flows-env``, with ``laminar[gcs]`` installed by real pip. Once."""
    if "readme" not in _made:
        checkout = built(factory).parent
        home = factory.mktemp("home")
        result = bash("\n".join(README_INSTALL), checkout, user_shell(home))
        assert result.returncode == 0, result.stdout + result.stderr
        _made["home"] = home
        _made["readme"] = home / "flows-env" / "bin" / "python"
    return _made["readme"]


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
