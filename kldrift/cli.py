"""The `kldrift` command: sub-commands for local services, baseline, replay, streaming run and demo."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


class UserError(Exception):
    """An error the user can fix: printed as one line, exit code 2."""


def _add_local(sub: argparse._SubParsersAction) -> None:
    local = sub.add_parser("local", help="local development services")
    local_sub = local.add_subparsers(dest="service", required=True)
    kafka = local_sub.add_parser("kafka", help="a real single-node Kafka broker (KRaft) on 127.0.0.1")
    kafka.add_argument("action", choices=["start", "stop", "status"])

    def run(args: argparse.Namespace) -> int:
        from kldrift.local import kafka as local_kafka

        return local_kafka.cli(args.action)

    kafka.set_defaults(func=run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kldrift", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_local(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"kldrift: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kldrift: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
