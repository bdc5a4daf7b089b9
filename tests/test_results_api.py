"""The seed's results API, from the process that ran the flow and from another one."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

SEED = textwrap.dedent(
    """
    from laminar import Flow, Layer

    class ResultFlow(Flow): ...

    @ResultFlow.register
    class A(Layer):
        def __call__(self) -> None:
            self.foo = "bar"

    if flow := ResultFlow():
        execution = flow()
        print("RAN", execution.id)
    """
)

READER = textwrap.dedent(
    """
    import sys
    from main import A, flow

    execution_id = sys.argv[1]
    print(flow.execution(execution_id).layer(A).foo)
    datastore = flow.configuration.datastore
    print(datastore.list_executions(flow=flow))
    execution = flow.execution(execution_id)
    print([layer.name for layer in datastore.list_layers(execution=execution)])
    print(datastore.list_artifacts(layer=flow.execution(execution_id).layer(A)))
    """
)


def run(directory: Path, *args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [sys.executable, *args],
        cwd=directory,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(directory), **(env or {})},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_seed_example_runs_as_a_script_and_reads_back_from_another_process(tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text(SEED)
    (tmp_path / "reader.py").write_text(READER)
    ran = run(tmp_path, "main.py").split()
    assert ran[0] == "RAN"
    execution_id = ran[1]
    assert (tmp_path / ".laminar").is_dir()  # the default datastore

    lines = run(tmp_path, "reader.py", execution_id).splitlines()
    assert lines[0] == "bar"
    assert lines[1] == f'[Execution(flow=ResultFlow(), id="{execution_id}", retry=False)]'
    assert lines[2] == "['Parameters', 'A']"
    assert lines[3] == "['foo']"
    # Importing the script to read results did not start another run.
    assert len(list((tmp_path / ".laminar/flows/ResultFlow/executions").iterdir())) == 1


def test_environment_protocol_runs_one_layer_and_the_guard_is_false(tmp_path: Path) -> None:
    """What an executor that starts the script in a container does: LAMINAR_* say which split."""
    script = textwrap.dedent(
        """
        import os
        from laminar import Flow, Layer

        class ResultFlow(Flow): ...

        @ResultFlow.register
        class A(Layer):
            def __call__(self) -> None:
                self.foo = "bar"

        @ResultFlow.register
        class B(Layer):
            def __call__(self, a: A) -> None:
                self.foo = a.foo + "!"
                self.attempt_seen = self.attempt

        if flow := ResultFlow():
            print("RAN", flow().id)
        elif os.environ.get("LAMINAR_LAYER_NAME"):
            print("GUARD FALSE")
        """
    )
    (tmp_path / "main.py").write_text(script)
    execution_id = run(tmp_path, "main.py").split()[1]
    # Re-run layer B of that execution as a fresh process, as a container executor would.
    environment = {
        "LAMINAR_EXECUTION_ID": execution_id,
        "LAMINAR_EXECUTION_RETRY": "0",
        "LAMINAR_FLOW_NAME": "ResultFlow",
        "LAMINAR_LAYER_NAME": "B",
        "LAMINAR_LAYER_INDEX": "",
        "LAMINAR_LAYER_SPLITS": "",
        "LAMINAR_LAYER_ATTEMPT": "1",
    }
    output = run(tmp_path, "main.py", env=environment)
    assert "GUARD FALSE" in output and "RAN" not in output
    (tmp_path / "read.py").write_text(
        "import sys\nfrom main import B, flow\nprint(flow.execution(sys.argv[1]).layer(B).foo)\n"
    )
    assert run(tmp_path, "read.py", execution_id).strip() == "bar!"
    (tmp_path / "attempt.py").write_text(
        "import sys\nfrom main import B, flow\nprint(flow.execution(sys.argv[1]).layer(B).attempt_seen)\n"
    )
    assert run(tmp_path, "attempt.py", execution_id).strip() == "1"
