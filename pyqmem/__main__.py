"""The ``pyqmem`` command (also ``python -m pyqmem``): command-line tools.

pyqmem redrive SOURCE [--dir DIR] [--dead-letter TOPIC] [--max N] [--wait S]
    move SOURCE's dead-lettered records back to it (see pyqmem.redrive)
"""

import argparse
import sys
from typing import NoReturn, Optional, Sequence


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """A usage mistake is one line on stderr and exit status 2 (--help has the usage)."""
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = _Parser(
        prog="pyqmem", description="pyqmem's command-line tools: queues and topics on this host."
    )
    sub = ap.add_subparsers(dest="command", required=True, parser_class=_Parser)
    rd = sub.add_parser("redrive", help="move dead-lettered records back to their topic")
    rd.add_argument("source", help="the topic the records came from")
    rd.add_argument("--dir", default=None, help="topics folder (default: as pyqmem.Topic)")
    rd.add_argument("--dead-letter", default=None, help="dead-letter topic (default SOURCE.dlq)")
    rd.add_argument("--max", type=int, default=None, help="move at most this many")
    rd.add_argument(
        "--wait", type=float, default=0.0, help="seconds to wait for more once drained (default 0)"
    )
    args = ap.parse_args(argv)
    from . import QmemError
    from .redrive import redrive

    try:
        moved = redrive(
            args.source,
            dir=args.dir,
            dead_letter=args.dead_letter,
            max_records=args.max,
            timeout=args.wait,
        )
    except (QmemError, ValueError, TypeError) as exc:
        print(f"pyqmem redrive: {exc}", file=sys.stderr)
        return 1
    print(f"moved {moved} record{'s' if moved != 1 else ''} back to {args.source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
