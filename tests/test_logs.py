"""Logs: what each split attempt prints and logs is kept in the datastore, still shown live, capped.

``execution.layer(A).state.logs(index=..., attempt=...)`` reads it back, on the Thread, process and
Dask executors alike; a split or attempt that does not exist is named with the valid range.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any, ClassVar

import pytest
from laminar import Flow, Layer
from laminar.configurations import datastores, executors
from laminar.configurations.layers import ForEach, Parameter, Retry
from laminar.errors import ExecutionNotFound, SplitNotFound


def talking_flow() -> type[Flow]:
    class Talking(Flow): ...

    @Talking.register
    class Items(Layer):
        def __call__(self) -> None:
            self.shard(item=[0, 1, 2])

    @Talking.register(
        foreach=ForEach(parameters=[Parameter(layer=Items, attribute="item")]),
        retry=Retry(attempts=2, delay=0),
    )
    class Talk(Layer):
        def __call__(self, items: Items) -> None:
            import logging
            import sys

            print(f"out {items.item} attempt {self.attempt}")
            print(f"err {items.item}", file=sys.stderr)
            logging.getLogger("user.layer").warning("logged %s", items.item)
            if items.item == 1 and self.attempt == 0:
                raise RuntimeError("the first try of item 1 fails")
            self.value = items.item

    @Talking.register
    class Quiet(Layer):
        def __call__(self, talk: Talk) -> None:
            self.total = sum(talk.value)

    return Talking


def expected(item: int, attempt: int) -> str:
    return f"out {item} attempt {attempt}\nerr {item}\nWARNING user.layer: logged {item}\n"


def check_logs(flow: Flow) -> None:
    execution = flow(execution="talked")
    talk = execution.layer("Talk").state
    for item in (0, 2):
        assert talk.logs(index=item) == expected(item, 0)
    assert talk.logs(index=1) == expected(1, 1)  # the last attempt by default
    assert talk.logs(index=1, attempt=0) == expected(1, 0)
    assert talk.logs(index=1, attempt=1) == expected(1, 1)
    assert execution.layer("Quiet").state.logs() == ""  # a split that printed nothing


def test_logs_on_the_thread_executor(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    check_logs(talking_flow()(datastore=datastores.Local(tmp_path), executor=executors.Thread(concurrency=3)))
    shown = capfd.readouterr()
    assert "out 0 attempt 0" in shown.out and "err 2" in shown.err  # still shown live


def test_an_attempt_that_prints_nothing_makes_no_log_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """Most splits print nothing: a writer (and its lock) for each would cost them more than their work."""
    from laminar._plugins import log_capture

    made: list[tuple[Any, ...]] = []

    class Counting(log_capture.LogWriter):
        def __init__(self, *arguments: Any) -> None:
            made.append(arguments[1:6])  # flow, execution, layer, index, attempt
            super().__init__(*arguments)

    monkeypatch.setattr(log_capture, "LogWriter", Counting)
    check_logs(talking_flow()(datastore=datastores.Local(tmp_path), executor=executors.Thread(concurrency=3)))
    # Talk's four attempts print; Items and Quiet print nothing
    assert sorted(where[2:] for where in made) == [
        ("Talk", 0, 0),
        ("Talk", 1, 0),
        ("Talk", 1, 1),
        ("Talk", 2, 0),
    ]


def test_logs_on_the_process_executor(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    check_logs(
        talking_flow()(datastore=datastores.Local(tmp_path), executor=executors.Process(concurrency=2))
    )
    shown = capfd.readouterr()
    assert "out 1 attempt 1" in shown.out and "err 0" in shown.err  # the workers' output is shown


def test_logs_on_the_dask_executor(tmp_path: Path, address: str) -> None:
    from laminar_dask import Dask

    check_logs(talking_flow()(datastore=datastores.Local(tmp_path), executor=Dask(address)))


def test_logs_keep_records_a_configured_handler_formats_once(tmp_path: Path) -> None:
    """With logging configured to a stream, the record is kept as that handler wrote it, once."""

    class Configured(Flow): ...

    @Configured.register
    class Log(Layer):
        def __call__(self) -> None:
            logging.getLogger("configured").info("an info record")

    root = logging.getLogger()
    handler = logging.StreamHandler()  # writes to sys.stderr as it is now: the capture's tee, or not
    handler.setFormatter(logging.Formatter("H %(levelname)s %(message)s"))
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        execution = Configured(datastore=datastores.Local(tmp_path), executor=executors.Thread())()
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    logs = execution.layer("Log").state.logs()
    assert logs.count("an info record") == 1, logs


def test_a_layer_that_prints_without_end_is_capped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LAMINAR_LOG_CAP", "100K")

    class Loud(Flow): ...

    @Loud.register
    class Shout(Layer):
        def __call__(self) -> None:
            line = "x" * 99 + "\n"
            for _ in range(20_000):  # 2 MB, twenty times the cap
                print(line, end="")

    execution = Loud(datastore=datastores.Local(tmp_path), executor=executors.Thread())()
    capfd.readouterr()
    logs = execution.layer("Shout").state.logs()
    kept, _, note = logs.partition("\n[laminar: ")
    assert len(kept.encode()) <= 100 * 1024
    assert kept.startswith("x" * 99 + "\n") and len(kept) > 90 * 1024
    assert note.startswith(f"{2_000_000 - 100 * 1024} more bytes were not kept: the cap is 102400 bytes")
    chunks = sorted((tmp_path / "flows" / "Loud").rglob("*.log"))
    assert sum(path.stat().st_size for path in chunks) < 101 * 1024  # what is stored is capped too


def test_the_capture_holds_a_chunk_in_memory_not_the_whole_output(tmp_path: Path) -> None:
    """A split's output is written in chunks while it runs: memory holds at most one chunk."""
    from laminar._storage import logs as stored

    class Long(Flow): ...

    @Long.register
    class Print(Layer):
        def __call__(self) -> None:
            chunks = tmp_path / "flows" / "Long"
            for i in range(3 * stored.CHUNK // 1000 + 10):
                print("y" * 999)
                if i == stored.CHUNK // 1000 + 5:  # past one chunk: the first is already stored
                    self.stored_while_running = len(list(chunks.rglob("*.log")))

    execution = Long(datastore=datastores.Local(tmp_path), executor=executors.Thread())()
    assert execution.layer("Print").stored_while_running >= 1
    assert len(list((tmp_path / "flows" / "Long").rglob("*.log"))) >= 3
    assert execution.layer("Print").state.logs() == ("y" * 999 + "\n") * (3 * stored.CHUNK // 1000 + 10)


# ---- bad input ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def talked(tmp_path_factory: pytest.TempPathFactory) -> Any:
    path = tmp_path_factory.mktemp("talked")
    flow = talking_flow()(datastore=datastores.Local(path), executor=executors.Thread())
    flow(execution="talked")
    return flow


def test_logs_of_a_split_that_does_not_exist_name_the_range(
    talked: Flow, capfd: pytest.CaptureFixture[str]
) -> None:
    talk = talked.execution("talked").layer("Talk").state
    with pytest.raises(
        SplitNotFound, match="layer Talk of execution talked has no split 3: its splits are 0 to 2"
    ):
        talk.logs(index=3)
    with pytest.raises(
        SplitNotFound,
        match=r"split 0 of layer Talk of execution talked has no attempt 1: its attempts are 0$",
    ):
        talk.logs(index=0, attempt=1)
    with pytest.raises(
        SplitNotFound, match=r"split 1 of layer Talk .* has no attempt 2: its attempts are 0, 1"
    ):
        talk.logs(index=1, attempt=2)
    with pytest.raises(
        SplitNotFound, match="layer Quiet of execution talked has no ForEach, so it has one split"
    ):
        talked.execution("talked").layer("Quiet").state.logs(index=1)


def test_logs_of_an_execution_that_does_not_exist_say_so(talked: Flow) -> None:
    with pytest.raises(ExecutionNotFound, match="execution typo of flow Talking does not exist"):
        talked.execution("typo").layer("Talk").state.logs(index=0)


def test_a_layer_that_did_not_run_has_no_logs(tmp_path: Path) -> None:
    class Stops(Flow): ...

    @Stops.register
    class Fails(Layer):
        def __call__(self) -> None:
            raise ValueError("no")

    @Stops.register
    class After(Layer):
        def __call__(self, fails: Fails) -> None:
            print("never")

    flow = Stops(datastore=datastores.Local(tmp_path), executor=executors.Thread())
    with pytest.raises(ValueError):
        flow(execution="stopped")
    with pytest.raises(SplitNotFound, match="layer After of execution stopped has not run \\(not started\\)"):
        flow.execution("stopped").layer("After").state.logs()


def test_logs_are_plain_text_other_tools_read(talked: Flow) -> None:
    root = Path(talked.configuration.datastore.url.removeprefix("file://"))
    chunk = root / "flows/Talking/executions/talked/layers/Talk/logs/2/0/000000.log"
    result = subprocess.run(["cat", str(chunk)], capture_output=True, text=True, check=True)
    assert result.stdout == expected(2, 0)


def test_output_outside_a_split_is_not_captured(tmp_path: Path) -> None:
    """The scheduler's own output (and the user's script around the run) goes to no split's logs."""
    script = tmp_path / "outside.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import threading, time
            from laminar import Flow, Layer
            from laminar.configurations import datastores, executors

            class Outside(Flow): ...

            @Outside.register
            class Slow(Layer):
                def __call__(self) -> None:
                    import logging
                    print("inside")
                    logging.getLogger("mine").warning("a warning")
                    time.sleep(0.5)

            def chatter():
                for _ in range(20):
                    print("outside")
                    time.sleep(0.02)

            if __name__ == "__main__":
                threading.Thread(target=chatter).start()
                e = Outside(datastore=datastores.Local({str(tmp_path)!r}), executor=executors.Thread())()
                print("LOGS", repr(e.layer("Slow").state.logs()))
            """
        )
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "LOGS 'inside\\nWARNING mine: a warning\\n'" in result.stdout
    assert "a warning" in result.stderr  # logging not configured: Python's last resort still shows it


def test_a_run_without_the_log_capture_keeps_no_logs(tmp_path: Path) -> None:
    from laminar.plugins import disabled

    with disabled("laminar.logs"):
        execution = talking_flow()(datastore=datastores.Local(tmp_path), executor=executors.Thread())()
    assert execution.layer("Talk").state.logs(index=0) == ""
    assert not list(tmp_path.rglob("*.log"))
    again = talking_flow()(datastore=datastores.Local(tmp_path / "again"), executor=executors.Thread())()
    assert again.layer("Talk").state.logs(index=0) == expected(0, 0)  # registered again afterwards


def test_disabling_a_plugin_that_is_not_registered_names_the_registered_ones() -> None:
    from laminar.errors import PluginNotFound
    from laminar.plugins import disabled

    with (
        pytest.raises(PluginNotFound, match=r"no plugin named laminar\.nope is registered; .*laminar\.logs"),
        disabled("laminar.nope"),
    ):
        pass


class _WarningLocal(datastores.Local):
    """A Local whose writes of log chunks warn, as a retried request does on an object store: the
    warning is logged from inside the log writer's own store, on the split's thread or the flushing
    thread, while the split goes on logging."""

    warned_from: ClassVar[set[str]] = set()

    def write_bytes(self, key: str, data: bytes) -> None:
        if "/logs/" in key:
            self.warned_from.add(threading.current_thread().name)
            logging.getLogger("laminar.storage").warning("retrying a write of %s", key.rsplit("/", 1)[-1])
        super().write_bytes(key, data)


@pytest.mark.timeout(120)
def test_a_store_that_logs_while_a_log_chunk_is_written_does_not_hang_the_split(tmp_path: Path) -> None:
    class Chatty(Flow): ...

    @Chatty.register
    class Talk(Layer):
        def __call__(self) -> None:
            import logging
            import time

            # Until the flushing thread has stored (and warned) while this split logs: bounded
            ends = time.monotonic() + 60
            line = 0
            while line < 3000 or (
                "laminar-logs" not in _WarningLocal.warned_from and time.monotonic() < ends
            ):
                logging.getLogger("user").warning("line %d %s", line, "x" * 80)
                line += 1
            self.lines = line

    execution = Chatty(datastore=_WarningLocal(tmp_path / "store"), executor=executors.Thread())()
    logs = execution.layer(Talk).state.logs()
    assert "line 0 " in logs and f"line {execution.layer(Talk).lines - 1} " in logs
    assert "laminar-logs" in _WarningLocal.warned_from  # the flushing thread's store warned
