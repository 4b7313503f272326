"""A settings dataclass's values checked against its field annotations, before its own range checks.

Hydra hands a config value over as the user typed it: ``evaluation.flip=maybe`` arrives as the
string ``"maybe"`` (which is truthy), ``evaluation.scales=1.0`` as a number where a list is
expected, ``export.fg_threshold=abc`` as a string that a later comparison fails on with a
traceback. :func:`check_field_types` refuses such a value in one line naming the field, so the
settings objects (built before any data is generated or any training starts) catch them all.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from lpcam.errors import InputError

_SCALARS: dict[type, str] = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}


def _fits(value: Any, hint: Any) -> bool:
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    return True  # a type this check does not know: left to the settings' own checks


def _expected(hint: Any) -> str | None:
    """What a value of annotation ``hint`` must be, None for annotations this check leaves alone."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1 and _expected(inner[0]):
            return f"{_expected(inner[0])} or null"
        return None
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis and args[0] in _SCALARS:
        return f"a list of {_SCALARS[args[0]].removeprefix('a ')}s"
    return _SCALARS.get(hint)


def _check(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return value is None or any(_check(value, a) for a in args if a is not type(None))
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return isinstance(value, Sequence) and not isinstance(value, str) and all(_fits(v, args[0]) for v in value)
    return _fits(value, hint)


def check_field_types(settings: Any, group: str) -> None:
    """Raise an InputError naming ``<group>.<field>`` for the first value of the wrong type."""
    hints = typing.get_type_hints(type(settings))
    for f in fields(settings):
        expected = _expected(hints[f.name])
        value = getattr(settings, f.name)
        if expected and not _check(value, hints[f.name]):
            shown = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else value
            raise InputError(f"{group}.{f.name}={shown!r}: expected {expected}")
