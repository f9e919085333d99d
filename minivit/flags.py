"""Command-line flags derived from the settings dataclasses, so each is written once.

Every field of :class:`~minivit.config.ViTConfig`, :class:`~minivit.settings.TrainSettings`,
:class:`~minivit.settings.DataSettings` and :class:`~minivit.settings.MPPSettings` becomes
a flag ``--field-name`` whose type comes from the annotation, whose help is the field's
``name: text`` line in the class docstring, and whose default is shown in that help.
Values are only converted here; ranges are checked by the dataclass's own ``validate()``,
so a bad value reads the same in every subcommand and from Python.

The flags' argparse defaults are ``SUPPRESS``: ``args`` holds only what the user typed
(:func:`given`), which is how ``--resume`` tells "not given: take the checkpoint's" from
"given: must agree with the checkpoint".
"""
from __future__ import annotations

import argparse
import dataclasses
import re

from .errors import MinivitError
from .settings import BACKENDS, check_backend_name

_DOC_LINE = re.compile(r"^\s{4}(\w+):\s+(.*)$")


def field_docs(cls) -> dict[str, str]:
    """name → help text, from the ``name: text`` lines of ``cls``'s docstring (a text runs
    on over more-indented lines until the next name or a blank line)."""
    docs, current = {}, None
    for line in (cls.__doc__ or "").splitlines():
        m = _DOC_LINE.match(line)
        if m and m.group(1) in {f.name for f in dataclasses.fields(cls)}:
            current = m.group(1)
            docs[current] = m.group(2).strip()
        elif current and line.strip() and line.startswith(" " * 5):
            docs[current] += " " + line.strip()
        else:
            current = None
    return docs


def _converter(name, fn):
    """Wrap ``fn`` so its ConfigError/ValueError becomes argparse's one-line error."""
    def convert(text):
        try:
            return fn(text)
        except (MinivitError, ValueError) as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    convert.__name__ = name                # argparse says "invalid <name> value: ..."
    return convert


def backend_arg(text: str) -> str:
    """argparse ``type=`` for ``--backend``: the same error text as the Python API."""
    return _converter("backend", check_backend_name)(text)


def add_backend_flag(parser, default="numba", help_extra=""):
    """Add the shared ``--backend`` flag (for eval, predict, inspect, … alike)."""
    parser.add_argument("--backend", type=backend_arg, default=default,
                        metavar="{" + ",".join(BACKENDS) + "}",
                        help=f"compute backend{help_extra} (default: {default})")


def _default_text(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def add_flags(parser, cls, *, defaults=None, exclude=(), only=None, help=None, title=None):
    """Add one flag per field of dataclass ``cls`` to ``parser`` (in a group ``title``).

    defaults: an instance or dict whose values are shown as the defaults (None: the
    class's). exclude / only: field names to leave out / to keep. help: name → text that
    replaces the docstring's (e.g. a subcommand's own default rule).
    Returns the names of the fields added.
    """
    docs = field_docs(cls)
    if isinstance(defaults, dict) or defaults is None:
        base = {f.name: f.default for f in dataclasses.fields(cls)}
        base.update(defaults or {})
    else:
        base = dataclasses.asdict(defaults)
    help = help or {}
    group = parser.add_argument_group(title) if title else parser
    added = []
    for f in dataclasses.fields(cls):
        if f.name in exclude or (only is not None and f.name not in only):
            continue
        flag = "--" + f.name.replace("_", "-")
        text = help.get(f.name, docs.get(f.name, "")).replace("``", "")
        d = base.get(f.name)
        kw = dict(dest=f.name, default=argparse.SUPPRESS)
        typ = str(f.type).replace(" ", "")
        if "parse" in f.metadata:
            kw.update(type=_converter(f.name, f.metadata["parse"]),
                      metavar=f.metadata.get("metavar"))
        elif typ == "bool":
            kw.update(action=argparse.BooleanOptionalAction)
            d = "on" if d else "off"
        elif f.name == "backend":
            kw.update(type=backend_arg, metavar="{" + ",".join(BACKENDS) + "}")
        elif typ.startswith("int"):
            kw.update(type=int, metavar="N")
        elif typ.startswith("float"):
            kw.update(type=float, metavar="X")
        elif typ.startswith("str"):
            kw.update(type=str)
        else:
            raise TypeError(f"no flag type for {cls.__name__}.{f.name}: {f.type}")
        if "(default" not in text:
            text = f"{text} (default: {_default_text(d)})"
        group.add_argument(flag, help=text.replace("%", "%%").replace("%%(default)", "%(default)"),
                           **kw)
        added.append(f.name)
    return added


def given(args, cls) -> dict:
    """The fields of ``cls`` the user gave on the command line, name → value."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
            if hasattr(args, f.name)}
