"""``minivit`` command line: one subcommand per feature module.

Each feature module defines ``configure_parser(parser)`` and ``cli_run(args) -> int``;
this file only dispatches. Errors the library raises on purpose (bad flags, bad files),
argument-parsing errors and operating-system errors (missing file, disk full, permission)
print one line ``minivit CMD: error: ...`` on stderr and exit with status 2 — no
traceback, no usage dump. Ctrl-C outside the training loop exits with 130; a closed
stdout pipe (``minivit predict ... | head -1``) exits quietly.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from .errors import MinivitError, TrainingInterrupted
from .errors import one_line as _one_line

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


class _Help(argparse.HelpFormatter):
    """Every flag's help ends with its default: the derived flags write it themselves
    (:mod:`minivit.flags`); for the others it is added here, unless the default is None
    or off (those flags say what happens without them)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if ("(default" in text or not action.option_strings or action.default is None
                or action.default is False or action.default is argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag gives one line (``minivit train: error: ...``) instead of
    the whole usage block; ``--help`` still prints the full usage."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _Help)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {_one_line(message)} (see {self.prog} --help)\n")


def build_parser():
    from . import __version__
    parser = _Parser(prog="minivit", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"minivit {__version__}")
    parser.commands = {}                    # name -> subparser (for its error messages)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, module, help_ in COMMANDS:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name == module:           # feature not built (yet): leave it out
                continue
            raise
        p = sub.add_parser(name, help=help_, description=help_)
        mod.configure_parser(p)
        for a in p._actions:                # a flag without help still shows its default
            if a.help is None and a.option_strings and a.default not in (None, False):
                a.help = "(default: %(default)s)"
        p.set_defaults(_run=mod.cli_run)
        parser.commands[name] = p
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="CPU threads for Numba and BLAS (default: all cores)")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:                           # reported by the subcommand: its prog, help
            parser.commands.get(getattr(args, "command", None), parser).error(
                f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as e:                 # --help (0) or a bad flag (2, one line)
        return e.code if isinstance(e.code, int) else 2
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    prefix = f"minivit {args.command}"
    try:
        if args.threads is not None:
            from .backends.threads import set_threads
            set_threads(args.threads)
        return int(args._run(args) or 0)
    except TrainingInterrupted as e:        # a run stopped by a signal: checkpoint written
        return 128 + int(e.signum or 2)
    except BrokenPipeError:
        # the reader of stdout went away (| head): not an error of ours; silence the
        # flush at exit, which would fail again and print a traceback
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 141
    except (MinivitError, ValueError, OSError) as e:
        # library errors (bad flags, hostile or corrupt files), and OS errors such as a
        # missing file, a full disk or a permission problem: one line, no traceback
        print(f"{prefix}: error: {_one_line(e) or type(e).__name__}", file=sys.stderr)
        return 2
    except MemoryError as e:
        # e.g. a model or batch far too large for this machine: say so in one line
        detail = _one_line(e)
        print(f"{prefix}: error: out of memory{': ' + detail if detail else ''} (is the "
              f"model, batch or data set too large for this machine?)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
