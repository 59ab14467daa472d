"""The local runners for `kldrift` commands: the CLI adds what Prism or Flink needs to a job's Beam
flags, and cleans up after a streaming job; the pipelines themselves install nothing."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from kldrift.pipeline.options import flag_value, has_flag, is_flink_runner, runner_name

if TYPE_CHECKING:
    from kldrift.local.worker_processes import WorkerPool


def local_runner_args(beam_args: Sequence[str]) -> list[str]:
    """`beam_args` plus the locally installed runner binary they need: `--prism_location` for
    Prism (the default runner), `--flink_job_server_jar` for FlinkRunner (else Beam downloads it
    at run time). Flags already given win."""
    args = list(beam_args)
    runner = runner_name(args) or "PrismRunner"
    if runner in ("PrismRunner", "prism") and not has_flag(args, "--prism_location"):
        from kldrift.local.prism import ensure_installed

        args.append(f"--prism_location={ensure_installed()}")
    if is_flink_runner(runner) and not has_flag(args, "--flink_job_server_jar"):
        from kldrift.local.flink import ensure_installed as ensure_flink

        args.append(f"--flink_job_server_jar={ensure_flink()}")
    master = flag_value(args, "--flink_master")
    if is_flink_runner(runner) and master:
        # `kldrift local flink`'s cluster: its Python worker pool, as on Kubernetes, and the
        # runner's jars read from this machine's disk rather than staged with the job.
        from kldrift.local.flink_cluster import local_cluster_args

        args.extend(local_cluster_args(master, args))
    return args


def worker_process_args(beam_args: Sequence[str]) -> tuple[list[str], WorkerPool]:
    """`beam_args` plus an EXTERNAL environment served by a pool of worker processes started here
    (kldrift.local.worker_processes), for `kldrift run --worker-processes` on Prism (one process
    per environment: the job's layout gives each reader one), and the pool (it stops when this
    process exits). UserError on another runner or a given environment."""
    from kldrift.exceptions import UserError
    from kldrift.local.worker_processes import WorkerPool

    args = list(beam_args)
    if runner_name(args) not in ("", "PrismRunner", "prism"):
        raise UserError(
            "--worker-processes is for Prism (the default runner); on Flink, task slots "
            "(--parallelism) and --sdk_worker_parallelism set the workers"
        )
    if has_flag(args, "--environment_type"):
        raise UserError("--worker-processes sets the SDK environment: drop --environment_type")
    pool = WorkerPool()
    return [*args, "--environment_type=EXTERNAL", f"--environment_config={pool.address}"], pool


def prepare_streaming(beam_args: Sequence[str]) -> None:
    """Before `kldrift run` starts its job: make an embedded Flink cluster restore
    `--savepoint_path` (restore_embedded_flink), and stop, at exit, the job server or Prism
    children Beam's shutdown left running."""
    savepoint = flag_value(beam_args, "--savepoint_path")
    if savepoint is not None:
        restore_embedded_flink(savepoint, beam_args)
    # Registered before Beam's own exit handlers, so it runs after them (atexit is LIFO).
    from kldrift.local.children import stop_leftover_children

    atexit.register(stop_leftover_children)


def restore_embedded_flink(savepoint: str, beam_args: Sequence[str]) -> None:
    """Make Beam's embedded Flink cluster restore `savepoint` (see flink.restore_conf_dir)."""
    from kldrift.local import flink

    master = flag_value(beam_args, "--flink_master") or "[auto]"  # Beam's default
    if not is_flink_runner(runner_name(beam_args)) or master not in flink.EMBEDDED_MASTERS:
        return  # a remote Flink cluster restores --savepoint_path itself
    conf_dir = flink.restore_conf_dir(savepoint, Path(tempfile.mkdtemp(prefix="kldrift-flink-")))
    atexit.register(shutil.rmtree, conf_dir, True)
    os.environ["FLINK_CONF_DIR"] = str(conf_dir)
