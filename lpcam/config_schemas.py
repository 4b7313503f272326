"""Hydra structured configs for the settings groups: one source of truth for every setting.

The ``lpcam``, ``evaluation`` and ``export`` groups are typed by the settings classes the run
builds from them (:class:`~lpcam.prototypes.settings.PrototypeSettings`,
:class:`~lpcam.stages.evaluation.EvaluationSettings`, :class:`~lpcam.stages.export.ExportSettings`).
Each class's fields, with their types and defaults, become a schema stored in Hydra's
``ConfigStore`` as ``<group>_schema`` (a primary config, so ``lpcam --help`` does not offer it as
an option of the group); a group's yaml files put ``/<group>_schema@_here_`` first in their
defaults list and state only the choices that differ from it. So:

* a default is written once, in the settings class (the yaml cannot drift from it);
* a value of the wrong type (``lpcam.k=abc``, ``evaluation.flip=maybe``, ``evaluation.scales=1.0``)
  or a key that does not exist (``lpcam.kk=3``) is refused by Hydra when the config is composed,
  naming the key, before anything runs; the settings classes keep only their range checks;
* adding a setting is its field (with its check) and the code that reads it.

The schemas are plain (not frozen) copies of the settings dataclasses: OmegaConf makes a frozen
dataclass's node read-only, and overrides must be able to set it. Importing this module registers
them; :mod:`lpcam.pipeline` imports it, so every composition that can run the pipeline has them.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field, make_dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from lpcam.errors import InputError
from lpcam.prototypes.settings import PrototypeSettings
from lpcam.stages.evaluation import EvaluationSettings
from lpcam.stages.export import ExportSettings

_OMEGACONF_SCALARS = (int, float, str, bool)


@dataclass
class LpcamEntries:
    """Entries of the ``lpcam`` group that are not prototype-build settings (other stages read them)."""

    aggregation: Any = None  # how the similarity maps become one map: the lpcam/aggregation group (official, fg_only, max, ...)
    prototypes_path: str | None = None  # a saved prototypes file (or a checkpoint holding them): skip the build


def _schema_type(hint: Any) -> Any:
    """The annotation OmegaConf validates against: the settings' own where OmegaConf knows it
    (scalars, optional scalars, tuples of scalars), ``Any`` otherwise (left to the range checks)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint in _OMEGACONF_SCALARS:
        return hint
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return tuple[args[0], ...] if args[0] in _OMEGACONF_SCALARS else tuple[Any, ...]
    inner = [a for a in args if a is not type(None)]
    if type(None) in args and len(inner) == 1 and inner[0] in _OMEGACONF_SCALARS:
        return typing.Optional[inner[0]]
    return Any


def schema(settings: type, *extras: type) -> type:
    """A structured-config dataclass with ``settings``' fields (types, defaults), its ``_target_``
    (so Hydra's ``instantiate`` builds ``settings``) and the fields of ``extras``."""
    specs: list[tuple[str, Any, Any]] = [("_target_", str, field(default=f"{settings.__module__}.{settings.__qualname__}"))]
    for cls in (settings, *extras):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.default is dataclasses.MISSING:
                raise TypeError(f"{cls.__name__}.{f.name} has no default: a schema needs one")
            specs.append((f.name, _schema_type(hints[f.name]), field(default=f.default)))
    return make_dataclass(f"{settings.__name__}Schema", specs)


SETTINGS_CLASSES: dict[str, tuple[type, ...]] = {
    "lpcam": (PrototypeSettings, LpcamEntries),
    "evaluation": (EvaluationSettings,),
    "export": (ExportSettings,),
}
SCHEMAS: dict[str, type] = {}  # group -> its schema, filled by register()
LPCAM_OTHER_KEYS = tuple(f.name for f in dataclasses.fields(LpcamEntries))


def check_keys(cfg: Any) -> None:
    """Refuse a key the schema lacks that ``+group.key=value`` appended (Hydra lets ``+`` add a
    key to a structured config; the settings class would fail on it with a traceback)."""
    for group in SCHEMAS:
        typed = OmegaConf.get_type(cfg[group]) if group in cfg else None
        if not (typed and dataclasses.is_dataclass(typed)):
            continue  # a group composed without its schema (a config of one's own): nothing to compare
        known = {f.name for f in dataclasses.fields(typed)}
        extra = [key for key in cfg[group] if key not in known]
        if extra:
            raise InputError(
                f"{group}.{extra[0]}: not a setting of the {group} group (docs/configuration.md lists them); "
                f"drop the override or fix its name"
            )


def register_schema(name: str, settings: type, *extras: type) -> type:
    """Store the schema of ``settings`` (plus ``extras``) as the primary config ``name``.

    For settings classes outside lpcam, e.g. a subclass of PrototypeSettings with a field of its
    own: ``register_schema("my_lpcam_schema", MySettings, LpcamEntries)`` in an imported module,
    and ``- /my_lpcam_schema@_here_`` first in the defaults list of ``conf/lpcam/my_lpcam.yaml``.
    Storing a name again replaces it."""
    node = schema(settings, *extras)
    ConfigStore.instance().store(name=name, node=node)
    return node


def register() -> None:
    """Store every schema of lpcam's groups as ``<group>_schema``."""
    for group, classes in SETTINGS_CLASSES.items():
        SCHEMAS[group] = register_schema(f"{group}_schema", *classes)


register()
