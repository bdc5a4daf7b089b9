"""What reading the reuse index costs and trusts: an unchanged rerun makes a bounded number of
requests (not one per split), and an index entry is used only under the flow, layer and key it names.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from laminar import Flow, Layer, Parameters
from laminar.configurations import executors

from tests.helpers import CountingLocal


class Scaled(Flow): ...


@Scaled.register(inputs=["$LAMINAR_TEST_FACTOR"])
class Product(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.value = parameters.base * int(os.environ["LAMINAR_TEST_FACTOR"])


def _entry_path(root: Path, execution: str) -> Path:
    (path,) = [p for p in root.glob("flows/Scaled/reuse/Product/*.json") if execution in p.read_text()]
    return path


def test_an_entry_copied_under_another_key_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An entry is sealed, so editing one fails its checksum; but a whole entry, valid, copied under
    another key's name (by a bug, or anyone who can write the bucket) still reads back. It names the
    key it was written for: under another, it is ignored, or a run would take values computed with
    other code or inputs its records cannot show (here: an environment variable declared as input).
    """
    flow = Scaled(datastore=CountingLocal(tmp_path), executor=executors.Thread())
    monkeypatch.setenv("LAMINAR_TEST_FACTOR", "2")
    doubled = flow(base=5, reuse=True)
    monkeypatch.setenv("LAMINAR_TEST_FACTOR", "3")
    tripled = flow(base=5, reuse=True)
    assert (doubled.layer(Product).value, tripled.layer(Product).value) == (10, 15)
    shutil.copyfile(_entry_path(tmp_path, doubled.id), _entry_path(tmp_path, tripled.id))
    assert len(list(tmp_path.glob("flows/Scaled/reuse/Product/*.json"))) == 2

    again = flow(base=5, reuse=True)  # LAMINAR_TEST_FACTOR is still 3

    assert again.layer(Product).value == 15
    status = again.store.layer_status("Product")
    assert status is not None and status.reused is None
    assert status.why == "ran because environment variable changed: LAMINAR_TEST_FACTOR"
