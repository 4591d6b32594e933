"""The settings layer: one dataclass per command is its flags, its config file and its validation."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml

from convbert.cli import build_parser, main
from convbert.errors import InputError
from convbert.settings import (
    Fraction,
    PositiveInt,
    add_settings,
    from_args,
    parse_command_line,
    settings_of,
    validate,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@dataclass
class Toy:
    name: str  # a required text
    steps: PositiveInt = 10  # how many
    frac: Fraction = 0.5  # a share
    mode: Literal["a", "b"] = "a"  # one of two
    flag: bool = False  # a switch
    sizes: list[PositiveInt] = field(default_factory=lambda: [1, 2])  # several
    extra: dict[str, Any] = field(default_factory=dict)  # free-form
    note: str | None = None  # optional; its comment goes on
    # over two lines

    def __post_init__(self) -> None:
        validate(self)


def parse_toy(*argv: str) -> Toy:
    parser = argparse.ArgumentParser(prog="toy")
    add_settings(parser, Toy, aliases={"steps": ["--num_steps"]})
    return from_args(Toy, parse_command_line(parser, list(argv)))


def test_layers_win_in_order_file_flags_overrides(tmp_path):
    (tmp_path / "c.yaml").write_text("name: from-file\nsteps: 3\nfrac: 1e-3\nextra: {a: 1}\n")
    t = parse_toy("--config", str(tmp_path / "c.yaml"), "--steps", "4", "extra.b=2e-5", "--flag", "sizes=[5,6]")
    assert (t.name, t.steps, t.frac, t.flag, t.sizes, t.extra) == (
        "from-file",
        4,
        1e-3,
        True,
        [5, 6],
        {"a": 1, "b": 2e-5},
    )
    assert parse_toy("--name", "x", "steps=7", "--steps", "8").steps == 7  # key=value beats a flag
    assert parse_toy("--name", "x", "--num_steps", "9", "--sizes", "3", "4").steps == 9
    assert parse_toy("--name", "x", "--sizes", "3", "4").sizes == [3, 4]
    assert parse_toy("name=x", "note=null").note is None


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--steps", "3"], "--name is required"),
        (["--name", "x", "--steps", "0"], "command line: steps must be 1 <= steps, got 0"),
        (["--name", "x", "steps=1.5"], "override: steps must be an integer, got 1.5"),
        (["--name", "x", "--frac", "nan"], "frac must be a finite number"),
        (["--name", "x", "frac=2"], "frac must be 0 <= frac <= 1"),
        (["--name", "x", "mode=c"], "mode must be one of a, b"),
        (["--name", "x", "flag=maybe"], "flag must be true or false"),
        (["--name", "x", "stepz=3"], "unknown setting 'stepz' (did you mean 'steps'?)"),
        (["--name", "x", "nothing"], "override 'nothing': expected key=value"),
        (["--name", "x", "--zzz"], "unrecognized arguments: --zzz"),
    ],
)
def test_bad_values_name_the_field(argv, message, capsys):
    with pytest.raises((InputError, SystemExit)) as e:
        parse_toy(*argv)
    text = str(e.value) if e.type is InputError else capsys.readouterr().err
    assert message in text


def test_config_files_must_be_mappings(tmp_path):
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    with pytest.raises(InputError, match=r"list.json: a config file must hold a mapping"):
        parse_toy("--config", str(tmp_path / "list.json"))
    with pytest.raises(InputError, match=r"bad.yaml: not valid YAML"):
        parse_toy("--config", str(tmp_path / "bad.yaml"))
    with pytest.raises(InputError, match=r"missing.json: cannot read config"):
        parse_toy("--config", str(tmp_path / "missing.json"))


def test_help_comes_from_the_comments():
    by_name = {s.name: s for s in settings_of(Toy)}
    assert by_name["note"].help == "optional; its comment goes on over two lines"
    assert by_name["steps"].default == 10 and by_name["name"].required
    with pytest.raises(InputError, match="Toy: steps must be 1 <= steps, got -1"):
        Toy(name="x", steps=-1)  # the same checks for code that builds settings directly


# ------------------------------------------------------------------------------------------ every command
def leaf_commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    """(command words, parser) of every command with settings."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from leaf_commands(sub, (*prefix, name))
    if parser.get_default("settings") is not None:
        yield prefix, parser


COMMANDS = {" ".join(words): p for words, p in leaf_commands(build_parser())}
# values for the required settings, so that --print-config resolves (paths need not exist for that)
REQUIRED = {"flops": ["--paper"]}


def test_every_command_has_settings():
    assert set(COMMANDS) >= {
        "demo",
        "pretrain",
        "data prepare",
        "tokenizer train",
        "bench",
        "flops",
        "plot",
        "export onnx",
        "convert tf1",
        "convert from-hf",
        "convert to-hf",
        "convert from-bert",
        "finetune",
        "evaluate",
        "predict",
    }


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_lists_every_setting_once_with_its_help(command):
    parser = COMMANDS[command]
    text = parser.format_help()
    flat = " ".join(text.split())
    for s in settings_of(parser.get_default("settings")):
        entries = [
            line
            for line in text.splitlines()  # an option's entry: "  --flag METAVAR, --alias ..."
            if line.startswith("  " + s.flag) and line[2 + len(s.flag) :][:1] in ("", " ", ",")
        ]
        assert len(entries) == 1, f"{command}: {s.flag} appears {len(entries)} times in --help"
        assert s.help, f"{command}: {s.name} has no help text (a comment after the field)"
        assert " ".join(s.help.split()) in flat, f"{command}: the help of {s.flag} is missing"
    for common in ("--config", "--print-config", "KEY=VALUE"):
        assert common in text


def required_args(command: str) -> list[str]:
    args = list(REQUIRED.get(command, []))
    for s in settings_of(COMMANDS[command].get_default("settings")):
        if s.required:
            args += [s.flag, str(s.choices[0]) if s.choices else "1" if s.kind is int else "x"]
    return args


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_resolved_config_round_trips(command, tmp_path, capsys):
    words = command.split()
    assert main([*words, *required_args(command), "--print-config"]) == 0
    first = json.loads(capsys.readouterr().out)
    for suffix, dump in ((".json", json.dumps), (".yaml", yaml.safe_dump)):
        path = tmp_path / f"resolved{suffix}"
        path.write_text(dump(first))
        assert main([*words, "--config", str(path), "--print-config"]) == 0
        assert json.loads(capsys.readouterr().out) == first


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: str(p.relative_to(CONFIGS)))
def test_shipped_recipes_resolve(path, capsys):
    command = path.parent.name
    values = yaml.safe_load(path.read_text())
    cls = COMMANDS[command].get_default("settings")
    needed = [
        a
        for s in settings_of(cls)
        if s.required and s.name not in values
        for a in (s.flag, str(s.choices[0]) if s.choices else "x")
    ]
    assert main([command, "--config", str(path), *needed, "--print-config"]) == 0
    resolved = json.loads(capsys.readouterr().out)
    assert {k: resolved[k] for k in values} == values, "the file's values survive resolution"
