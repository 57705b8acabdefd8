"""The ``llflow`` command, one module per subcommand: ``train`` (:mod:`.train`), ``evaluate``
(:mod:`.evaluate`), ``enhance`` and ``info`` (:mod:`.enhance`), ``export-onnx`` (:mod:`.export`),
``demo`` (:mod:`.demo`); the options they share are declared once in :mod:`.options`."""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Optional, Sequence

from .. import __version__
from .demo import add_demo
from .enhance import add_enhance, add_info
from .evaluate import add_evaluate
from .export import add_export_onnx
from .train import add_train


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [add_train, add_evaluate, add_enhance, add_info,
                                                                 add_export_onnx, add_demo]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llflow", description="Low-light image enhancement with LLFlow.")
    parser.add_argument("--version", action="version", version=f"llflow {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"llflow {args.command}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
