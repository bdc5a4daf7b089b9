"""One flow file, run against Local, S3, GCS and Azure by changing only LAMINAR_DATASTORE, gives
identical results and identical artifact hashes, readable from a second process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

FLOW = textwrap.dedent(
    """
    import sys

    import random

    from laminar import Flow, Layer, Parameters
    from laminar.configurations.layers import ForEach, Parameter


    class Cloud(Flow): ...


    @Cloud.register
    class Numbers(Layer):
        def __call__(self, parameters: Parameters) -> None:
            self.shard(values=list(range(1, parameters.count + 1)))
            self.label = parameters.label
            self.noise = random.Random(0).randbytes(8192)  # too large to keep inline: under artifacts/


    @Cloud.register(foreach=ForEach(parameters=[Parameter(layer=Numbers, attribute="values")]))
    class Square(Layer):
        def __call__(self, numbers: Numbers) -> None:
            self.value = numbers.values**2
            self.where = (self.index, self.splits)


    @Cloud.register
    class Total(Layer):
        def __call__(self, square: Square, numbers: Numbers) -> None:
            self.total = sum(square.value)
            self.squares = {numbers.label: list(square.value)}


    if flow := Cloud():
        flow(execution=sys.argv[1], count=5, label="same everywhere")
    """
)

READER = textwrap.dedent(
    """
    import json
    import os
    import sys

    sys.path.insert(0, os.getcwd())
    from flow import Cloud, Numbers, Square, Total
    from laminar._runtime.context import store_for  # internal on purpose: the stored artifact hashes

    flow = Cloud()
    datastore = flow.configuration.datastore
    execution = flow.execution(sys.argv[1])
    artifacts = sorted(
        f"{shard}/{name}"
        for shard in datastore.list_prefix("artifacts/")
        for name in datastore.list_prefix(f"artifacts/{shard}/")
    )
    store = store_for(execution)
    hashes = {
        layer: {
            index: {name: [a.hexdigest for a in archive.artifacts] for name, archive in record.archives.items()}
            for index, record in store.finished_splits(layer).items()
        }
        for layer in ("Parameters", "Numbers", "Square", "Total")
    }
    print(json.dumps({
        "datastore": datastore.url,
        "executions": [e.id for e in datastore.list_executions(flow=flow)],
        "layers": [layer.name for layer in datastore.list_layers(execution=execution)],
        "total": execution.layer(Total).total,
        "squares": execution.layer(Total).squares,
        "values": list(execution.layer(Numbers).values),
        "square": list(execution.layer(Square).value),
        "where": [list(w) for w in execution.layer(Square).where],
        "artifacts": artifacts,
        "hashes": hashes,
    }))
    """
)


def run(script: Path, datastore: str, execution: str) -> dict[str, object]:
    env = {**os.environ, "LAMINAR_DATASTORE": datastore}
    env.pop("LAMINAR_EXECUTOR", None)  # the default executor: worker processes re-run the file
    subprocess.run(
        [sys.executable, str(script), execution], cwd=script.parent, env=env, check=True, capture_output=True
    )
    reader = subprocess.run(
        [sys.executable, "-c", READER, execution],
        cwd=script.parent,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, object] = json.loads(reader.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.s3
@pytest.mark.gcs
@pytest.mark.azure
@pytest.mark.timeout(600)
def test_same_flow_file_on_every_backend(
    tmp_path: Path, s3_location: str, gcs_location: str, azure_location: str
) -> None:
    script = tmp_path / "flow.py"
    script.write_text(FLOW)
    locations = {
        "local": (tmp_path / "local-store").as_uri(),
        "s3": s3_location,
        "gcs": gcs_location,
        "azure": azure_location,
    }
    results = {}
    for name, url in locations.items():
        try:
            results[name] = run(script, url, "same-flow-everywhere")
        except subprocess.CalledProcessError as error:
            pytest.fail(f"the flow on {name} ({url}) failed:\n{error.stdout}\n{error.stderr}")

    for name, result in results.items():
        assert result.pop("datastore") == locations[name]
    local = results["local"]
    assert local["total"] == 1 + 4 + 9 + 16 + 25
    assert local["squares"] == {"same everywhere": [1, 4, 9, 16, 25]}
    assert local["where"] == [[i, 5] for i in range(5)]
    assert local["layers"] == ["Numbers", "Parameters", "Square", "Total"]
    assert local["executions"] == ["same-flow-everywhere"]
    assert len(local["artifacts"]) == 1, "the large value is stored under artifacts/, the small ones inline"
    hashes = local["hashes"]
    assert isinstance(hashes, dict) and len(hashes["Square"]) == 5 and hashes["Numbers"]["0"]["noise"]
    for name in ("s3", "gcs", "azure"):
        assert results[name] == local, f"{name} differs from the local datastore"
