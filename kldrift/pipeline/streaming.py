"""`kldrift run`: Kafka topic -> SlidingKLDivergence -> report topic + dead-letter topic."""

from __future__ import annotations

import atexit
import logging
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import apache_beam as beam

from kldrift import metrics
from kldrift.events import NO_WATERMARK
from kldrift.exceptions import ResumeMismatch as ResumeMismatch
from kldrift.formats.registry import shown_url
from kldrift.io import kafka_log
from kldrift.io.acked import PublishAcknowledged
from kldrift.io.baselines import BaselineTopic, topic_of
from kldrift.io.kafka_client import (
    KafkaSetupError,
    ensure_topics,
    masked,
    partitions_of,
    start_offsets,
)
from kldrift.io.kafka_sink import WriteDeadLetters, WriteReports
from kldrift.io.kafka_source import (
    ReaderStart,
    ReadEventsFromKafka,
    ReadEventsPerReader,
    reader_starts,
)
from kldrift.io.outage import DropOutageTraces, KafkaOutageError, on_timeout, outage_line
from kldrift.io.resume import (
    ResumePoint,
    complete_from_us,
    geometry_change,
    read_resume_point,
    reset_for_window,
)
from kldrift.pipeline.flink_rest import cancel_running, flink_job_name, remote_master
from kldrift.pipeline.heap import older_objects_frozen
from kldrift.pipeline.options import flag_value, is_flink_runner, pipeline_options, runner_name
from kldrift.schemas.baseline import Baseline
from kldrift.schemas.config import KafkaSpec, PipelineConfig
from kldrift.transforms.batches import DEAD_LETTERS, REPORTS, SUMMARIES, SlidingKLFromBatches


def group_id_of(config: PipelineConfig) -> str:
    assert config.kafka is not None
    return config.kafka.group_id or f"kldrift.{config.name}"


def baseline_updates(config: PipelineConfig) -> BaselineTopic | None:
    """A watcher of the config's kafka:// baseline topic, when the job runs on it."""
    topic = topic_of(config.baseline or "")
    if topic is None or config.kafka is None:
        return None
    return BaselineTopic(config.kafka, topic, refresh_s=config.baseline_refresh)


def build_streaming(
    pipeline: beam.Pipeline,
    config: PipelineConfig,
    baseline: Baseline,
    starts: list[ReaderStart],
    resume: ResumePoint | None = None,
    worker_processes: bool = False,
) -> None:
    """The job's steps. `worker_processes`: each reader reads in a step (and, on Prism, an SDK
    worker) of its own, and bins its batches there (ReadEventsPerReader)."""
    assert config.kafka is not None
    updates = baseline_updates(config)
    group_id = group_id_of(config)
    read = (
        ReadEventsPerReader(config, starts, group_id)
        if worker_processes
        else ReadEventsFromKafka(config, starts, group_id)
    )
    outputs = (
        pipeline
        | "ReadFromKafka" >> read
        | "SlidingKLDivergence" >> SlidingKLFromBatches(config, baseline, updates, resume)
    )
    # A window's summary goes to the report topic beside its features' reports, each through a
    # sink of its own fused with Score: on Prism a Flatten of the two ran as two stages more
    # between Score and the sink (about 0.09 s of a 2 s backlog), the records crossing it encoded.
    written = (
        outputs[REPORTS] | "WriteReports" >> WriteReports(config.kafka),
        outputs[SUMMARIES] | "WriteSummaries" >> WriteReports(config.kafka),
        outputs[DEAD_LETTERS] | "WriteDeadLetters" >> WriteDeadLetters(config.kafka),
    )
    if config.kafka.commit_offsets:
        run = starts[0].run if starts else ""
        _ = written | "Acknowledged" >> PublishAcknowledged(config.kafka, group_id_of(config), run)


def resolve_starts(
    config: PipelineConfig, reset_resume: bool = False
) -> tuple[list[ReaderStart], ResumePoint | None]:
    """Create or check topics, discover the input's partitions and where to start in each; with
    `start_from: committed`, also what previous runs reported and read (None: a first run).
    A resume point written with another window is refused (ResumeMismatch) unless `reset_resume`
    (see kldrift.io.resume.reset_for_window)."""
    spec = config.kafka
    assert spec is not None
    ensure_topics(
        spec,
        {spec.input_topic: 1, spec.output_topic: 1, spec.dead_letter_topic: 1},
        create=spec.create_topics,
    )
    partitions = partitions_of(spec, spec.input_topic)
    group_id = group_id_of(config)
    offsets = start_offsets(spec, spec.input_topic, partitions, group_id)
    resume = None
    if spec.start_from == "committed":
        resume = read_resume_point(spec, spec.input_topic, partitions, group_id)
        if resume is not None:
            resume = checked_resume(config, resume, group_id, reset_resume)
    starts = reader_starts(
        spec.input_topic,
        dict(zip(partitions, offsets, strict=True)),
        spec.readers,
        run=uuid.uuid4().hex[:16],
        resume_from=resume,
    )
    return starts, resume


def checked_resume(
    config: PipelineConfig, resume: ResumePoint, group_id: str, reset_resume: bool
) -> ResumePoint:
    """`resume` if it was written with this config's window; with `reset_resume`, one for the new
    window (reporting only windows complete from the committed offsets on); else ResumeMismatch
    naming the change and the choices."""
    spec = config.window
    window = (spec.size_us, spec.period_us, spec.allowed_lateness_us)
    change = geometry_change(resume, window)
    if change is None:
        return resume
    if reset_resume:
        return reset_for_window(resume, window)
    first = datetime.fromtimestamp(complete_from_us(resume) / 1e6, UTC).isoformat()
    raise ResumeMismatch(
        f"group {group_id} was committed with another window ({change}): resuming from its "
        f"offsets would report partial windows. Pass --reset-resume to resume anyway (windows "
        f"starting before {first} are then not reported), or set kafka.group_id to a new group "
        "(with start_from: earliest or timestamp) to start afresh"
    )


def _resume_line(resume: ResumePoint | None) -> list[str]:
    if resume is None:
        return []
    read_to = ", ".join(f"p{p}<{o}" for (_, p), o in sorted(resume.read_to.items()))
    if resume.floor_us == NO_WATERMARK:
        reported = "no window was known reported by previous runs"
    else:
        floor = datetime.fromtimestamp(resume.floor_us / 1e6, UTC).isoformat()
        reported = f"windows closed by {floor} were reported by previous runs"
    return [f"  resumes  {reported}; they read {read_to}"]


def banner(
    config: PipelineConfig,
    baseline: Baseline,
    starts: list[ReaderStart],
    runner: str,
    resume: ResumePoint | None = None,
    restore: str | None = None,
) -> str:
    spec = config.kafka
    assert spec is not None
    offsets = ", ".join(f"p{p}@{o}" for s in starts for p, o in s.offsets)
    settings = masked(spec.client)
    lines = [
        f"kldrift run: pipeline {config.name!r} on {runner}",
        f"  reads    {spec.input_topic} at {spec.bootstrap_servers} ({spec.start_from}: {offsets}; "
        f"{len(starts)} reader(s))",
        f"  writes   reports -> {spec.output_topic}, dead letters -> {spec.dead_letter_topic}",
        f"  baseline {baseline.id[:12]} ({len(baseline.features)} features, {baseline.source})"
        + _watching(config),
        f"  windows  {config.window.size:g} s every {config.window.period:g} s, "
        f"allowed lateness {config.window.allowed_lateness:g} s, idle timeout "
        f"{spec.idle_timeout:g} s",
    ]
    lines += _resume_line(resume)
    if restore is not None:
        lines.append(
            f"  restores Flink state from {restore}: read positions and open windows come from "
            "it, not from committed offsets"
        )
    if settings:
        lines.append(f"  client   {settings}")
    if spec.schema_registry is not None and spec.format != "json":
        registry = shown_url(spec.schema_registry.url)
        lines.append(f"  format   {spec.format}, writer schemas from {registry}")
        if spec.schema_registry.client:
            lines.append(f"  registry {masked(spec.schema_registry.client)}")
    return "\n".join(lines)


def _runner_of(options: beam.options.pipeline_options.PipelineOptions) -> str:
    from apache_beam.options.pipeline_options import StandardOptions

    return str(options.view_as(StandardOptions).runner)


def _watching(config: PipelineConfig) -> str:
    if baseline_updates(config) is None:
        return ""
    return f"; watching {config.baseline} every {config.baseline_refresh:g} s"


def run_streaming(
    config: PipelineConfig,
    baseline: Baseline,
    beam_args: Sequence[str] = (),
    reset_resume: bool = False,
    stop_runner: Callable[[], object] | None = None,
    worker_processes: bool = False,
    stopping: Callable[[], object] | None = None,
) -> int:
    """Run until cancelled; Ctrl-C (SIGINT) or SIGTERM cancels the job cleanly and returns 130 or
    143 (128 + the signal's number, the shell's convention).

    `beam_args` must already name what the runner needs: the CLI adds a local Prism or Flink, and
    sets an embedded Flink cluster up to restore --savepoint_path, before calling this. The runner
    processes started here ignore Ctrl-C; `stop_runner` stops them after a stop (the CLI stops
    its Prism or job server children). `reset_resume`: see resolve_starts. `worker_processes`:
    (Prism) the job's steps as build_streaming lays them out for worker processes (the CLI has
    set up the environment that starts them, kldrift.local.runners.worker_process_args); `stopping` is
    called when a stop begins, before the cancel (the CLI quiets its worker processes' output)."""
    spec: KafkaSpec | None = config.kafka
    if spec is None:
        raise KafkaSetupError("the config has no `kafka:` section")
    starts, resume = resolve_starts(config, reset_resume)
    restore = savepoint_of(beam_args)
    if restore is not None:
        resume = None  # the restored state is the truth; its readers resume where it says
    options = pipeline_options(beam_args, streaming=True)
    print(
        banner(config, baseline, starts, _runner_of(options), resume, restore),
        file=sys.stderr,
        flush=True,
    )
    for handler in logging.getLogger().handlers:  # an outage's traces: said once at the end
        handler.addFilter(DropOutageTraces())
    pipeline = beam.Pipeline(options=options)
    build_streaming(pipeline, config, baseline, starts, resume, worker_processes)
    flink_rest = (
        remote_master(flag_value(beam_args, "--flink_master"))
        if is_flink_runner(runner_name(beam_args))
        else None
    )
    with older_objects_frozen():
        with _runner_ignores_ctrl_c():
            result = pipeline.run()
        return _wait_or_cancel(
            result,
            metrics_served=not is_flink_runner(runner_name(beam_args)),
            stop_runner=stop_runner,
            flink_rest=flink_rest,
            stopping=stopping,
        )


@contextmanager
def _runner_ignores_ctrl_c() -> Iterator[None]:
    """The runner processes started meanwhile (Prism; Flink's job server) inherit an ignored SIGINT.
    A Ctrl-C at a terminal goes to the whole foreground process group: a runner killed by it
    would end the job under kldrift run (no cancel, no totals, the SDK worker's tracebacks).
    kldrift run cancels the job and stops them itself (a Ctrl-C while the job starts, a few
    seconds, is ignored)."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def savepoint_of(beam_args: Sequence[str]) -> str | None:
    """The Flink checkpoint or savepoint a job restores from (`--savepoint_path`), if any."""
    return flag_value(beam_args, "--savepoint_path")


STATE_POLL_S = 1.0


def _cancel_on_flink(rest: str, result: Any) -> None:
    """Cancel the job on the remote Flink cluster at `rest`, saying what happened."""
    name = flink_job_name(str(result._job_id))
    try:
        cancelled = cancel_running(rest, name)
    except Exception as err:  # unreachable cluster: say so, the user cancels it there
        print(
            f"kldrift run: could not cancel Flink job {name} at {rest}: {type(err).__name__}: "
            f"{err}; cancel it in Flink's web UI",
            file=sys.stderr,
        )
        return
    for jid in cancelled:
        print(f"kldrift run: cancelled Flink job {jid} ({name}) at {rest}", file=sys.stderr)


def _job_state(result: Any) -> str:
    """The job's state, asked afresh. Not wait_until_finish(): Beam's state stream times out after
    --job_server_timeout (300 s) and then returns while the job still runs."""
    try:
        return str(result.state)
    except Exception as err:  # the job service went away: the job is over
        return f"UNKNOWN ({type(err).__name__})"


def _wait_or_cancel(
    result: Any,
    metrics_served: bool = True,
    stop_runner: Callable[[], object] | None = None,
    flink_rest: str | None = None,
    stopping: Callable[[], object] | None = None,
) -> int:
    """Wait until the job ends or SIGINT/SIGTERM asks to stop; then cancel it cleanly and return
    128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM), or 1 if Kafka was unreachable
    for too long. `flink_rest`: a remote Flink cluster's REST address, where the job is cancelled
    too (Beam's job server leaves it running there). `stopping`: called before the cancel."""
    from apache_beam.runners.runner import PipelineState

    stop = threading.Event()
    signals: list[int] = []
    gave_up: list[KafkaOutageError] = []

    def request_stop(signum: int, _frame: Any) -> None:
        signals.append(signum)
        stop.set()

    def outage_too_long(err: KafkaOutageError) -> None:
        gave_up.append(err)
        stop.set()

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    on_timeout(outage_too_long)  # an in-process harness's reader or sink gave up: stop here
    try:
        state = _job_state(result)
        while not stop.is_set() and not _ended(state, PipelineState):
            stop.wait(STATE_POLL_S)
            state = _job_state(result)
        if not stop.is_set():
            print(f"kldrift run: job ended ({state})", file=sys.stderr)
            if "DONE" not in state:
                _print_failure(result)
            _print_totals(result, metrics_served)
            return 0 if "DONE" in state else 1
        if gave_up:
            print(f"kldrift: error: {gave_up[0]}", file=sys.stderr, flush=True)
        else:
            print("kldrift run: stopping (cancelling the job)", file=sys.stderr, flush=True)
        _quiet_worker_stop()
        if stopping is not None:
            stopping()
        try:
            result.cancel()
        except Exception as err:  # a job that is already ending may refuse the cancel
            print(f"kldrift run: cancel: {type(err).__name__}: {err}", file=sys.stderr)
        if flink_rest is not None:
            _cancel_on_flink(flink_rest, result)
        _await_worker_stop()
        _print_totals(result, metrics_served)
        if stop_runner is not None:  # it ignores SIGINT (_runner_ignores_ctrl_c)
            stop_runner()
        print("kldrift run: stopped", file=sys.stderr, flush=True)
        return 1 if gave_up else 128 + signals[0]
    finally:
        on_timeout(None)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


WORKER_STOP_S = 1.0
"""How long a stop waits, at most, for the runner to stop the job's SDK worker in this process
(Prism does at once; Flink's job server leaves it running until this process exits)."""
WORKER_THREAD = "run_worker_"
"""How Beam names the thread of each SDK worker it runs in this process (LOOPBACK)."""
WORKER_SETTLE_S = 0.5
"""After the worker stopped: time for the bundle it was running to end (its next poll, 0.1 s)."""


def _worker_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(WORKER_THREAD)]


def _await_worker_stop() -> None:
    """Until the runner has stopped the cancelled job's SDK worker in this process, and the bundle
    it was running has ended, at most WORKER_STOP_S: the totals are then final."""
    if not _worker_threads():
        return
    deadline = time.monotonic() + WORKER_STOP_S
    while _worker_threads():
        if time.monotonic() >= deadline:
            return
        time.sleep(0.1)
    time.sleep(WORKER_SETTLE_S)


def _quiet_worker_stop() -> None:
    """From the cancel until this process ends, the cancelled job's aftermath stays off the
    terminal. When the runner stops the SDK worker in this process (Prism: at the cancel; Flink:
    when Beam destroys its job server at exit), Beam tears the DoFns down under the bundle still
    running (BundleProcessorCache.shutdown discards active bundles: the reader's consumer is closed
    mid-poll, IllegalStateError, or the bundle's end finds its processor gone, KeyError; on Flink
    the data channel closes under it) and prints and logs that bundle's traceback, about 40 lines
    each, and its gRPC threads die with theirs; Prism logs the bundle as failed ('pipeline
    canceled'), and Beam says it destroys the job server. The job is over: none of it is for the
    operator; nor are the Kafka connections the stopping job closes mid-request."""
    kafka_log.quiet()
    noise = _StopNoise()
    for handler in logging.getLogger().handlers:
        handler.addFilter(noise)
    sys.stderr = _NoTracebacks(sys.stderr)
    atexit.register(_no_tracebacks_at_exit)
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if not type(args.exc_value).__module__.startswith("grpc"):
            previous(args)

    threading.excepthook = hook


def _no_tracebacks_at_exit() -> None:
    """At exit, before Beam destroys the job server (its atexit handler was registered earlier, so
    runs later): the stderr that user_errors put back, without tracebacks too."""
    if not isinstance(sys.stderr, _NoTracebacks):
        sys.stderr = _NoTracebacks(sys.stderr)


class _StopNoise(logging.Filter):
    """Log records of a stopped job's worker and runner: tracebacks, a cancelled bundle, Prism's
    end, and Prism's warning when the cancelled bundle's worker still asks it for state (seen once
    in a loaded test run: `WARNING:PrismRunner:state request after bundle inactive`)."""

    MARKS = (
        "Traceback (most recent call last)",
        "pipeline canceled",
        "Really destroying service",
        "state request after bundle inactive",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info:
            return False
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: not ours to judge
            return True
        return not any(mark in message for mark in self.MARKS)


class _NoTracebacks:
    """stderr without the tracebacks Beam's SDK worker prints itself (print(), not logging)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._dropped = False

    def write(self, text: str) -> int:
        dropped, self._dropped = self._dropped, False
        if "Traceback (most recent call last)" in text:
            self._dropped = True
            return len(text)
        if dropped and text == "\n":  # print()'s end of the dropped traceback
            return len(text)
        return int(self._stream.write(text))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _ended(state: str, pipeline_state: Any) -> bool:
    if state.startswith("UNKNOWN ("):
        return True
    name = state.rsplit(".", 1)[-1]
    return bool(pipeline_state.is_terminal(name))


def _print_failure(result: Any) -> None:
    try:
        result.wait_until_finish()  # returns at once for an ended job; raises with its error
    except Exception as err:
        outage = outage_line(str(err))
        if outage is not None:  # one line, not the runner's traceback
            print(f"kldrift: error: {outage}", file=sys.stderr)
            return
        print(f"kldrift run: job failed: {err}", file=sys.stderr)


TOTALS = metrics.TOTALS


def job_totals(result: Any) -> dict[str, int]:
    """The job's kldrift counters (0 where a runner reported none)."""
    totals = dict.fromkeys(TOTALS, 0)
    try:
        counters = result.metrics().query()["counters"]
    except Exception:  # a cancelled job's runner may no longer serve metrics
        return totals
    for counter in counters:
        if counter.key.metric.namespace == metrics.NAMESPACE and counter.key.metric.name in totals:
            totals[counter.key.metric.name] += counter.committed or counter.attempted or 0
    return totals


def _print_totals(result: Any, metrics_served: bool = True) -> None:
    totals = job_totals(result)
    if not metrics_served and not any(totals.values()):
        # Beam's Flink job service answers metrics only for a finished job; a streaming job is
        # cancelled, never finished: all zeros would be a lie.
        print(
            "kldrift run: totals: not available from FlinkRunner (its job service serves a job's "
            "metrics only once the job has finished); see Flink's web UI or metrics reporters",
            file=sys.stderr,
            flush=True,
        )
        return
    print(
        "kldrift run: totals: " + ", ".join(f"{name} {value}" for name, value in totals.items()),
        file=sys.stderr,
        flush=True,
    )
