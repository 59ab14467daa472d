"""Helpers for the packagings in ``deploy/``: the Dataflow Flex Template's metadata and launcher, and
small parsers the offline packaging tests use.

* `dataflow_metadata()` builds the Flex Template metadata from the config schema (the Kafka
  parameters are `KafkaSpec` fields, with their descriptions, enums and bounds):
  ``python -m kldrift.deploy dataflow-metadata > deploy/dataflow/metadata.json``.
* `launch_dataflow(argv)` is what ``deploy/dataflow/main.py`` runs on the template's launcher VM:
  template parameters -> the same steps as ``kldrift run`` (load and check config and baseline,
  resolve Kafka offsets, build the streaming pipeline), submitted to Dataflow without waiting.
* `dockerfile_instructions()`, `dockerfile_args()`, `dockerfile_from_images()`: what a Dockerfile
  pins, for the packaging tests.
"""

from __future__ import annotations

import json
import posixpath
import re
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kldrift.schemas.baseline import Baseline
from kldrift.schemas.config import KafkaSpec, PipelineConfig

TEMPLATE_NAME = "kldrift streaming drift detection"
TEMPLATE_DESCRIPTION = (
    "kldrift run on Dataflow: reads JSON events from a Kafka topic, keeps sliding event-time "
    "histograms per feature and writes the KL divergence (bits) of every window from the "
    "training baseline, with a p-value and a drift flag, to a Kafka topic; records that cannot "
    "be binned go to a dead-letter topic."
)
RUN_PARAMETERS = ("config", "baseline")
"""Template parameters that are `kldrift run` flags (``--config``, ``--baseline``)."""
KAFKA_PARAMETERS = (
    "bootstrap_servers",
    "input_topic",
    "output_topic",
    "dead_letter_topic",
    "group_id",
    "start_from",
    "start_timestamp",
    "readers",
)
"""Template parameters that override the config's `kafka.<name>` (`KafkaSpec` fields)."""

_GCS_FILE = r"^gs:\/\/[^\n\r]+$"
_BASELINE_LOCATION = r"^(gs|kafka):\/\/[^\n\r]+$"
# Kafka's own rules for values the schema only knows as non-empty text.
_FORMATS = {
    "bootstrap_servers": r"^[^\s,]+:[0-9]+(,[^\s,]+:[0-9]+)*$",
    "input_topic": r"^[a-zA-Z0-9._-]{1,249}$",
    "output_topic": r"^[a-zA-Z0-9._-]{1,249}$",
    "dead_letter_topic": r"^[a-zA-Z0-9._-]{1,249}$",
}
_NOTES = {
    "readers": "On Dataflow use the input topic's partition count: each reader is one element of "
    "the splittable read, so readers run in parallel on the workers.",
    "start_from": "Used when a new job starts; an --update keeps the running job's read positions.",
}


def _label(name: str) -> str:
    return "Kafka " + name.replace("_", " ")


def _schema_type(schema: Mapping[str, Any]) -> Mapping[str, Any]:
    """The non-null branch of an optional field's schema (`X | None` is anyOf [X, null])."""
    for option in schema.get("anyOf", []):
        if option.get("type") != "null":
            return {**schema, **option}
    return schema


def _regex(name: str, schema: Mapping[str, Any]) -> str:
    if name in _FORMATS:
        return _FORMATS[name]
    if "enum" in schema:
        return "^(" + "|".join(re.escape(str(value)) for value in schema["enum"]) + ")$"
    if schema.get("type") == "integer":
        return r"^[1-9][0-9]*$" if schema.get("minimum", 0) >= 1 else r"^[0-9]+$"
    if schema.get("type") == "number":
        return r"^[0-9]+(\.[0-9]+)?$"
    return r"^[^\n\r]+$"


def _kafka_parameter(name: str, schema: Mapping[str, Any]) -> dict[str, Any]:
    schema = _schema_type(schema)
    description = str(schema["description"])
    default = schema.get("default")
    default_text = "" if default is None else f" Config default: {default}."
    parameter: dict[str, Any] = {
        "name": name,
        "label": _label(name),
        "helpText": f"Overrides kafka.{name} of the config: {description}.{default_text}"
        + (f" {_NOTES[name]}" if name in _NOTES else ""),
        "isOptional": True,
        "regexes": [_regex(name, schema)],
    }
    if "enum" in schema:
        parameter["paramType"] = "ENUM"
        parameter["enumOptions"] = [{"value": str(value)} for value in schema["enum"]]
    else:
        parameter["paramType"] = "TEXT"
    return parameter


def dataflow_metadata() -> dict[str, Any]:
    """The Flex Template metadata (``deploy/dataflow/metadata.json``), built from the schema."""
    kafka_fields = KafkaSpec.model_json_schema()["properties"]
    parameters: list[dict[str, Any]] = [
        {
            "name": "config",
            "label": "kldrift config (YAML or JSON)",
            "helpText": "The job's config, as `kldrift run --config`: a gs:// path, read with "
            "Beam FileSystems and copied to a local file at launch. "
            "Example: gs://my-bucket/kldrift/config.yaml",
            "isOptional": False,
            "regexes": [_GCS_FILE],
            "paramType": "GCS_READ_FILE",
        },
        {
            "name": "baseline",
            "label": "Baseline (kldrift baseline)",
            "helpText": "As `kldrift run --baseline`: the baseline JSON written by `kldrift "
            "baseline`, or kafka://TOPIC (the newest baseline published there; the job picks "
            "up newer ones). Default: the config's `baseline:`, a relative path resolved next to "
            "the config file. Example: gs://my-bucket/kldrift/baseline.json",
            "isOptional": True,
            "regexes": [_BASELINE_LOCATION],
            "paramType": "TEXT",
        },
    ]
    parameters += [_kafka_parameter(name, kafka_fields[name]) for name in KAFKA_PARAMETERS]
    return {
        "name": TEMPLATE_NAME,
        "description": TEMPLATE_DESCRIPTION,
        "streaming": True,
        # At-least-once mode may process a record twice: histograms would count it twice.
        "supportsExactlyOnce": True,
        "supportsAtLeastOnce": False,
        "parameters": parameters,
    }


def dataflow_metadata_json() -> str:
    """`dataflow_metadata()` as written to ``deploy/dataflow/metadata.json``."""
    return json.dumps(dataflow_metadata(), indent=2) + "\n"


# --- the Flex Template launcher (deploy/dataflow/main.py) -------------------------------------


@dataclass(frozen=True)
class TemplateArgs:
    """The template's own parameters; every other argument is a Beam pipeline option."""

    config: str
    baseline: str | None = None
    kafka: dict[str, str] = field(default_factory=dict)


def parse_template_args(argv: Sequence[str]) -> tuple[TemplateArgs, list[str]]:
    """Split ``--name=value`` template parameters from the Beam options the launcher passes."""
    import argparse

    parser = argparse.ArgumentParser(prog="kldrift-dataflow-template", add_help=False)
    parser.add_argument("--config", required=True)
    parser.add_argument("--baseline")
    for name in KAFKA_PARAMETERS:
        parser.add_argument(f"--{name}")
    known, rest = parser.parse_known_args(list(argv))
    kafka = {
        name: value
        for name in KAFKA_PARAMETERS
        if (value := getattr(known, name)) not in (None, "")
    }
    return TemplateArgs(known.config, known.baseline or None, kafka), rest


def _has_flag(args: Sequence[str], name: str) -> bool:
    return any(a == name or a.startswith(name + "=") for a in args)


def dataflow_beam_args(args: Sequence[str]) -> list[str]:
    """The launcher's pipeline options plus Dataflow streaming defaults (runner, streaming,
    Streaming Engine); ``--update``, ``--job_name``, ``--transform_name_mapping`` pass through."""
    out = list(args)
    if not _has_flag(out, "--runner"):
        out.append("--runner=DataflowRunner")
    if not _has_flag(out, "--streaming"):
        out.append("--streaming")
    if not _has_flag(out, "--enable_streaming_engine"):
        out.append("--enable_streaming_engine")
    return out


def _copy_to_local(url: str, target: Path) -> Path:
    """Copy `url` (gs://, or any path Beam's FileSystems reads) to the local file `target`."""
    from apache_beam.io.filesystems import FileSystems

    from kldrift.errors import UserError

    try:
        with FileSystems.open(url) as source, open(target, "wb") as sink:
            shutil.copyfileobj(source, sink)
    except (OSError, ValueError) as err:  # BeamIOError is an OSError; no filesystem: ValueError
        raise UserError(f"cannot read {url}: {err}") from None
    return target


def _sibling(url: str, relative: str) -> str:
    """`relative` resolved against the directory of `url` (a gs:// URL or a local path)."""
    if "://" in url:
        return posixpath.join(url.rsplit("/", 1)[0], relative)
    return str(Path(url).parent / relative)


def stage_job_files(config_url: str, baseline_url: str | None, workdir: Path) -> tuple[Path, str]:
    """Copy the config and the baseline to `workdir` (a kafka:// baseline stays where it is).

    Without `baseline_url`, the config's `baseline:` is used: a URL as is, a relative path next
    to the config (``gs://b/dir/config.yaml`` + ``baseline.json`` -> ``gs://b/dir/baseline.json``).
    """
    import yaml

    from kldrift.errors import UserError

    name = posixpath.basename(config_url.rstrip("/")) or "config.yaml"
    config_path = _copy_to_local(config_url, workdir / name)
    if baseline_url is None:
        text = config_path.read_text()
        data = json.loads(text) if config_path.suffix == ".json" else yaml.safe_load(text)
        declared = data.get("baseline") if isinstance(data, dict) else None
        if not isinstance(declared, str):
            raise UserError(f"{config_url}: no baseline: set `baseline:` or the baseline parameter")
        absolute = "://" in declared or declared.startswith("/")
        baseline_url = declared if absolute else _sibling(config_url, declared)
    if baseline_url.startswith("kafka://"):
        return config_path, baseline_url
    return config_path, str(_copy_to_local(baseline_url, workdir / "kldrift-baseline.json"))


def submit_streaming(config: PipelineConfig, baseline: Baseline, beam_args: Sequence[str]) -> Any:
    """What `kldrift run` does, up to submission: the result is returned, not waited on.

    A Flex Template launcher must exit once the job is submitted, and `kldrift run` cancels its
    job when it is stopped (SIGTERM), which a launcher VM shutting down would do.
    """
    import apache_beam as beam
    from apache_beam.options.pipeline_options import StandardOptions

    from kldrift.pipeline.options import pipeline_options
    from kldrift.pipeline.streaming import banner, build_streaming, resolve_starts

    starts, resume = resolve_starts(config)
    options = pipeline_options(beam_args, streaming=True)
    runner = str(options.view_as(StandardOptions).runner)
    print(banner(config, baseline, starts, runner, resume), file=sys.stderr, flush=True)
    pipeline = beam.Pipeline(options=options)
    build_streaming(pipeline, config, baseline, starts, resume)
    return pipeline.run()


def launch_dataflow(argv: Sequence[str]) -> int:
    """The Flex Template launcher: parameters -> `kldrift run` on Dataflow, not waited on."""
    import tempfile

    from kldrift.errors import UserError, user_errors
    from kldrift.jobs import load_job

    try:
        params, beam_args = parse_template_args(argv)
        with tempfile.TemporaryDirectory(prefix="kldrift-template-") as tmp:
            with user_errors():
                config_path, baseline_path = stage_job_files(
                    params.config, params.baseline, Path(tmp)
                )
            config, baseline = load_job(str(config_path), baseline_path, params.kafka)
        with user_errors():
            if config.kafka is None:
                raise UserError(f"{params.config}: `kafka:` is required (or the Kafka parameters)")
            result = submit_streaming(config, baseline, dataflow_beam_args(beam_args))
    except UserError as err:
        print(f"kldrift: error: {err}", file=sys.stderr)
        return 2
    job_id = getattr(result, "job_id", None)
    print(f"kldrift: submitted {config.name!r} (job {job_id() if callable(job_id) else '?'})")
    return 0


# --- Dockerfiles --------------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile: comments dropped, continuations joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        if line:
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def dockerfile_args(text: str) -> dict[str, str]:
    """Every ``ARG NAME=default`` of a Dockerfile (the last default wins)."""
    args: dict[str, str] = {}
    for keyword, rest in dockerfile_instructions(text):
        if keyword == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            args[name.strip()] = value.strip().strip('"')
    return args


def dockerfile_from_images(text: str) -> list[str]:
    """The images of a Dockerfile's FROM lines, ``${ARG}`` replaced by the ARG defaults."""
    args = dockerfile_args(text)

    def expand(value: str) -> str:
        return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), value)

    images = []
    for keyword, rest in dockerfile_instructions(text):
        if keyword == "FROM":
            words = [w for w in rest.split() if not w.startswith("--")]
            images.append(expand(words[0]))
    return images


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv == ["dataflow-metadata"]:
        sys.stdout.write(dataflow_metadata_json())
        return 0
    print("usage: python -m kldrift.deploy dataflow-metadata", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
