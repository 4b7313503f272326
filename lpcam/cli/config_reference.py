"""The configuration reference (``docs/configuration.md``), generated from the config tree itself.

    python -m lpcam.cli.config_reference > docs/configuration.md     # what `make docs` runs

Every key of the default composition is listed, group by group, with its type, its default as the
yaml states it (interpolations unresolved) and its meaning. The meaning is the comment beside the
key: in the settings classes whose fields are the group's schema (:mod:`lpcam.config_schemas`: the
field's trailing comment in ``lpcam/prototypes/settings.py``, ``lpcam/stages/evaluation.py``,
``lpcam/stages/export.py``) or the class its ``_target_`` names, else in the yaml file that sets it. Nothing here is written by hand, so a test can regenerate the page
and fail when the file is stale.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import inspect
import re
import sys
import typing
from pathlib import Path
from typing import Iterator

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, ListConfig, OmegaConf

from lpcam.config_dirs import config_dir
from lpcam.config_schemas import SETTINGS_CLASSES

CONF = config_dir()
GROUP_ORDER = ["", "dataset", "backbone", "model", "trainer", "lpcam", "evaluation", "export", "logger"]
GENERIC = {  # Hydra's own keys, the same in every group
    "_target_": "the class or function Hydra builds from this node (`hydra.utils.instantiate`)",
    "_partial_": "built as the function with these arguments bound, called later",
}
LINE = re.compile(r"^(?P<indent>\s*)(?P<key>[A-Za-z_][\w]*):(?P<rest>.*)$")


def default_config() -> DictConfig:
    """The default composition, with Hydra's choices (which option each group took)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", return_hydra_config=True)


def leaves(node: DictConfig, prefix: str = "") -> Iterator[tuple[str, object]]:
    """(dotted key, raw value) of every leaf, interpolations left as written."""
    for key in node.keys():
        child = node._get_node(key)
        dotted = f"{prefix}{key}"
        if isinstance(child, DictConfig) and not child._is_interpolation() and not child._is_none() and len(child):
            yield from leaves(child, dotted + ".")
        else:
            yield dotted, _raw(child)


def _raw(node) -> object:
    if isinstance(node, (DictConfig, ListConfig)):
        if node._is_interpolation() or node._is_none():
            return node._value()
        return OmegaConf.to_container(node, resolve=False)
    return node._value()


def yaml_comments(path: Path) -> dict[str, str]:
    """Trailing ``# comment`` of each key of a yaml file, by dotted key; a comment line indented
    further than the key continues that key's comment."""
    comments: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    last: tuple[str, int] | None = None
    for line in path.read_text().splitlines():
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if stripped.startswith("#"):
            if last and last[0] in comments and indent > last[1] + 4:
                comments[last[0]] += " " + stripped.lstrip("#").strip()
            continue
        match = LINE.match(line)
        if not match or stripped.startswith("-"):
            last = None
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        dotted = ".".join([k for _, k in stack] + [match["key"]])
        stack.append((indent, match["key"]))
        comment = _trailing_comment(match["rest"])
        if comment:
            comments[dotted] = comment
        last = (dotted, indent)
    return comments


def _trailing_comment(rest: str) -> str:
    """The comment after a yaml value (a ``#`` outside quotes and ``${...}``, after a space)."""
    depth, quote = 0, ""
    for i, ch in enumerate(rest):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "#" and depth == 0 and (i == 0 or rest[i - 1] == " "):
            return rest[i + 1 :].strip()
    return ""


def field_comments(cls: type) -> dict[str, str]:
    """Trailing comments of a dataclass's fields in its source (``name: type = default  # why``)."""
    out = {}
    for line in inspect.getsource(cls).splitlines():
        match = re.match(r"^\s+(\w+):\s*[^#]*?#\s*(.*)$", line)
        if match and match[1] in {f.name for f in dataclasses.fields(cls)}:
            out[match[1]] = match[2].strip()
    return out


def target_class(target: str) -> type | None:
    module, _, name = target.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None
    return obj if inspect.isclass(obj) and dataclasses.is_dataclass(obj) else None


def _type_name(hint) -> str:
    """``int``, ``int or null``, ``list of float``: a field annotation as a user reads it."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple and len(args) == 2 and args[1] is Ellipsis:
        return f"list of {_type_name(args[0])}"
    if args and type(None) in args:
        return " or ".join(_type_name(a) for a in args if a is not type(None)) + " or null"
    return getattr(hint, "__name__", str(hint))


def _value_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, str) and value.startswith("${"):
        return "interpolation"
    return {bool: "bool", int: "int", float: "float", str: "str", list: "list", dict: "dict"}.get(type(value), type(value).__name__)


def _shown(value) -> str:
    """A default as one would type it as an override."""
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, (list, dict)):
        text = json.dumps(value)
    else:
        text = str(value)
    return "`" + text.replace("|", "\\|") + "`"


def group_file(group: str, choice: str | None) -> Path | None:
    if not group:
        return CONF / "config.yaml"
    if choice is None:
        return None
    path = CONF / group / f"{choice}.yaml"
    return path if path.is_file() else None


def reference() -> str:
    cfg = default_config()
    choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
    rows: dict[str, list[tuple[str, str, str, str]]] = {}
    top_comments = yaml_comments(CONF / "config.yaml")
    for key, value in leaves(cfg):
        if key.startswith("hydra."):
            continue
        group = key.split(".", 1)[0] if key.split(".", 1)[0] in choices else ""
        rows.setdefault(group, []).append((key, value))
    lines = [
        "# Configuration",
        "",
        "Every key of the default composition (`lpcam --cfg job` prints it resolved), group by group:",
        "its type, its default and what it means. Any key is a Hydra override: `lpcam lpcam.k=20`,",
        "`lpcam dataset=voc`. A group's other options are listed under its table; an option",
        "(`lpcam=official_protocol`, `experiment=voc_resnet50`) states only what it changes. This page is",
        "generated from the config tree (`python -m lpcam.cli.config_reference`); a test fails when it is",
        "stale.",
        "",
    ]
    nested = {g.replace("/", "."): g for g in choices if "/" in g and not g.startswith("hydra/")}
    for group in sorted(rows, key=lambda g: (GROUP_ORDER.index(g) if g in GROUP_ORDER else len(GROUP_ORDER), g)):
        choice = choices.get(group)
        path = group_file(group, choice)
        comments = yaml_comments(path) if path else {}
        for dotted, sub in nested.items():  # a group inside this one (lpcam/aggregation): its own file
            if dotted.startswith(f"{group}.") and (sub_path := group_file(sub, choices.get(sub))):
                prefix = dotted.split(".", 1)[1]
                comments.update({f"{prefix}.{k}": v for k, v in yaml_comments(sub_path).items()})
        node = cfg[group] if group else None
        classes: list[type] = []
        if group in SETTINGS_CLASSES:  # the group's schema: its settings classes' fields
            classes = list(SETTINGS_CLASSES[group])
        elif group and "_target_" in node and (cls := target_class(str(node._get_node("_target_")._value()))):
            classes = [cls]
        documented = {k: v for c in classes for k, v in field_comments(c).items()}
        hints = {k: v for c in classes for k, v in typing.get_type_hints(c).items()}
        title = f"## `{group}`" if group else "## Top-level keys"
        lines += [title, ""]
        if group:
            lines += [f"`{group}={choice}` by default; the options are listed under [groups](#groups).", ""]
        lines += ["| key | type | default | meaning |", "|---|---|---|---|"]
        for key, value in rows[group]:
            local = key.split(".", 1)[1] if group else key
            name = local.split(".")[0]
            meaning = documented.get(local) or comments.get(local) or (top_comments.get(key, "") if not group else "")
            meaning = meaning or GENERIC.get(local.rsplit(".", 1)[-1], "")
            kind = _type_name(hints[name]) if local in hints else _value_type(value)
            lines.append(f"| `{key}` | {kind} | {_shown(value)} | {meaning.replace('|', '/')} |")
        lines.append("")
    lines += ["## Groups", "", "Each group's options (`<group>=<option>`), the default first.", "",
              "| group | default | options |", "|---|---|---|"]  # fmt: skip
    for folder in sorted({p.parent for p in CONF.rglob("*.yaml")} - {CONF}):
        group = folder.relative_to(CONF).as_posix()
        options = sorted(p.stem for p in folder.glob("*.yaml"))
        default = choices.get(group)
        shown = ", ".join(f"`{o}`" for o in options if o != default)
        lines.append(f"| `{group}` | {f'`{default}`' if default else '—'} | {shown} |")
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    sys.stdout.write(reference())


if __name__ == "__main__":
    main()
