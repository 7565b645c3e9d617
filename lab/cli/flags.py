"""Command-line flags generated from a config dataclass: one flag per field, help from its docstring.

    python -m lab dataset build --help     # every BuilderConfig field as a flag, explained by its docstring

`add_flags(parser, cls)` adds `--kebab-name` for each field of `cls` and returns the function that
builds `cls` back from the parsed arguments, so `__post_init__` validates what the user typed and
its message names the field. A field added to a config needs no hand-written flag.

Type -> flag: int, float, str, Path -> one value; bool -> --flag / --no-flag; `X | None` -> X with
None as its default; list[X] and tuple[X, ...] -> zero or more values; Literal[...] -> choices; a
nested dataclass -> its own fields, flattened into the same namespace (CompareConfig.rag.top_k is
--top-k), listed under a heading of their own. Any other type is refused when the parser is built.

Why not HfArgumentParser or jsonargparse: HfArgumentParser reads help only from `field(metadata=
{"help": ...})` and does not flatten nested dataclasses; jsonargparse spells flags `--rag.top_k`
(and reads attribute docstrings only with an extra parser). Both would rename the flags users and
scripts already type (`--max-new-tokens`, `--top-k`). The docstrings are read by
`lab.training.configs.base.field_docs`, the same function the Train tab uses, so the help here and
the UI's explanations cannot disagree.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

from lab.training.configs.base import field_docs

T = TypeVar("T")
SCALARS = (int, float, str, Path)


def flag_name(name: str) -> str:
    """`max_new_tokens` -> `--max-new-tokens`."""
    return "--" + name.replace("_", "-")


def field_default(f: dataclasses.Field) -> Any:
    """A dataclass field's default, its factory's value, or dataclasses.MISSING."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _unwrap_optional(hint: Any) -> Any:
    """`int | None` -> int; anything else unchanged."""
    if typing.get_origin(hint) in (Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def _type_kwargs(owner: type, name: str, hint: Any) -> dict[str, Any]:
    """The add_argument keywords that parse a value of `hint`."""
    hint = _unwrap_optional(hint)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is bool:
        return {"action": argparse.BooleanOptionalAction}
    if origin is Literal:
        return {"choices": args, "type": type(args[0])}
    if origin in (list, tuple) and args and (origin is list or args[1:] in ((), (Ellipsis,))) and args[0] in SCALARS:
        return {"nargs": "*", "type": args[0], "metavar": args[0].__name__.upper()}
    if hint in SCALARS:
        return {"type": hint}
    raise TypeError(f"{owner.__name__}.{name}: no command-line flag for type {hint!r}; use int, float, str, "
                    "Path, bool, a Literal, a list of those or a dataclass, or name it in skip=")


def _help(doc: str, default: Any) -> str:
    """The docstring and the default, with % doubled (argparse expands %-formats in help)."""
    if default is dataclasses.MISSING or default is None or default in ("", (), []):
        return doc.replace("%", "%%")
    shown = ", ".join(map(repr, default)) if isinstance(default, (list, tuple)) else str(default)
    return f"{doc} (default: {shown})".strip().replace("%", "%%")


def add_flags(parser: argparse.ArgumentParser, cls: type[T], *, defaults: dict[str, Any] | None = None,
              rename: dict[str, str] | None = None, skip: tuple[str, ...] = ()) -> Callable[[argparse.Namespace], T]:
    """Add one flag per field of dataclass `cls` to `parser`; return `build(args) -> cls`.

    defaults: field -> value shown and used when the flag is not given (a command may want a
    shorter answer than the config's default). rename: field -> flag name, for a flag whose name
    predates the field (`model_id` is `--model`). skip: fields left at their dataclass default.
    Nested dataclass fields use the same three, by their own field names.
    """
    defaults, rename = defaults or {}, rename or {}
    unknown = (set(defaults) | set(rename) | set(skip)) - _all_field_names(cls)
    if unknown:
        raise ValueError(f"{cls.__name__} has no field {', '.join(sorted(unknown))}")
    return _add(parser.add_argument_group(f"{cls.__name__} options"), parser, cls, defaults, rename, skip)


def _all_field_names(cls: type) -> set[str]:
    names: set[str] = set()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        names.add(f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            names |= _all_field_names(hints[f.name])
    return names


def _add(group: argparse._ArgumentGroup, parser: argparse.ArgumentParser, cls: type, defaults: dict[str, Any],
         rename: dict[str, str], skip: tuple[str, ...], base: Any = None) -> Callable[[argparse.Namespace], Any]:
    """`base`: the instance the enclosing config holds by default (its values win over `cls`'s own defaults)."""
    docs, hints = field_docs(cls), typing.get_type_hints(cls)
    nested: dict[str, Callable[[argparse.Namespace], Any]] = {}
    dests: dict[str, str] = {}  # field name -> argparse dest
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.init:
            continue
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            title = f"{cls.__name__}.{f.name} ({hint.__name__})"
            inner = getattr(base, f.name) if base is not None else field_default(f)
            nested[f.name] = _add(parser.add_argument_group(title, docs.get(f.name)), parser, hint, defaults, rename,
                                  skip, inner if dataclasses.is_dataclass(inner) else None)
            continue
        dest = rename.get(f.name, f.name)
        default = defaults.get(f.name, getattr(base, f.name) if base is not None else field_default(f))
        kwargs = _type_kwargs(cls, f.name, hint)
        required = default is dataclasses.MISSING
        action = group.add_argument(flag_name(dest), dest=dest, required=required,
                                    **({} if required else {"default": default}), **kwargs)
        # Set after add_argument: BooleanOptionalAction would otherwise append its own "(default: ...)".
        action.help = _help(docs.get(f.name, ""), default)
        dests[f.name] = dest

    def build(args: argparse.Namespace) -> Any:
        values = {name: getattr(args, dest) for name, dest in dests.items()}
        for name, value in values.items():
            if isinstance(value, list) and typing.get_origin(_unwrap_optional(hints[name])) is tuple:
                values[name] = tuple(value)
        return cls(**values, **{name: make(args) for name, make in nested.items()})

    return build
