"""A frozen record is made by the ``__init__`` ``schema`` writes for it (``schema.made_quickly``: its
members stored in its dict at once, or through each slot's setter, not by ``object.__setattr__`` a
member), as a split's outcome is: what it makes is what ``dataclass``'s own ``__init__`` makes, from
the same arguments, defaults and factories, checked by ``__post_init__``, frozen."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from laminar._runtime.task import SplitOutcome
from laminar._storage import records, reuse_index
from laminar._storage.records import Archive, Artifact, AttemptRecord, Ran, Record, SplitRecord
from laminar._storage.schema import Schema

QUICK = [
    cls
    for module in (records, reuse_index)
    for cls in vars(module).values()
    if isinstance(cls, type)
    and dataclasses.is_dataclass(cls)
    and cls.__module__ == module.__name__
    and issubclass(cls, Schema)
    and cls.__dataclass_params__.frozen
] + [SplitOutcome]


def _dataclass_made(cls: type[Any]) -> type[Any]:
    """A subclass of ``cls`` with the ``__init__`` ``dataclass`` itself writes for its fields."""
    return dataclasses.dataclass(frozen=True)(type(cls.__name__, (cls,), {}))


def test_the_records_made_quickly_are_every_frozen_record() -> None:
    assert {Record, Ran, AttemptRecord, Artifact, Archive, SplitRecord} <= set(QUICK)  # (slots or not)
    for cls in QUICK:
        assert cls.__init__.__qualname__ == f"{cls.__qualname__}.__init__"
        assert cls.__init__.__code__.co_filename == "<string>"  # the one written for it


@pytest.mark.parametrize("cls", QUICK, ids=lambda cls: cls.__name__)
def test_its_defaults_and_factories_are_the_dataclass_s(cls: type[Any]) -> None:
    required = [field for field in dataclasses.fields(cls) if _required(field)]
    arguments = {field.name: _value(field) for field in required}
    made, reference = _made(cls, arguments), _made(_dataclass_made(cls), arguments)
    assert _members(made) == _members(reference)
    again = _made(cls, arguments)  # a factory's default is made for each record, not shared
    for field in dataclasses.fields(cls):
        if field.default_factory is not dataclasses.MISSING:
            assert getattr(again, field.name) is not getattr(made, field.name)
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.__setattr__(dataclasses.fields(cls)[0].name, None)


def test_a_record_given_every_member_positionally_or_by_name_is_the_dataclass_s() -> None:
    split = SplitRecord({"v": Archive((Artifact("ab" * 32),))})
    ran = Ran(1.0, 2.0, (AttemptRecord(0, 0, 1.5, 1.75),), next_attempt=1)
    members: tuple[Any, ...] = ("F", "L", 1, {"0-0.json": ((0, 0),)}, ("v",), {}, {0: split})
    members += ("cd" * 32, None, None, {"v": "ef" * 32}, ran)
    reference = _dataclass_made(Record)
    assert _members(Record(*members)) == _members(reference(*members))
    named = dict(zip([field.name for field in dataclasses.fields(Record)], members, strict=True))
    assert _members(Record(**named)) == _members(reference(**named)) == _members(Record(*members))
    assert Record(*members).dumps() == reference(*members).dumps()
    artifact = ("ab" * 32, "zstd", "pickle", 3, "blake3", "cd" * 32, b"xyz")  # slots: each set
    assert _members(Artifact(*artifact)) == _members(_dataclass_made(Artifact)(*artifact))


def test_its_members_are_checked_as_the_dataclass_s_are() -> None:
    split = SplitRecord({})
    with pytest.raises(ValueError, match="held splits"):
        Record("F", "L", 1, held={5: split})  # __post_init__ runs
    with pytest.raises(TypeError):
        Record("F", "L")  # a member without a default is required  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Record("F", "L", 1, nonsense=1)  # type: ignore[call-arg]


def _required(field: dataclasses.Field[Any]) -> bool:
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


def _value(field: dataclasses.Field[Any]) -> Any:
    """A value a required member of that name may hold (no record checks more than its presence
    when it is made, but ``__post_init__``'s, which these pass)."""
    return {
        "index": 0,
        "attempt": 0,
        "splits": 1,
        "started": 1.0,
        "ended": 2.0,
        "at": 1.0,
        "hexdigest": "ab" * 32,
    }.get(field.name, "0ESEX0eabMmcE8wtr0yyvsC5jJT" if field.name == "execution" else "x")


def _made(cls: type[Any], arguments: dict[str, Any]) -> Any:
    return cls(**arguments)


def _members(record: Any) -> dict[str, Any]:
    """Its members, with slots or without."""
    return {field.name: getattr(record, field.name) for field in dataclasses.fields(record)}
