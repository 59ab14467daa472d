"""`python -m kldrift.local.setup`: install the local services' binaries into the cache, idempotently."""

from __future__ import annotations

from kldrift.local import flink, kafka, prism


def main() -> None:
    kafka.ensure_installed()
    prism.ensure_installed()
    flink.ensure_installed()


if __name__ == "__main__":
    main()
