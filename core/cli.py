"""Argument parsing shared by every ``python -m`` entry point.

Each stage declares the flags it accepts and the config key each one overrides::

    cli = StageCLI("training.train", __doc__)
    cli.flag("--epochs", "EPOCHS")
    args, settings = cli.parse(argv)

Every stage gets ``--opamp --data-dir --results-dir --device --seed`` and the generic
``--set KEY=VALUE``.  Flag types follow the config default's type.  A mistyped flag is an
argparse error with a "did you mean" suggestion; user errors raised inside ``main`` are
printed on one line and exit with status 2 (``run_main``).
"""
import argparse
import difflib
import re
import signal
import sys
import threading

from core.errors import ToolkitError
from core.interrupt import INTERRUPTED
from core.settings import coerce, parse_set_pairs, resolve, snapshot, toolkit_config

config = toolkit_config()   # the toolkit's config.py, never a same-named file of the user's


_NEGATIVE_VALUE = re.compile(r"^-\.?\d")   # "-1e7,100,..." or "-.5": a negative number (list), never a flag


class _Parser(argparse.ArgumentParser):
    """argparse with a "did you mean" for unknown or abbreviated flags, and negative values.

    argparse reads ``--y-target -1e7,100`` as a missing value followed by an unknown flag (it only
    recognises a lone negative number); a value that starts like a negative number is joined to
    the flag before it, as if written ``--y-target=-1e7,100``.
    """

    def parse_known_args(self, args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        takes_one = {s for a in self._actions if a.option_strings and a.nargs is None for s in a.option_strings}
        joined, i = [], 0
        while i < len(args):
            if args[i] in takes_one and i + 1 < len(args) and _NEGATIVE_VALUE.match(str(args[i + 1])):
                joined.append(f"{args[i]}={args[i + 1]}")
                i += 2
            else:
                joined.append(args[i])
                i += 1
        return super().parse_known_args(joined, namespace)

    def error(self, message):
        if "unrecognized arguments" in message:
            known = [s for a in self._actions for s in a.option_strings]
            for token in message.split(":", 1)[1].split():
                if token.startswith("--"):
                    close = difflib.get_close_matches(token.split("=")[0], known, n=1, cutoff=0.6)
                    if close:
                        message += f" (did you mean {close[0]}?)"
        super().error(message)


class StageCLI:
    COMMON = [
        ("--opamp", "OPAMP_TYPE", "circuit folder under the data dir"),
        ("--data-dir", "DATA_DIR", "root of the data layout <dir>/<circuit>/<source|target>/"),
        ("--results-dir", "RESULTS_DIR", "where checkpoints, metrics and plots go"),
        ("--device", "DEVICE", "auto | cpu | cuda | cuda:N"),
        ("--seed", "SEED", "seed for split, init and batch order"),
    ]

    def __init__(self, prog: str, description: str | None = None, *, common: bool = True):
        self.parser = _Parser(prog=f"python -m {prog}", description=description,
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              allow_abbrev=False)
        self._keys: dict[str, str] = {}
        self._defaults = snapshot(config)
        if common:
            for flag, key, help_text in self.COMMON:
                self.flag(flag, key, help_text)
            self.parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                                     help="override any config.py constant, e.g. --set HIDDEN_DIM=256")

    def flag(self, name: str, key: str, help_text: str = "", **kwargs):
        """Add ``name`` overriding config ``key`` (type from the default; None = keep config)."""
        if key not in self._defaults:
            raise KeyError(f"config.py has no {key}")  # programming error, not user error
        default = self._defaults[key]
        dest = name.lstrip("-").replace("-", "_")
        self._keys[dest] = key
        self.parser.add_argument(name, dest=dest, default=None, metavar=key,
                                 help=f"{help_text} [config {key}={default!r}]".strip(),
                                 type=lambda raw, k=key, d=default: _argparse_coerce(k, raw, d), **kwargs)
        return self

    def add_argument(self, *args, **kwargs):
        """A stage-only argument that does not map to config.py."""
        return self.parser.add_argument(*args, **kwargs)

    def parse(self, argv=None):
        args = self.parser.parse_args(argv)
        overrides = parse_set_pairs(getattr(args, "set", []))
        for dest, key in self._keys.items():
            value = getattr(args, dest)
            if value is not None:
                overrides[key] = value
        return args, resolve(config, overrides)


def _argparse_coerce(key, raw, default):
    try:
        return coerce(key, raw, default)
    except ToolkitError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _interrupt_once(signum, frame):
    """The first Ctrl-C stops the run (KeyboardInterrupt); later ones are ignored while it unwinds (locks released,
    workers stopped), where a second KeyboardInterrupt printed a traceback and could skip a cleanup.  ``timeout -s
    INT`` signals the process and then its whole group: a second signal even with one Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def run_main(main, argv=None):
    """Run ``main(argv)``; print a ToolkitError as one line and exit 2 instead of a traceback, and Ctrl-C as one
    line, exit 130."""
    main_thread = threading.current_thread() is threading.main_thread()
    before = signal.signal(signal.SIGINT, _interrupt_once) if main_thread else None
    interrupted = False
    try:
        return main(argv)
    except ToolkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        interrupted = True   # exiting: Ctrl-C stays ignored through the interpreter's shutdown (worker joins)
        print(INTERRUPTED, file=sys.stderr)
        sys.exit(130)
    finally:
        if main_thread and not interrupted:
            signal.signal(signal.SIGINT, before)   # an in-process caller (a test) keeps its own Ctrl-C handling
