"""How a record is stored as JSON, derived once from its declaration: one codec for every record.

A record is a frozen dataclass deriving from ``Schema``, decorated with ``record``. Its fields, in
order, are the members it is stored with (a JSON object, or with ``Schema.stored_as_list`` a JSON
array), and their types say how each is checked when read back from a store that may be damaged or
hostile:

- ``str``; ``int``, a count (never negative, never a bool); ``float``, a time (an int reads as one);
  ``bool``; ``bytes`` (stored as base64); ``X | None``;
- ``tuple[X, ...]`` and ``tuple[X, Y]`` as arrays, ``Mapping[K, V]`` as an object (``int`` keys as
  their digits), another record as its own members.

Field metadata says the rest: ``absent`` (earlier records lack the member), ``sparse`` (written only
when it says something), ``one_of``, ``matching``, ``checked``, ``sorted_keys``, ``context`` (a field
not stored). A member of the wrong type, shape or value raises ``TypeError`` or ``ValueError`` naming
it, a missing one ``KeyError``: the reader turns either into a message naming the record.

A record is written with ``to_json`` and read with ``from_json``; the JSON text itself (and the
checksum over it) is ``json.dumps``', so records read and written here are byte for byte those
written before the codec existed (``records.compact`` has orjson make it where its text is the same).
"""

from __future__ import annotations

import binascii
import dataclasses
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, NamedTuple, TypeVar, Union

T = TypeVar("T", bound="Schema")
C = TypeVar("C")

#: What a member is read in: ``None``, or the tuple a reader was handed (``Schema.from_json``), one
#: key longer inside each mapping the member is in (see ``context``).
Context = tuple[Any, ...] | None
Read = Callable[[Any, Context], Any]
Write = Callable[[Any], Any]
#: A member absent from the JSON, or a field with no value for its absence (the member is required).

_ABSENT = "laminar.absent"
_SPARSE = "laminar.sparse"
_CHECK = "laminar.check"
_CHOICES = "laminar.choices"
_PATTERN = "laminar.pattern"
_SORTED = "laminar.sorted"
_CONTEXT = "laminar.context"
_MISSING = object()


def absent(value: Any) -> dict[str, Any]:
    """A member records written before it existed lack: absent, it reads as ``value``."""
    return {_ABSENT: value}


def sparse(value: Any) -> dict[str, Any]:
    """A member written only when it is not ``value``, and read as ``value`` when absent."""
    return {_ABSENT: value, _SPARSE: True}


def checked(check: Callable[[Any], Any], **more: Any) -> dict[str, Any]:
    """A member ``check`` reads (once its type is checked): returns what to keep, raises if it is wrong."""
    return {_CHECK: check, **more}


def one_of(names: tuple[str, ...], **more: Any) -> dict[str, Any]:
    """A string member that is one of ``names``, kept as the one shared string of that name (a
    million parsed records then hold no million copies of ``"none"``)."""
    return {_CHOICES: {name: name for name in names}, **more}


def matching(pattern: re.Pattern[str], kind: str, **more: Any) -> dict[str, Any]:
    """A string member that matches ``pattern`` whole, called ``kind`` in messages."""
    return {_PATTERN: (pattern.fullmatch, kind), **more}


def sorted_keys(**more: Any) -> dict[str, Any]:
    """A mapping written in the order of its keys, whatever order it was built in."""
    return {_SORTED: True, **more}


def context() -> dict[str, Any]:
    """A field that is not stored: it holds what the record was read in (``Context``), for messages."""
    return {_CONTEXT: True}


def record(cls: type[T]) -> type[T]:
    """Give the dataclass ``cls`` (a ``Schema``) its codec, built from its fields: decorate with it
    above ``@dataclass``."""
    write, read = _codec(cls)
    cls._write, cls._read = staticmethod(write), staticmethod(read)  # type: ignore[method-assign,assignment]
    return made_quickly(cls)


def made_quickly(cls: type[C]) -> type[C]:
    """Give the frozen dataclass ``cls`` the ``__init__`` ``dataclass`` writes for it (the same
    parameters, defaults, factories and ``__post_init__``), storing its members without calling
    ``object.__setattr__`` a member (what a frozen dataclass's does, a microsecond or so each): in
    its dict at once, or, with slots, through each slot's own setter. The engine makes several
    records a layer of a chain, and reads back a split's records a split. Decorate above
    ``@dataclass``; ``record`` does it for every record."""
    if not cls.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        raise TypeError(f"{cls.__name__}: only a frozen dataclass's members are set this way")
    cls.__init__ = _quick_init(cls)  # type: ignore[method-assign]
    return cls


def _quick_init(cls: type[Any]) -> Callable[..., None]:
    """The source of ``made_quickly``'s ``__init__``, compiled."""
    names: dict[str, Any] = {"_FACTORY": _FACTORY}
    positional: list[str] = []
    keywords: list[str] = []
    slots = "__slots__" in cls.__dict__
    lines = [] if slots else ["    d = self.__dict__"]
    for spec in dataclasses.fields(cls):
        if not spec.init:
            raise TypeError(f"{cls.__name__}: every field is a parameter of its __init__")
        name = spec.name
        if spec.default is not dataclasses.MISSING:
            names[f"_default_{name}"] = spec.default
            parameter, value = f"{name}=_default_{name}", name
        elif spec.default_factory is not dataclasses.MISSING:
            names[f"_factory_{name}"] = spec.default_factory
            parameter, value = f"{name}=_FACTORY", f"_factory_{name}() if {name} is _FACTORY else {name}"
        else:
            parameter, value = name, name
        if slots:
            slot = next(kind.__dict__[name] for kind in cls.__mro__ if name in kind.__dict__)
            names[f"_set_{name}"] = slot.__set__  # the slot's own setter
            lines.append(f"    _set_{name}(self, {value})")
        else:
            lines.append(f"    d[{name!r}] = {value}")
        (keywords if spec.kw_only else positional).append(parameter)
    if hasattr(cls, "__post_init__"):
        lines.append("    self.__post_init__()")
    signature = ", ".join(["self", *positional, *(["*", *keywords] if keywords else [])])
    namespace: dict[str, Any] = {}
    exec("\n".join([f"def __init__({signature}):", *lines]), names, namespace)
    init: Callable[..., None] = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    return init


#: A field's default made by its factory (as ``dataclass``'s own sentinel stands for it).
_FACTORY = object()


class Schema:
    """A record declared once: ``to_json``/``from_json`` derived from its fields (see the module)."""

    __slots__ = ()
    #: Stored as a JSON array of its members rather than an object; its last member may be
    #: ``sparse``, left out (the array one shorter) when it says nothing.
    stored_as_list: ClassVar[bool] = False
    #: The source of the class's reader and writer, compiled from its fields (see ``_Source``).
    _source: ClassVar[str]
    #: Members written first, the same for every record of the class (not read back as fields).
    stored_first: ClassVar[Mapping[str, Any]] = {}

    @staticmethod
    def _write(record: Any) -> Any:
        """This record's members as JSON values (``record`` compiles it for each class)."""
        raise NotImplementedError

    @staticmethod
    def _read(value: Any, context: Context) -> Any:
        """The record ``value`` holds (``record`` compiles it for each class)."""
        raise NotImplementedError

    def to_json(self) -> Any:
        """This record as JSON values (a dict, or a list for ``stored_as_list``)."""
        return self._write(self)

    @classmethod
    def from_json(cls: type[T], value: Any, context: Context = None) -> T:
        """The record ``value`` holds, each member checked; raises TypeError, ValueError or KeyError."""
        record: T = cls._read(value, context)
        return record


class NotFinite(float):
    """A time that is not finite (NaN, an infinity) as a record's writer hands it over: orjson, which
    would write it as ``null``, refuses it, and ``json`` writes it as it always has (``NaN``)."""

    __slots__ = ()


class _Member(NamedTuple):
    name: str
    hint: Any
    default: Any  # what it reads as when absent, or _MISSING
    sparse: bool
    sort: bool
    meta: Mapping[str, Any]


class _Source:
    """Python source for one record's reader and writer, and the names it refers to.

    Each class's reader and writer are written out as source once, from its fields, and compiled
    (as ``dataclasses`` writes ``__init__``): records are read and written for every split, and a
    member then costs what code written by hand for it would, where a function per member would
    cost a call each. The source is kept as the class's ``_source``, to read.
    """

    def __init__(self) -> None:
        self.names: dict[str, Any] = {"_MISSING": _MISSING}
        self.depth = 0

    def bind(self, value: Any) -> str:
        """A name the source can use for ``value``."""
        name = f"_{len(self.names)}"
        self.names[name] = value
        return name

    def variable(self) -> str:
        self.depth += 1
        return f"v{self.depth}"

    def read(self, hint: Any, v: str, what: str, context: str) -> str:
        """An expression for the value of type ``hint`` held (as JSON) by the expression ``v``."""
        origin, arguments = typing.get_origin(hint), typing.get_args(hint)
        if origin in (Union, types.UnionType):
            (kind,) = [argument for argument in arguments if argument is not type(None)]
            return f"(None if {v} is None else {self.read(kind, v, what, context)})"
        if isinstance(hint, type) and issubclass(hint, Schema):
            return f"{self.bind(hint._read)}({v}, {context})"
        if origin is tuple and len(arguments) == 2 and arguments[1] is Ellipsis:
            item = self.variable()
            each = self.read(arguments[0], item, what, context)
            wrong = self.bind(_not_a("a list", what))
            return f"(tuple([{each} for {item} in {v}]) if type({v}) is list else {wrong}({v}))"
        if origin is tuple:
            items = ", ".join(self.read(t, f"{v}[{i}]", what, context) for i, t in enumerate(arguments))
            wrong = self.bind(_not_shaped(f"a list of {len(arguments)} items", what))
            return f"(({items},) if type({v}) is list and len({v}) == {len(arguments)} else {wrong}({v}))"
        if origin in (Mapping, dict):
            return self._read_mapping(arguments, v, what, context)
        if hint is str:
            return f"({v} if type({v}) is str else {self.bind(_not_str)}({v}, {what!r}))"
        if hint is int:  # a count
            return f"({v} if type({v}) is int and {v} >= 0 else {self.bind(_not_count)}({v}, {what!r}))"
        if hint is float:  # a time: an int reads as one
            return f"({v} if type({v}) is float else {self.bind(_time)}({v}, {what!r}))"
        if hint is bool:
            return f"({v} if type({v}) is bool else {self.bind(_not_flag)}({v}, {what!r}))"
        if hint is bytes:
            return f"{self.bind(binascii.a2b_base64)}({self.read(str, v, what, context)})"
        raise TypeError(f"a stored member of type {hint!r} has no codec")

    def _read_mapping(self, arguments: tuple[Any, ...], v: str, what: str, context: str) -> str:
        key_type, value_type = arguments
        key, item = self.variable(), self.variable()
        if key_type is int:  # stored as its digits
            number = self.variable()
            inner = f"(None if {context} is None else (*{context}, {number}))"
            each = self.read(value_type, item, what, inner)
            pairs = f"({number} := int({key})): {each}"
        elif key_type is str:
            inner = f"(None if {context} is None else (*{context}, {key}))"
            each = self.read(value_type, item, what, inner)
            pairs = f"{self.read(str, key, f'{what} key', context)}: {each}"
        else:
            raise TypeError(f"a stored mapping's keys are str or int, not {key_type!r}")
        wrong = self.bind(_not_a("an object", what))
        return f"({{{pairs} for {key}, {item} in {v}.items()}} if type({v}) is dict else {wrong}({v}))"

    def write(self, hint: Any, v: str, sort: bool = False) -> str:
        """An expression for the JSON of the value of type ``hint`` in the expression ``v``."""
        origin, arguments = typing.get_origin(hint), typing.get_args(hint)
        if origin in (Union, types.UnionType):
            (kind,) = [argument for argument in arguments if argument is not type(None)]
            inner = self.write(kind, v, sort)
            return v if inner == v else f"(None if {v} is None else {inner})"
        if isinstance(hint, type) and issubclass(hint, Schema):
            return f"{self.bind(hint._write)}({v})"
        if origin is tuple:
            item = self.variable()
            kinds = arguments[:1] if arguments[-1] is Ellipsis else arguments
            written = {self.write(kind, item) for kind in kinds}
            if written == {item}:
                return f"list({v})"
            (one,) = written  # items of one type
            call = _called(one, item)
            if call is not None:  # no comprehension (a function called) per container
                return f"list(map({call}, {v}))"
            return f"[{one} for {item} in {v}]"
        if origin in (Mapping, dict):
            key, item = self.variable(), self.variable()
            each = self.write(arguments[1], item)
            name = f"str({key})" if arguments[0] is int else key
            if not sort and each == item and name == key:
                return f"dict({v})"
            call = _called(each, item)
            if call is not None or each == item:  # as the comprehension below, without its call
                keys = "map(str, {})" if arguments[0] is int else "{}"
                if sort:
                    ordered = self.variable()
                    keys = keys.format(f"({ordered} := sorted({v}))")
                    values = f"map({v}.__getitem__, {ordered})"
                else:
                    keys, values = keys.format(f"{v}.keys()"), f"{v}.values()"
                return f"dict(zip({keys}, {values if call is None else f'map({call}, {values})'}))"
            items = f"sorted({v}.items())" if sort else f"{v}.items()"
            return f"{{{name}: {each} for {key}, {item} in {items}}}"
        if hint is bytes:  # ``base64.b64encode``'s bytes, without its Python call around this one
            return f"{self.bind(binascii.b2a_base64)}({v}, newline=False).decode('ascii')"
        if hint is float:  # a time: one not finite (nan - nan is nan) handed over as NotFinite
            return f"({v} if {v} - {v} == 0 else {self.bind(NotFinite)}({v}))"
        return v


def _called(expression: str, item: str) -> str | None:
    """``f`` when ``expression`` is ``f(item)``, a call of one name on the item alone (a record's
    writer, ``list``): then written as ``map(f, ...)``, not a comprehension; else None."""
    name, _, rest = expression.partition("(")
    return name if rest == f"{item})" and name.isidentifier() else None


def _codec(cls: type[Schema]) -> tuple[Write, Read]:
    hints = typing.get_type_hints(cls)
    members = []
    carried = None  # the field given the context
    for spec in dataclasses.fields(cls):  # type: ignore[arg-type]
        meta = spec.metadata
        if meta.get(_CONTEXT):
            carried = spec.name
            continue
        if carried is not None:
            raise TypeError(f"{cls.__name__}: the field holding the context comes last")
        default = meta.get(_ABSENT, _MISSING)
        members.append(
            _Member(
                spec.name, hints[spec.name], default, bool(meta.get(_SPARSE)), bool(meta.get(_SORTED)), meta
            )
        )
    source = _Source()
    source.names["cls"] = cls
    if cls.stored_as_list:
        lines = _list_source(cls, members, source)
    else:
        lines = _object_source(cls, members, carried, source)
    namespace: dict[str, Any] = {}
    cls._source = "\n".join(lines)
    exec(cls._source, source.names, namespace)
    return namespace["write"], namespace["read"]


def _member_read(member: _Member, v: str, source: _Source) -> str:
    """An expression for ``member`` read from the JSON in ``v``, with the checks its metadata asks."""
    meta = member.meta
    if not any(key in meta for key in (_CHECK, _CHOICES, _PATTERN)):
        return source.read(member.hint, v, member.name, "context")
    kinds = [kind for kind in typing.get_args(member.hint) if kind is not type(None)]
    optional = len(kinds) == 1 and len(typing.get_args(member.hint)) == 2
    if _CHOICES in meta:
        names = source.bind(meta[_CHOICES])
        wrong = source.bind(_not_one_of(tuple(meta[_CHOICES]), member.name))
        expression = f"({names}[{v}] if type({v}) is str and {v} in {names} else {wrong}({v}))"
    elif _PATTERN in meta:
        match, kind = meta[_PATTERN]
        wrong = source.bind(_not_matching(kind, member.name))
        expression = f"({v} if type({v}) is str and {source.bind(match)}({v}) else {wrong}({v}))"
    else:
        expression = source.read(kinds[0] if optional else member.hint, v, member.name, "context")
        expression = f"{source.bind(meta[_CHECK])}({expression})"
    return f"(None if {v} is None else {expression})" if optional else expression  # None is not checked


def _object_source(
    cls: type[Schema], members: list[_Member], carried: str | None, source: _Source
) -> list[str]:
    wrong = source.bind(_not_a("an object", cls.__name__))
    lines = ["def read(value, context):", "    if type(value) is not dict:", f"        {wrong}(value)"]
    arguments = []
    for number, member in enumerate(members):
        v = f"m{number}"
        if member.default is _MISSING:
            lines.append(f"    {v} = value[{member.name!r}]")
            lines.append(f"    {v} = {_member_read(member, v, source)}")
        elif member.default is None:
            lines.append(f"    {v} = value.get({member.name!r})")
            lines.append(f"    {v} = {_member_read(member, v, source)}")
        else:
            lines.append(f"    {v} = value.get({member.name!r}, _MISSING)")
            default = source.bind(member.default)
            lines.append(f"    {v} = {default} if {v} is _MISSING else {_member_read(member, v, source)}")
        arguments.append(v)
    if carried is not None:
        arguments.append("context")
    lines.append(f"    return cls({', '.join(arguments)})")
    lines.append("def write(record):")
    plain = [f"{name!r}: {source.bind(value)}" for name, value in cls.stored_first.items()]
    plain += [
        f"{m.name!r}: {source.write(m.hint, f'record.{m.name}', m.sort)}" for m in members if not m.sparse
    ]
    lines.append(f"    data = {{{', '.join(plain)}}}")
    for member in members:
        if member.sparse:
            lines += _sparse_write(member, source, f"data[{member.name!r}] = {{}}")
    lines.append("    return data")
    return lines


def _list_source(cls: type[Schema], members: list[_Member], source: _Source) -> list[str]:
    *required, last = members
    if any(member.default is not _MISSING for member in required):
        raise TypeError(f"{cls.__name__}: a record stored as a list may leave out only its last member")
    optional = last.sparse  # left out when it is what its absence reads as
    needed = len(members) - optional
    counts = f"{needed} or {len(members)}" if optional else f"{needed}"
    wrong = source.bind(_not_shaped(f"a list of {counts} items", cls.__name__))
    lines = [
        "def read(value, context):",
        f"    if type(value) is not list or not {needed} <= len(value) <= {len(members)}:",
        f"        {wrong}(value)",
    ]
    for length in range(len(members), needed - 1, -1):
        names = [f"m{number}" for number in range(length)]
        arguments = [_member_read(member, v, source) for member, v in zip(members, names, strict=False)]
        arguments += [source.bind(member.default) for member in members[length:]]
        lines.append(f"    if len(value) == {length}:")
        lines.append(f"        {', '.join(names)}, = value")
        lines.append(f"        return cls({', '.join(arguments)})")
    kept = required if optional else members
    items = [source.write(member.hint, f"record.{member.name}", member.sort) for member in kept]
    lines += ["def write(record):", f"    data = [{', '.join(items)}]"]
    if optional:
        lines += _sparse_write(last, source, "data.append({})")
    lines.append("    return data")
    return lines


def _sparse_write(member: _Member, source: _Source, store: str) -> list[str]:
    """Statements writing ``member`` (with ``store``, given its JSON) when it is not its default."""
    hint = member.hint
    if member.default is None:  # written only when it is not None
        (hint,) = [kind for kind in typing.get_args(hint) if kind is not type(None)]
        differs = "is not None"
    else:
        differs = f"!= {source.bind(member.default)}"
    return [
        f"    v = record.{member.name}",
        f"    if v {differs}:",
        f"        {store.format(source.write(hint, 'v', member.sort))}",
    ]


def _not_a(kind: str, what: str) -> Callable[[Any], Any]:
    """What raises for a member ``what`` that is not ``kind`` (``"a list"``, ``"an object"``)."""

    def wrong(value: Any) -> Any:
        raise TypeError(f"{what} is {type(value).__name__}, not {kind}")

    return wrong


def _not_shaped(kind: str, what: str) -> Callable[[Any], Any]:
    """What raises for a member ``what`` that is not ``kind`` (``"a list of 3 items"``)."""

    def wrong(value: Any) -> Any:
        raise ValueError(f"{what} {value!r} is not {kind}")

    return wrong


def _not_one_of(names: tuple[str, ...], what: str) -> Callable[[Any], Any]:
    def wrong(value: Any) -> Any:
        _not_str(value, what) if type(value) is not str else None
        raise ValueError(f"{what} is {value!r}, not one of {', '.join(names)}")

    return wrong


def _not_matching(kind: str, what: str) -> Callable[[Any], Any]:
    def wrong(value: Any) -> Any:
        _not_str(value, what) if type(value) is not str else None
        raise ValueError(f"{what} {value!r} is not {kind}")

    return wrong


def _not_str(value: Any, what: str) -> Any:
    raise TypeError(f"{what} is {type(value).__name__}, not str")


def _not_count(value: Any, what: str) -> Any:
    raise TypeError(f"{what} is {value!r}, not a count")


def _not_flag(value: Any, what: str) -> Any:
    raise TypeError(f"{what} is {value!r}, not true or false")


def _time(value: Any, what: str) -> float:
    if type(value) is not int:
        raise TypeError(f"{what} is {value!r}, not a time")
    return float(value)
