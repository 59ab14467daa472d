"""`python -m kldrift.local.setup`: install the local services' binaries into the cache, idempotently."""

from __future__ import annotations

import logging
import sys


def main() -> None:
    # Beam's GCP extras warn at import about a client library kldrift does not use (as in the CLI).
    logging.getLogger().addFilter(lambda record: "apitools" not in record.getMessage())
    from kldrift.local import flink, flink_cluster, kafka, prism, prometheus, registry

    kafka.ensure_installed()
    prism.ensure_installed()
    flink.ensure_installed()
    registry.ensure_installed()
    flink_cluster.ensure_dist_installed()
    try:
        prometheus.ensure_installed()
    except prometheus.PrometheusSetupError as err:
        # Only the monitoring tests need it; they fail naming this, the rest of kldrift works.
        print(f"setup: WARNING: {err}", file=sys.stderr)


if __name__ == "__main__":
    main()
