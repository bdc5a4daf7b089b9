"""What splits print at the same time comes out in whole lines, even piped (block-buffered).

Before, a line and its end went to the stream as two writes (``print`` writes the text, then
``"\\n"``), so lines that Thread-executor splits printed at once glued together:
``lr=0.005: val rmse 0.5096lr=0.05: val rmse 0.7236``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SPLITS, LINES = 16, 1000

SCRIPT = textwrap.dedent(
    """
    import os, sys, threading
    from laminar import Flow, Layer, Parameters
    from laminar.configurations import datastores, executors
    from laminar.configurations.layers import ForEach, Parameter

    sys.setswitchinterval(1e-6)  # switch threads as often as possible: any gap between writes shows


    class Chatty(Flow): ...


    @Chatty.register
    class Items(Layer):
        def __call__(self, parameters: Parameters) -> None:
            self.shard(item=list(range(parameters.count)))


    @Chatty.register(foreach=ForEach(parameters=[Parameter(layer=Items, attribute="item")]))
    class Talk(Layer):
        def __call__(self, items: Items, parameters: Parameters) -> None:
            for line in range(parameters.lines):
                if line % 3 == 0:  # one line in three is written in pieces: ends with its own newline
                    print(f"split {items.item}", end="")
                    print(f" line {line}", end="")
                    print(" end")
                elif line % 3 == 1:
                    print(f"split {items.item} line {line} end", file=sys.stderr)
                else:
                    print(f"split {items.item} line {line} end")
            print(f"split {items.item} tail", end="")  # a partial line, ended by the split's end
            self.done = True


    chosen = executors.Thread if sys.argv[2] == "thread" else executors.Process
    if flow := Chatty(datastore=datastores.Local(sys.argv[1]), executor=chosen(concurrency=8)):
        flow(count=int(sys.argv[3]), lines=int(sys.argv[4]))
        # a partial line of a thread that is not a split's, never flushed: written as the process exits
        thread = threading.Thread(target=print, args=("thread partial",), kwargs={"end": ""})
        thread.start()
        thread.join()
    """
)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("executor", ["thread", "process"])
def test_lines_printed_by_concurrent_splits_stay_whole_when_piped(tmp_path: Path, executor: str) -> None:
    script = tmp_path / "chatty.py"
    script.write_text(SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "store"), executor, str(SPLITS), str(LINES)],
        capture_output=True,  # both pipes: block-buffered, as `python flow.py | tee out` is
        text=True,
        timeout=240,
        env={**os.environ, "LAMINAR_PROGRESS": "0"},
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    err = [line for line in result.stderr.splitlines() if not line.startswith("laminar: ")]
    expected_out = {f"split {s} line {n} end" for s in range(SPLITS) for n in range(LINES) if n % 3 != 1}
    expected_out |= {f"split {s} tail" for s in range(SPLITS)} | {"thread partial"}
    expected_err = {f"split {s} line {n} end" for s in range(SPLITS) for n in range(LINES) if n % 3 == 1}
    glued = [line for line in out if line not in expected_out]
    assert not glued, f"{len(glued)} of {len(out)} lines on stdout are not whole, e.g. {glued[:3]}"
    glued = [line for line in err if line not in expected_err]
    assert not glued, f"{len(glued)} of {len(err)} lines on stderr are not whole, e.g. {glued[:3]}"
    assert sorted(out) == sorted(expected_out) and sorted(err) == sorted(expected_err)
