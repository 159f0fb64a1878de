"""The `mmssl` command: `mmssl <command> [args ...]` runs one step of the toolkit's workflow.

A command is a module of this package with a `main(argv, prog)`; it is imported only when its command
runs, so that `mmssl --help` stays fast. Each `main` is a `command`: the project's own errors end it
with one line and exit status 2.
"""
from __future__ import annotations

import argparse
import ast
import functools
import importlib
import pkgutil
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from mmssl.errors import MmsslError

T = TypeVar("T")


def commands() -> dict[str, str]:
    """Command name (the module's, with dashes) -> its module name."""
    return {m.name.replace("_", "-"): m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")}


def _summary(module: str) -> str:
    """The first paragraph of a command module's docstring, shortened; read without importing the module
    (torch is slow to load)."""
    docstring = ast.get_docstring(ast.parse((Path(__file__).parent / f"{module}.py").read_text())) or ""
    return textwrap.shorten(docstring.split("\n\n")[0], width=90, placeholder=" ...")


def add_import_option(parser: argparse.ArgumentParser) -> None:
    """`--import MODULE` (repeatable): modules of the user's own whose tasks and losses register on import."""
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help="import a module of your own first, registering its tasks and losses (repeatable)")


def import_user_modules(parser: argparse.ArgumentParser, modules: list[str]) -> None:
    """Import the `--import` modules; one that cannot be imported is a usage error naming it."""
    from mmssl.tasks import import_modules  # here: `mmssl --help` loads no torch

    try:
        import_modules(modules)
    except ImportError as e:
        parser.error(str(e))


def checkpoint_of(parser: argparse.ArgumentParser, path: str) -> Path:
    """A checkpoint argument: the file, or a run folder's newest checkpoint (a usage error if it has none)."""
    from mmssl.engine.checkpoint import latest_checkpoint  # here: `mmssl --help` loads no torch

    checkpoint = Path(path)
    if checkpoint.is_dir():
        checkpoint = latest_checkpoint(checkpoint) or parser.error(f"no checkpoint in {path}")
    return checkpoint


def main(argv: list[str] | None = None) -> int:
    """Run the command named by argv[0] with the rest of argv; return the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    names = commands()
    if not argv or argv[0] not in names:
        listing = "\n".join(f"  {name:<16}{_summary(module)}" for name, module in names.items())
        parser = argparse.ArgumentParser(
            prog="mmssl", usage="%(prog)s [-h] command [args ...]", description=__doc__.splitlines()[0],
            epilog=f"commands:\n{listing}\n\n`mmssl <command> --help` describes a command's arguments.",
            formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.add_argument("command", choices=names, metavar="command", help="see the commands below")
        parser.parse_args(argv[:1])  # exits: the help, or an error naming the commands
    result = importlib.import_module(f"{__name__}.{names[argv[0]]}").main(argv[1:], prog=f"mmssl {argv[0]}")
    return result if isinstance(result, int) else 0  # the others return what they made (a report, a path)


def command(main: Callable[[list[str] | None, str | None], T]) -> Callable[[list[str] | None, str | None], T]:
    """A command's `main(argv, prog)` (run by `mmssl <command>` and by its script in tools/ alike) that ends
    on the project's own errors (`MmsslError`: bad input, a run that must stop) with their one line on
    stderr and exit status 2, as on a usage error; any other exception is a bug, and keeps its traceback."""

    @functools.wraps(main)
    def run(argv: list[str] | None = None, prog: str | None = None) -> T:
        try:
            return main(argv, prog)
        except MmsslError as e:
            print(f"{prog or Path(sys.argv[0]).name}: error: {' '.join(str(e).splitlines())}", file=sys.stderr)
            raise SystemExit(2) from None

    return run
