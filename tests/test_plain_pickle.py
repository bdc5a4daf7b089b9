"""A value of built-in types only is pickled without cloudpickle, to the bytes cloudpickle gives.

``protocols.plain_pickle`` pickles dicts, lists, strings and numbers with the standard library's
pickler, giving up at the first object that pickler would ask ``reducer_override`` about. The
stored bytes, and so every content address, must be exactly those of the cloudpickle path
(``Pickle.dump_framed``): reuse keys and deduplication across versions depend on it.
"""

from __future__ import annotations

import datetime
import io
import pickle
import random
import threading
from collections import OrderedDict
from typing import Any

import numpy as np
import pytest
from laminar._serialization import protocols
from laminar._serialization.protocols import PLAIN_LIMIT, Pickle, plain_pickle
from laminar._storage import staging
from laminar._transport.memory import Memory


class Framed(Pickle):
    """The default protocol, always through cloudpickle's pickler: today's bytes, by definition."""

    def dump(self, value: Any, file: Any) -> None:
        self.dump_framed(value, file)


def framed(value: Any) -> bytes:
    file = io.BytesIO()
    Pickle().dump_framed(value, file)
    return file.getvalue()


def random_plain(rng: random.Random, depth: int = 0) -> Any:
    """A value of built-in types: nested containers of numbers, strings and bytes, some shared."""
    atoms = [
        None,
        True,
        False,
        rng.randrange(-300, 300),
        rng.getrandbits(rng.randrange(1, 300)) - (1 << 100),
        rng.random() * 10 ** rng.randrange(-300, 300),
        float("nan"),
        -0.0,
        "".join(chr(rng.randrange(0x3000)) for _ in range(rng.randrange(40))),
        "lone \ud800 surrogate",
        bytes(rng.randrange(256) for _ in range(rng.randrange(300))),
        bytearray(b"ab" * rng.randrange(5)),
    ]
    if depth > 3 or rng.random() < 0.3:
        return rng.choice(atoms)
    count = rng.randrange(12 if depth < 2 else 4)
    kind = rng.randrange(5)
    if kind == 0:
        return {str(rng.randrange(10**6)): random_plain(rng, depth + 1) for _ in range(count)}
    if kind == 1:
        return [random_plain(rng, depth + 1) for _ in range(count)]
    if kind == 2:
        return tuple(random_plain(rng, depth + 1) for _ in range(count))
    if kind == 3:
        return {rng.randrange(10**6) for _ in range(count)}
    return frozenset(str(rng.random()) for _ in range(count))


def plain_values() -> list[Any]:
    rng = random.Random(29)
    shared = ["shared", 1.5]
    cycle: list[Any] = [1]
    cycle.append(cycle)
    found: list[Any] = [random_plain(rng) for _ in range(400)]
    found += [
        {f"k{i}": i for i in range(10)} | {f"step{n}": n for n in range(50)},  # benchmarks/chain.py's
        {},
        [],
        (),
        "",
        b"",
        [shared, shared, {"again": shared}],  # memoized references
        cycle,
        {str(i): i for i in range(2500)},  # past the pickler's batches of 1000
        list(range(3000)),
        "x" * (PLAIN_LIMIT - 20),  # a pickle just under the limit
        [b"y" * 20_000, b"z" * 20_000],  # over a frame sample, under the limit
    ]
    return found


def test_a_plain_value_pickles_to_the_bytes_cloudpickle_gives() -> None:
    for value in plain_values():
        made = plain_pickle(value)
        assert made is not None, repr(value)[:80]
        assert made == framed(value), repr(value)[:80]
        assert Pickle().dumps(value) == made
        file = io.BytesIO()
        Pickle().dump(value, file)
        assert file.getvalue() == made


def test_anything_else_is_left_to_cloudpickle() -> None:
    class Own:
        pass

    big = np.arange(20_000, dtype=np.float64)
    others = [
        {"when": datetime.date(2026, 12, 7)},
        [len],
        [lambda: 1],
        Own(),
        OrderedDict(a=1),  # a subclass of dict: not written by pickle itself
        {"inner": type("Sub", (dict,), {})()},
        [1j],
        [pickle.PickleBuffer(big)],  # out of band through cloudpickle's path (``_Framer``)
        {"array": big},
        "x" * (PLAIN_LIMIT + 1),  # larger than one frame
        list(range(40_000)),
        [1, 2, Own()],  # plain at first
    ]
    for value in others:
        assert plain_pickle(value) is None, repr(value)[:80]
        assert Pickle().dumps(value) == framed(value), repr(value)[:80]
    assert framed([pickle.PickleBuffer(big)]).startswith(protocols.FRAMED)


def test_a_value_given_up_on_leaves_nothing_behind_for_the_next() -> None:
    """The thread's pickler is kept between values: what it memoized of one must not shape the next."""
    word = "a word long enough to be memoized"
    assert plain_pickle([word, object()]) is None  # gives up after memoizing ``word``
    assert plain_pickle([word, word]) == framed([word, word])
    assert plain_pickle([word]) == framed([word])
    assert plain_pickle([word]) == framed([word])


def test_threads_pickle_at_once_each_with_its_own_pickler() -> None:
    values = plain_values()[:100]
    expected = [framed(value) for value in values]
    wrong: list[int] = []

    def work() -> None:
        for _ in range(20):
            for position, value in enumerate(values):
                if plain_pickle(value) != expected[position]:
                    wrong.append(position)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []


@pytest.mark.parametrize(
    "value",
    [
        {f"k{i}": i for i in range(60)},
        "words " * 2000,  # compressible, past a frame sample: streamed through the writer
        [random.Random(1).randbytes(30_000)],  # incompressible, past a frame sample
        list(range(30_000)),  # plain, but past the limit
        {"array": np.arange(100)},
    ],
    ids=["small dict", "long text", "noise", "past the limit", "not plain"],
)
def test_staging_a_value_stores_what_cloudpickle_would(value: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    datastore = Memory()
    expected = staging.stage(value, datastore=datastore, protocol=Framed())
    made: list[object] = []
    original = protocols._Pickler.__init__

    def counted(self: Any, *args: Any, **kwargs: Any) -> None:
        made.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(protocols._Pickler, "__init__", counted)
    staged = staging.stage(value, datastore=datastore, protocol=Pickle())
    assert staged.artifact == expected.artifact
    assert (staged.artifact.inline, staged.artifact.stored) == (
        expected.artifact.inline,
        expected.artifact.stored,
    )
    assert staged.data == expected.data
    # cloudpickle's pickler is set up once, and only for what plain_pickle gave up on
    assert len(made) == (0 if plain_pickle(value) is not None else 1)
