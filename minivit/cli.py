"""``minivit`` command line: one subcommand per feature module.

Each feature module defines ``configure_parser(parser)`` and ``cli_run(args) -> int``;
this file only dispatches. Errors the library raises on purpose (bad flags, bad files)
print one line and exit with status 2 — no traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from .errors import MinivitError

# (subcommand, module, one-line help)
COMMANDS = [
    ("attention-example", "minivit.explain", "print the lecture's self-attention example step by step"),
    ("train", "minivit.train", "train a ViT on CIFAR-10 (or a synthetic set)"),
    ("eval", "minivit.evaluate", "evaluate a checkpoint: accuracy, per-class, confusion matrix"),
    ("predict", "minivit.predict", "top-5 classes for image files"),
    ("inspect", "minivit.inspect", "attention maps, rollout, distances, embeddings of a checkpoint"),
    ("finetune", "minivit.finetune", "fine-tune a checkpoint (new head, higher resolution)"),
    ("pretrain", "minivit.pretrain", "self-supervised masked patch prediction"),
]


def build_parser():
    parser = argparse.ArgumentParser(prog="minivit", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module, help_ in COMMANDS:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name == module:           # feature not built (yet): leave it out
                continue
            raise
        p = sub.add_parser(name, help=help_, description=help_)
        mod.configure_parser(p)
        p.set_defaults(_run=mod.cli_run)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except (MinivitError, ValueError, FileNotFoundError, PermissionError) as e:
        print(f"minivit {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"minivit {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
