"""The fields a job reads, straight from JSON records into columns: one msgspec Struct typed from
the field paths (event time, key, features; dotted paths as nested Structs), so a record's other
fields are skipped, not built into dicts.

Only what the generic parse (kldrift.events.EventDecoder.decode: msgspec, then json.loads) would
read the same way is read here; every other record is left to it (`None` in `structs`): a record
that is not `bytes`, that is too long or bracket-heavy (the generic parse checks its integers'
digits and its nesting), that is not UTF-8 (a skipped field is not checked for it), or that the
typed decode refuses (not an object, NaN, a lone surrogate, bad JSON, a nested path that is not
an object...). Values are those of the generic parse: each field is typed `Any`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import Any

import msgspec

_REFUSED = (msgspec.DecodeError, msgspec.ValidationError)


def _tree(paths: Sequence[str]) -> dict[str, Any]:
    """Dotted paths as a tree of names: a leaf is None; a name that is both a leaf and a prefix
    (features `a` and `a.b`) is a leaf, its sub-paths read from its value as the generic
    getter does."""
    tree: dict[str, Any] = {}
    for path in paths:
        node = tree
        parts = path.split(".")
        for i, part in enumerate(parts):
            if i == len(parts) - 1:
                node[part] = None
                break
            child = node.get(part, {})
            if child is None:  # already a leaf: read the rest from its value
                break
            node = node.setdefault(part, child)
    return tree


def _struct(tree: dict[str, Any], name: str) -> type:
    fields: list[tuple[str, Any, Any]] = []
    rename: dict[str, str] = {}
    for i, (part, child) in enumerate(tree.items()):
        attr = f"f{i}"
        rename[attr] = part
        kind = Any if child is None else _struct(child, f"{name}_{i}") | None
        fields.append((attr, kind, None))
    return msgspec.defstruct(name, fields, rename=rename, gc=False)


def _getter(tree: dict[str, Any], path: str) -> Callable[[Any], Any]:
    """What a path reads from a decoded Struct (absent or null on the way: None)."""
    attrs: list[str] = []
    node: dict[str, Any] | None = tree
    parts = path.split(".")
    rest: list[str] = []
    for i, part in enumerate(parts):
        if node is None:  # a leaf's value: the generic getter walks on into it
            rest = parts[i:]
            break
        attrs.append(f"f{list(node).index(part)}")
        node = node[part]
    if len(attrs) == 1 and not rest:
        return attrgetter(attrs[0])

    def get(struct: Any) -> Any:
        value = struct
        for attr in attrs:
            if value is None:
                return None
            value = getattr(value, attr)
        for part in rest:
            if not isinstance(value, dict):
                return None
            value = value.get(part)
        return value

    return get


class ColumnReader:
    """Reads the fields `paths` (dotted for nested objects) of JSON object records."""

    def __init__(self, paths: Sequence[str], max_nesting: int) -> None:
        self.paths = tuple(dict.fromkeys(paths))
        self._max_nesting = max_nesting
        # A record this short cannot nest deeper (each level takes two bytes).
        self._shallow_bytes = 2 * max_nesting + 1
        tree = _tree(self.paths)
        self._decode: Callable[[bytes], Any] = msgspec.json.Decoder(_struct(tree, "Fields")).decode
        self._getters = {path: _getter(tree, path) for path in self.paths}

    def __reduce__(self) -> tuple[Any, ...]:
        # Its Struct type and decoder are built again where it is unpickled (a Beam worker).
        return ColumnReader, (self.paths, self._max_nesting)

    def structs(self, values: Sequence[Any]) -> list[Any]:
        """Each record's fields as a Struct, or None where the generic parse must say what the
        record is."""
        max_bytes = _max_bytes()
        if self._all_plain(values, max_bytes):
            try:
                return list(map(self._decode, values))
            except _REFUSED:
                pass
        return [self._struct_or_none(v, max_bytes) for v in values]

    def _all_plain(self, values: Sequence[Any], max_bytes: int) -> bool:
        """Whether every record is ASCII bytes, short enough and not bracket-heavy."""
        if not values or not all(type(v) is bytes for v in values):
            return False
        longest = max(map(len, values))
        if longest > max_bytes or not b"".join(values).isascii():
            return False
        return longest <= self._shallow_bytes or not any(
            self._bracket_heavy(v) for v in values if len(v) > self._shallow_bytes
        )

    def _bracket_heavy(self, value: bytes) -> bool:
        return len(value) - len(value.translate(None, b"[{")) > self._max_nesting

    def _struct_or_none(self, value: Any, max_bytes: int) -> Any:
        if type(value) is not bytes or len(value) > max_bytes:
            return None
        if len(value) > self._shallow_bytes and self._bracket_heavy(value):
            return None
        if not value.isascii():
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                return None
        try:
            return self._decode(value)
        except _REFUSED:
            return None

    def column(self, path: str, structs: Sequence[Any]) -> list[Any]:
        """Field `path` of every Struct (none may be None)."""
        return list(map(self._getters[path], structs))


def _max_bytes() -> int:
    """The longest record read here: one no longer than the longest integer text Python parses
    (sys.get_int_max_str_digits, 4,300 by default) cannot hold one it refuses."""
    limit = sys.get_int_max_str_digits()
    return limit if limit > 0 else sys.maxsize
