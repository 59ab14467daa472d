"""The one place that builds Beam pipeline options for kldrift jobs (Prism by default).

Installing a local runner is the CLI's business (it adds `--prism_location` or
`--flink_job_server_jar` for the runners it installs); the options here only follow the flags
given."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from apache_beam.options.pipeline_options import PipelineOptions


class JobServerStagingOptions(PipelineOptions):
    """Beam Java's ``pipelineResourcesDetectorFactoryClass`` (which files the Flink job server
    stages with a job), which the job server does not describe to Python: declared here so that
    Beam passes it on (`kldrift.local.flink_staging`)."""

    @classmethod
    def _add_argparse_args(cls, parser: Any) -> None:
        parser.add_argument(
            "--pipeline_resources_detector_factory_class",
            default=None,
            help="a Java PipelineResourcesDetector.Factory class: which files the Flink job "
            "server stages with a job (default: its whole class path)",
        )


def has_flag(args: Sequence[str], name: str) -> bool:
    """Whether `args` hold the flag `name` (as `--name` or `--name=value`)."""
    return any(a == name or a.startswith(name + "=") for a in args)


def pipeline_options(extra_args: Sequence[str] = (), *, streaming: bool) -> PipelineOptions:
    """Options for a kldrift job: Prism unless `extra_args` name another runner.

    `extra_args` are Beam pipeline flags passed through verbatim (`--runner FlinkRunner ...`).
    """
    args = list(extra_args)
    if not has_flag(args, "--runner"):
        args.append("--runner=PrismRunner")
    runner = runner_name(args)
    if (
        is_flink_runner(runner)
        and has_flag(args, "--checkpointing_interval")
        and not has_flag(args, "--finish_bundle_before_checkpointing")
    ):
        # Invariant: a bundle's output leaves before each checkpoint. Else Beam's Flink operators
        # buffer it until their next bundle starts (BEAM-10558, apache/beam#12345), and a step fed
        # once per window (Revise, Score) holds its reports for one or more periods.
        args.append("--finish_bundle_before_checkpointing")
    master = flag_value(args, "--flink_master")
    if (
        is_flink_runner(runner)
        and master not in (None, "[local]", "[auto]", "[collection]")
        and not has_flag(args, "--operator_chaining")
    ):
        # Invariant: a savepoint restores at another parallelism. Flink derives an operator's id
        # from the chained job graph, and Beam's Impulse runs at parallelism 1, so chains (and
        # ids) change with --parallelism: restoring a p=1 savepoint at p=2 failed with "Cannot
        # map checkpoint/savepoint state for operator ... to the new program". Beam's Python
        # side declares the job server's boolean options that default to true as store_false:
        # the bare flag turns chaining off.
        args.append("--operator_chaining")
    if runner in ("PrismRunner", "prism", "FlinkRunner") and not has_flag(
        args, "--environment_type"
    ):
        # No Docker here: run the Python SDK harness in this process.
        args.append("--environment_type=LOOPBACK")
    if streaming and not has_flag(args, "--streaming"):
        args.append("--streaming")
    return PipelineOptions(args)


def flag_value(args: Sequence[str], name: str) -> str | None:
    """The value of flag `name` in `args` (`--name=value` or `--name value`); None if absent."""
    for i, arg in enumerate(args):
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
        if arg == name and i + 1 < len(args):
            return args[i + 1]
    return None


def runner_name(args: Sequence[str]) -> str:
    return flag_value(args, "--runner") or ""


def is_flink_runner(name: str) -> bool:
    """`--runner` values that Beam resolves to its FlinkRunner (FlinkRunner, flink, dotted path)."""
    return name.rsplit(".", 1)[-1].lower() in ("flink", "flinkrunner")
