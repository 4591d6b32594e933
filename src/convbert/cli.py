"""`convbert` command line: one subcommand per job; bad input exits 2 with a message naming the problem."""

from __future__ import annotations

import argparse
import logging
import sys

from . import __version__, demo, flops, tokenizer
from .errors import InputError
from .finetuning import commands as finetune
from .pretraining import data as pretrain_data
from .pretraining import recipe as pretrain
from .settings import parse_command_line
from .tools import bench, convert, export, plots

COMMANDS = (demo, tokenizer, pretrain_data, pretrain, finetune, plots, bench, flops, export, convert)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="convbert", description=__doc__)
    parser.add_argument("--version", action="version", version=f"convbert {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse_command_line(parser, argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    if not hasattr(args, "func"):  # a command group given without its subcommand
        parser.parse_args([*(argv if argv is not None else sys.argv[1:]), "--help"])
    ok = False
    try:
        code = int(args.func(args) or 0)
        ok = True
        return code
    except InputError as e:
        print(f"convbert: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        shutdown_distributed(wait=ok)


def shutdown_distributed(wait: bool) -> None:
    """Under torchrun, leave together (a rank exiting while another still talks to it aborts gloo); after an
    error, leave at once so the launcher can stop the others."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
