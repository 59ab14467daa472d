"""`python -m kldrift.local.flink_worker_pool --service_port=P`: Beam's Python worker pool for the
local Flink session cluster, with the SDK harness's usual state cache.

Beam's own `apache_beam.runners.worker.worker_pool_main` starts each worker with
``state_cache_size=0`` and takes no flag to change it (its servicer does); the boot program that
the Kubernetes worker image runs in ``--worker_pool`` mode gives its workers the pipeline's
options, whose state cache defaults to `STATE_CACHE_MB`. This starts the same servicer with that
cache, so the local cluster runs its Python steps as deployed, and binds it to 127.0.0.1 only
(Beam's binds every interface: anyone reaching it could start workers)."""

from __future__ import annotations

import argparse
import logging
import signal
import threading

import grpc
from apache_beam.portability.api import beam_fn_api_pb2_grpc
from apache_beam.runners.worker.worker_pool_main import BeamFnExternalWorkerPoolServicer
from apache_beam.utils import thread_pool_executor

STATE_CACHE_MB = 100
"""Beam's default `--state_cache_size` (MB) for an SDK harness."""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--service_port", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    server = grpc.server(
        thread_pool_executor.shared_unbounded_instance(),
        options=[("grpc.http2.max_pings_without_data", 0), ("grpc.http2.max_ping_strikes", 0)],
    )
    server.add_insecure_port(f"127.0.0.1:{args.service_port}")
    pool = BeamFnExternalWorkerPoolServicer(
        use_process=True, state_cache_size=STATE_CACHE_MB << 20, data_buffer_time_limit_ms=-1
    )
    beam_fn_api_pb2_grpc.add_BeamFnExternalWorkerPoolServicer_to_server(pool, server)
    server.start()
    logging.getLogger(__name__).info("worker pool at 127.0.0.1:%d", args.service_port)
    stopped = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopped.set())
    stopped.wait()
    server.stop(0)  # the workers are in this process group: the cluster's stop signals them too


if __name__ == "__main__":
    main()
