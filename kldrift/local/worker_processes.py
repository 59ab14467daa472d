"""SDK workers as processes of their own, for `kldrift run --worker-processes`: a core each.

Beam's LOOPBACK environment runs every SDK worker as a thread of the submitting process, so the
whole job shares one GIL: one core. Prism starts one worker per environment of the pipeline and
runs stages of different environments concurrently; under the option kldrift's reader steps each
get an environment of their own (kldrift.io.kafka_source.ReadEventsPerReader), and `WorkerPool`
answers the runner's requests for workers (Prism's per environment; Flink's per task slot, with
`--sdk_worker_parallelism`) by starting each as a child process running `python -m
kldrift.local.worker_processes` (an SdkHarness, as Beam's own worker pool starts in its process
mode).

Prism 2.78 keeps one table of metric short ids per job (jobservices/metrics.go), while each SDK
process numbers its own from 1: two worker processes would give one id two meanings and Prism
panics decoding a counter's payload as another metric's. Each worker process here numbers its
short ids from its pid shifted left by 32 bits, so no two live workers share one.

The workers' output goes to this process's stderr (the terminal of `kldrift run`), as the
in-process worker's did, until `quiet()` (a stop: the cancelled bundles' tracebacks are not for
the operator). They run in sessions of their own, so a Ctrl-C at the terminal reaches only
`kldrift run`, which cancels the job; the runner then asks the pool to stop them, and the pool
kills what is left when it stops or the process that started it exits.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import subprocess
import sys
import threading
from concurrent import futures
from typing import Any

SHORT_ID_SHIFT = 32
"""A worker's metric short ids start at its pid shifted left by this many bits."""
STOP_S = 5.0
"""How long a worker process gets to end after SIGTERM before it is killed."""
STATE_CACHE_MB = 100
"""Beam's default `--state_cache_size` (MB) for an SDK harness (LOOPBACK's workers use it)."""


class WorkerPool:
    """A BeamFnExternalWorkerPool service on 127.0.0.1 that starts each SDK worker as a child
    process. `address` is for `--environment_config`; `stop()` ends the service and its workers."""

    def __init__(self) -> None:
        import grpc
        from apache_beam.portability.api import beam_fn_api_pb2_grpc

        self._workers: dict[str, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        port = self._server.add_insecure_port("127.0.0.1:0")
        beam_fn_api_pb2_grpc.add_BeamFnExternalWorkerPoolServicer_to_server(
            _Servicer(self), self._server
        )
        self._server.start()
        self.address = f"127.0.0.1:{port}"
        self._quiet = threading.Event()
        atexit.register(self.stop)

    def start_worker(self, worker_id: str, control_url: str) -> None:
        command = [sys.executable, "-m", __name__, control_url, worker_id]
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        with self._lock:
            self._workers[worker_id] = process
        threading.Thread(
            target=self._forward, args=(process,), name=f"worker-output-{process.pid}", daemon=True
        ).start()

    def _forward(self, process: subprocess.Popen[bytes]) -> None:
        """A worker's output, line by line, to this process's stderr until quiet()."""
        assert process.stdout is not None
        for line in process.stdout:
            if not self._quiet.is_set():
                sys.stderr.write(line.decode(errors="replace"))
                sys.stderr.flush()

    def quiet(self) -> None:
        """From now on the workers' output is dropped: a cancelled job's workers log the bundles
        that the cancel cut short (tracebacks; the in-process worker's are kept off the terminal
        likewise, kldrift.pipeline.streaming)."""
        self._quiet.set()

    def stop_worker(self, worker_id: str) -> None:
        with self._lock:
            process = self._workers.pop(worker_id, None)
        if process is not None:
            _end(process)

    def pids(self) -> list[int]:
        """The pids of the worker processes running now."""
        with self._lock:
            return [p.pid for p in self._workers.values() if p.poll() is None]

    def stop(self) -> None:
        with self._lock:
            processes, self._workers = list(self._workers.values()), {}
        for process in processes:
            _end(process)
        self._server.stop(0)


def _end(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(STOP_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _servicer_base() -> Any:
    from apache_beam.portability.api import beam_fn_api_pb2_grpc

    return beam_fn_api_pb2_grpc.BeamFnExternalWorkerPoolServicer


class _Servicer(_servicer_base()):  # type: ignore[misc]
    def __init__(self, pool: WorkerPool) -> None:
        self._pool = pool

    def StartWorker(self, request: Any, context: Any) -> Any:
        from apache_beam.portability.api import beam_fn_api_pb2

        try:
            self._pool.start_worker(request.worker_id, request.control_endpoint.url)
        except OSError as err:
            return beam_fn_api_pb2.StartWorkerResponse(error=f"{type(err).__name__}: {err}")
        return beam_fn_api_pb2.StartWorkerResponse()

    def StopWorker(self, request: Any, context: Any) -> Any:
        from apache_beam.portability.api import beam_fn_api_pb2

        self._pool.stop_worker(request.worker_id)
        return beam_fn_api_pb2.StopWorkerResponse()


def run_worker(control_url: str, worker_id: str) -> None:
    """One SDK worker (this process) for Prism's `control_url`, until Prism or SIGTERM ends it."""
    from kldrift.cli import configure_logging

    configure_logging()  # first: Beam's imports warn about what kldrift does not use

    from apache_beam.runners.worker import sdk_worker

    from kldrift.io.outage import DropOutageTraces

    # Beam's own warnings and errors, as the in-process worker's reached the terminal; an
    # outage's traces are left to kldrift run's one line about the failed job.
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(logging.Formatter("%(levelname)s:%(name)s:%(message)s"))
    stderr.addFilter(DropOutageTraces())
    logging.getLogger().addHandler(stderr)
    logging.getLogger().setLevel(logging.WARNING)
    sdk_worker.SHORT_ID_CACHE._last_short_id = os.getpid() << SHORT_ID_SHIFT
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    sdk_worker.SdkHarness(
        control_url, worker_id=worker_id, state_cache_size=STATE_CACHE_MB << 20
    ).run()


if __name__ == "__main__":
    run_worker(sys.argv[1], sys.argv[2])
