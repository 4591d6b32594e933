"""Settings: a typed dataclass per command is its CLI, its config file and its validation, declared once.

A field becomes a flag (`--batch-size`, also spelled `--batch_size`), its type and `Annotated` range the check,
its trailing comment the help text. Values come from, in order: the dataclass defaults, `--config FILE` (YAML or
JSON), the flags, then `key=value` overrides (`model.conv_type=noconv` sets a key of a dict field). Every error
names the field and where its value came from; `--print-config` prints the resolved settings (readable again
with `--config`) and exits.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import difflib
import inspect
import io
import json
import math
import os
import sys
import tokenize
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

from .errors import InputError
from .fileio import atomic_write_json, parse_json

RUN_CONFIG = "run_config.json"  # the resolved settings, written into a command's output directory


@dataclass(frozen=True)
class Range:
    """Allowed interval of a number: lo <= x (lo < x when lo_open), x <= hi."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False

    def __contains__(self, x: float) -> bool:
        above = self.lo is None or (x > self.lo if self.lo_open else x >= self.lo)
        return above and (self.hi is None or x <= self.hi)

    def __str__(self) -> str:
        lo = "" if self.lo is None else f"{self.lo:g} {'<' if self.lo_open else '<='} "
        return f"{lo}x{'' if self.hi is None else f' <= {self.hi:g}'}"


PositiveInt = Annotated[int, Range(1)]
NonNegativeInt = Annotated[int, Range(0)]
PositiveFloat = Annotated[float, Range(0, lo_open=True)]
NonNegativeFloat = Annotated[float, Range(0)]
Fraction = Annotated[float, Range(0, 1)]
Device = Literal["cpu", "cuda"]
Precision = Literal["fp32", "bf16", "fp16"]


@dataclass(frozen=True)
class Setting:
    """One field as the CLI sees it."""

    name: str
    kind: type  # int | float | str | bool | dict
    optional: bool  # None allowed
    many: bool  # a list of `kind`
    choices: tuple[Any, ...] | None
    range: Range | None
    default: Any  # dataclasses.MISSING when required
    help: str

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def required(self) -> bool:
        return self.default is dataclasses.MISSING


@cache
def settings_of(cls: type) -> tuple[Setting, ...]:
    hints = typing.get_type_hints(cls, include_extras=True)
    comments = _field_comments(cls)
    out = []
    for f in dataclasses.fields(cls):
        kind, optional, many, choices, range_ = _unpack(hints[f.name])
        default = (
            f.default
            if f.default is not dataclasses.MISSING
            else (f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING)
        )
        out.append(Setting(f.name, kind, optional, many, choices, range_, default, comments.get(f.name, "")))
    return tuple(out)


def _unpack(hint: Any) -> tuple[type, bool, bool, tuple[Any, ...] | None, Range | None]:
    """(kind, optional, many, choices, range) of a field's type hint."""
    optional = many = False
    choices = range_ = None
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional, hint = len(args) < len(typing.get_args(hint)), args[0]
    if typing.get_origin(hint) is list:
        many, hint = True, typing.get_args(hint)[0]
    if typing.get_origin(hint) is Annotated:
        hint, *meta = typing.get_args(hint)
        range_ = next((m for m in meta if isinstance(m, Range)), None)
    if typing.get_origin(hint) is Literal:
        choices = typing.get_args(hint)
        hint = type(choices[0])
    if typing.get_origin(hint) is dict:
        hint = dict
    if hint not in (int, float, str, bool, dict):
        raise TypeError(f"unsupported setting type {hint!r}")
    return hint, optional, many, choices, range_


def _field_comments(cls: type) -> dict[str, str]:
    """Field name -> its trailing comment and the comment lines right below it (base classes' fields too)."""
    out: dict[str, str] = {}
    for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):
        source = inspect.getsource(klass)
        lines = source.splitlines()
        comments = {
            tok.start[0]: tok.string.lstrip("#").strip()
            for tok in tokenize.generate_tokens(io.StringIO(source).readline)
            if tok.type == tokenize.COMMENT
        }
        for node in ast.parse(source).body[0].body:
            if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
                continue
            text = [comments[n] for n in range(node.lineno, node.end_lineno + 1) if n in comments]
            n = node.end_lineno + 1
            while n in comments and lines[n - 1].lstrip().startswith("#"):
                text.append(comments[n])
                n += 1
            out[node.target.id] = " ".join(text)
    return out


# ------------------------------------------------------------------------------------------ values
def check(s: Setting, value: Any, where: str) -> Any:
    """`value` converted to the setting's type, or an InputError naming the field and `where` it came from."""

    def fail(expected: str) -> InputError:
        return InputError(f"{where}: {s.name} must be {expected}, got {value!r}")

    if isinstance(value, str) and not (s.kind is str and not s.many):
        value = _from_text(s, value)
    if value is None:
        if s.optional:
            return None
        raise fail(f"a {s.kind.__name__}")
    if s.many:
        items = value if isinstance(value, (list, tuple)) else [value]
        if not items:
            raise fail("a non-empty list")
        return [check(dataclasses.replace(s, many=False, optional=False), v, where) for v in items]
    if s.kind is bool:
        if not isinstance(value, bool):
            raise fail("true or false")
    elif s.kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if not (isinstance(value, float) and value.is_integer()):
                raise fail("an integer")
            value = int(value)
    elif s.kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise fail("a finite number")
        value = float(value)
    elif s.kind is str:
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if not isinstance(value, str):
            raise fail("a string")
    elif s.kind is dict and not isinstance(value, Mapping):
        raise fail("a mapping")
    if s.choices is not None and value not in s.choices:
        raise fail(f"one of {', '.join(map(str, s.choices))}")
    if s.range is not None and value not in s.range:
        raise fail(str(s.range).replace("x", s.name))
    if s.kind is dict:  # YAML reads 1e-3 as text
        return {k: _yaml_or_raw(v) if isinstance(v, str) else v for k, v in value.items()}
    return value


def validate(obj: Any) -> None:
    """Check (and convert in place) every field of a settings dataclass; call it from `__post_init__`."""
    for s in settings_of(type(obj)):
        object.__setattr__(obj, s.name, check(s, getattr(obj, s.name), type(obj).__name__))


def _from_text(s: Setting, raw: str) -> Any:
    """A number, bool or null written as text (a flag, a key=value, or YAML's `1e-3`), else the text itself."""
    word = raw.strip().lower()
    if s.optional and word in ("null", "none", "~"):
        return None
    if s.kind is bool:
        return {
            "true": True,
            "yes": True,
            "on": True,
            "1": True,
            "false": False,
            "no": False,
            "off": False,
            "0": False,
        }.get(word, raw)
    if s.kind in (int, float):
        for convert in (int, float):
            try:
                return convert(word)
            except ValueError:
                pass
    if s.many or s.kind is dict:
        if word.startswith(("[", "{")):
            return _yaml_or_raw(raw)
        return raw.split(",") if s.many else raw
    return raw


def parse_value(s: Setting, raw: str) -> Any:
    """A flag or `key=value` string: the text, converted and checked later by `check`."""
    if s.kind is str and not s.many:
        return None if s.optional and raw.strip().lower() in ("null", "none") else raw
    return _from_text(s, raw)


def _yaml():
    try:
        import yaml
    except ImportError:
        raise InputError("YAML settings need PyYAML: pip install pyyaml (or write the config as JSON)") from None
    return yaml


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        values = _yaml().safe_load(text) if path.suffix in (".yaml", ".yml") else parse_json(text)
    except OSError as e:
        raise InputError(f"{path}: cannot read config: {e.strerror or e}") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not valid {'YAML' if path.suffix in ('.yaml', '.yml') else 'JSON'}: {e}") from None
    except Exception as e:  # yaml.YAMLError
        raise InputError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(values, dict):
        raise InputError(f"{path}: a config file must hold a mapping of settings, not {type(values).__name__}")
    return values


def resolve(cls: type, sources: Sequence[tuple[str, Mapping[str, Any]]]) -> Any:
    """The settings object from (where, values) layers, later ones winning; dict fields merge key by key."""
    by_name = {s.name: s for s in settings_of(cls)}
    values: dict[str, Any] = {}
    for where, layer in sources:
        for key, value in layer.items():
            s = by_name.get(key)
            if s is None:
                near = difflib.get_close_matches(key, by_name, n=1)
                raise InputError(
                    f"{where}: unknown setting {key!r}"
                    + (f" (did you mean {near[0]!r}?)" if near else f"; known: {', '.join(by_name)}")
                )
            value = check(s, value, where)
            values[key] = {**values.get(key, {}), **value} if s.kind is dict and key in values else value
    missing = [s.flag for s in by_name.values() if s.required and s.name not in values]
    if missing:
        raise InputError(f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required")
    return cls(**values)


def overrides(items: Sequence[str], cls: type) -> dict[str, Any]:
    """`key=value` / `field.key=value` strings as a values layer."""
    by_name = {s.name: s for s in settings_of(cls)}
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise InputError(f"override {item!r}: expected key=value")
        name, dot, sub = key.partition(".")
        s = by_name.get(name)
        if dot and s is not None and s.kind is dict:
            out.setdefault(name, {})[sub] = _yaml_or_raw(raw)
        elif s is not None and not dot:
            out[name] = parse_value(s, raw)
        else:
            out[key] = raw  # `resolve` reports the unknown name
    return out


def _yaml_or_raw(raw: str) -> Any:
    """A dict entry's value: a number, else YAML (lists, bools, null), else the text."""
    for convert in (int, float):
        try:
            return convert(raw)
        except ValueError:
            pass
    try:
        return _yaml().safe_load(raw)
    except InputError:
        raise
    except Exception:
        return raw


def to_dict(obj: Any) -> dict[str, Any]:
    return {s.name: getattr(obj, s.name) for s in settings_of(type(obj))}


def write_run_config(directory: str | Path, obj: Any) -> Path:
    """The resolved settings as DIR/run_config.json (readable with --config)."""
    path = Path(directory) / RUN_CONFIG
    atomic_write_json(path, to_dict(obj))
    return path


# ------------------------------------------------------------------------------------------ CLI
class _Pairs(argparse.Action):
    """`--model KEY=VALUE ...` for a dict field."""

    def __call__(self, parser, namespace, values, option_string=None):
        merged = dict(getattr(namespace, self.dest, None) or {})
        for item in values:
            key, sep, raw = item.partition("=")
            if not sep or not key:
                parser.error(f"{option_string} {item!r}: expected KEY=VALUE")
            merged[key] = _yaml_or_raw(raw)
        setattr(namespace, self.dest, merged)


def add_settings(
    parser: argparse.ArgumentParser,
    cls: type,
    aliases: Mapping[str, Sequence[str]] | None = None,
    metavars: Mapping[str, str] | None = None,
) -> None:
    """A flag per field of `cls` (default: not given), plus --config, --print-config and key=value overrides."""
    aliases, metavars = aliases or {}, metavars or {}
    parser.add_argument(
        "--config",
        metavar="FILE",
        dest="_config",
        help="YAML or JSON file of settings (the flags and key=value overrides win over it)",
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        dest="_print_config",
        help="print the resolved settings as JSON (a --config file) and exit",
    )
    parser.add_argument(
        "_overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="override any setting, e.g. batch_size=64"
        + (" or model.conv_type=noconv" if any(s.kind is dict for s in settings_of(cls)) else ""),
    )
    for s in settings_of(cls):
        parser.add_argument(s.flag, *aliases.get(s.name, ()), **_flag_kwargs(s, metavars.get(s.name)))
        if "_" in s.name and s.kind is not bool:  # transformers' spelling, not listed in --help
            parser.add_argument(
                "--" + s.name,
                dest=s.name,
                help=argparse.SUPPRESS,
                **{k: v for k, v in _flag_kwargs(s, None).items() if k not in ("help", "dest")},
            )


def _flag_kwargs(s: Setting, metavar: str | None) -> dict[str, Any]:
    shown = "" if s.required else ("" if s.default in (None, {}, []) else f" (default: {_show(s.default)})")
    kw: dict[str, Any] = dict(
        dest=s.name, default=argparse.SUPPRESS, help=(s.help + shown).strip().replace("%", "%%") or None
    )
    if s.required:
        kw["help"] = (kw["help"] or "") + " (required)"
    if s.kind is bool:
        return {**kw, "action": argparse.BooleanOptionalAction}
    if s.kind is dict:
        return {**kw, "nargs": "+", "action": _Pairs, "metavar": "KEY=VALUE"}
    item = dataclasses.replace(s, many=False)  # argparse passes the items of a list one by one
    kw["type"] = lambda raw: parse_value(item, raw)
    if s.choices is not None:
        kw["metavar"] = "{" + ",".join(map(str, s.choices)) + "}"
    elif metavar or s.kind in (int, float):
        kw["metavar"] = metavar or ("N" if s.kind is int else "X")
    if s.many:
        kw["nargs"] = "+"
    return kw


def _show(value: Any) -> str:
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)


def from_args(cls: type, args: argparse.Namespace) -> Any:
    """The settings object of parsed arguments: defaults < --config < flags < key=value."""
    layers: list[tuple[str, Mapping[str, Any]]] = []
    if getattr(args, "_config", None):
        layers.append((str(args._config), read_config_file(args._config)))
    names = {s.name for s in settings_of(cls)}
    layers.append(("command line", {k: v for k, v in vars(args).items() if k in names}))
    layers.append(("override", overrides(getattr(args, "_overrides", None) or [], cls)))
    return resolve(cls, layers)


def add_command(
    subparsers: argparse._SubParsersAction,
    name: str,
    cls: type,
    run: Callable[[Any], int | None],
    *,
    help: str,
    description: str | None = None,
    aliases: Mapping[str, Sequence[str]] | None = None,
    metavars: Mapping[str, str] | None = None,
) -> argparse.ArgumentParser:
    """A subcommand whose settings are `cls` and whose body is `run(settings)`."""
    p = subparsers.add_parser(
        name, help=help, description=description or help, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_settings(p, cls, aliases, metavars)

    def func(args: argparse.Namespace) -> int:
        cfg = from_args(cls, args)
        if args._print_config:
            json.dump(to_dict(cfg), sys.stdout, indent=2)
            print()
            return 0
        code = run(cfg)
        return code if isinstance(code, int) else 0

    p.set_defaults(func=func, settings=cls)
    return p


def parse_command_line(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line; `key=value` overrides may come anywhere after the command."""
    args, rest = parser.parse_known_args(argv)
    extra = [a for a in rest if "=" in a and not a.startswith("-")]
    if len(extra) < len(rest) or (extra and not hasattr(args, "_overrides")):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if extra:
        args._overrides = [*args._overrides, *extra]
    return args
