"""Wrote tests/data/zlib-inband-store with the code at a3dddfa (zlib codec, in-band cloudpickle)."""

import sys

import numpy as np
from laminar import Flow, Layer, Parameters
from laminar.configurations import datastores, executors
from laminar.configurations.layers import ForEach, Parameter

root = sys.argv[1]


class OldPickled(Flow): ...


@OldPickled.register
class Values(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.array = np.arange(50_000, dtype=np.int64).reshape(500, 100)  # zlib, under artifacts/
        self.noise = np.random.default_rng(3).integers(0, 2**63, size=4096, dtype=np.int64)  # none
        self.mapping = {"word": parameters.word, "numbers": list(range(100)), "nested": {"a": (1, 2.5)}}
        self.tiny = {"k": 1}  # inline
        self.table = {"rows": [{"id": i, "name": f"row {i}"} for i in range(2000)]}  # dict, zlib
        self.large = np.repeat(np.arange(80, dtype=np.int64), 16384)  # 10 MiB: streamed, zlib
        self.shard(item=[1, 2, 3])


@OldPickled.register(foreach=ForEach(parameters=[Parameter(layer=Values, attribute="item")]))
class Doubled(Layer):
    def __call__(self, values: Values) -> None:
        self.doubled = values.item * 2


class OldSafe(Flow): ...


@OldSafe.register
class SafeValues(Layer):
    def __call__(self, parameters: Parameters) -> None:
        self.array = np.arange(1000, dtype=np.float32)  # laminar.npy
        self.mapping = {"word": parameters.word, "numbers": list(range(500))}  # laminar.json
        self.text = "laminar " * 300  # laminar.str


OldPickled(datastore=datastores.Local(root), executor=executors.Thread())(execution="format1", word="abc")
safe = datastores.Local(root).use_safe_protocols()
OldSafe(datastore=safe, executor=executors.Thread())(execution="format1", word="abc")
print("written")
