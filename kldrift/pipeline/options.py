"""The one place that builds Beam pipeline options for kldrift's local default runner (Prism)."""

from __future__ import annotations

from collections.abc import Sequence

from apache_beam.options.pipeline_options import PipelineOptions


def _has_flag(args: Sequence[str], name: str) -> bool:
    return any(a == name or a.startswith(name + "=") for a in args)


def pipeline_options(extra_args: Sequence[str] = (), *, streaming: bool) -> PipelineOptions:
    """Options for a kldrift job: Prism (built locally) unless `extra_args` name another runner.

    `extra_args` are Beam pipeline flags passed through verbatim (`--runner FlinkRunner ...`).
    """
    args = list(extra_args)
    if not _has_flag(args, "--runner"):
        args.append("--runner=PrismRunner")
    runner = _runner_name(args)
    if runner in ("PrismRunner", "prism") and not _has_flag(args, "--prism_location"):
        from kldrift.local.prism import ensure_installed

        args.append(f"--prism_location={ensure_installed()}")
    from kldrift.local.flink import is_flink_runner

    if is_flink_runner(runner) and not _has_flag(args, "--flink_job_server_jar"):
        # Else Beam downloads its job server jar at run time; use the one set-up installed.
        from kldrift.local.flink import ensure_installed as ensure_flink

        args.append(f"--flink_job_server_jar={ensure_flink()}")
    if runner in ("PrismRunner", "prism", "FlinkRunner") and not _has_flag(
        args, "--environment_type"
    ):
        # No Docker here: run the Python SDK harness in this process.
        args.append("--environment_type=LOOPBACK")
    if streaming and not _has_flag(args, "--streaming"):
        args.append("--streaming")
    return PipelineOptions(args)


def _runner_name(args: Sequence[str]) -> str:
    for i, arg in enumerate(args):
        if arg.startswith("--runner="):
            return arg.split("=", 1)[1]
        if arg == "--runner" and i + 1 < len(args):
            return args[i + 1]
    return ""
