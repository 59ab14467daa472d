"""The packagings in deploy/, checked offline (no Docker, no cluster, no cloud).

Dataflow: the Flex Template metadata is generated from the config schema and matches the file,
its parameters are `kldrift run` flags and `KafkaSpec` fields, the launcher maps parameters the
way `kldrift run` would, the image and `launch.sh` agree with the project, and the streaming
pipeline's step labels are stable (what `--update` needs). Flink on Kubernetes: every manifest
parses and agrees with the project (Beam and Flink versions, the `kldrift run` command, the config
path and its validity, the Kafka settings), and `kubectl kustomize` renders it when kubectl exists.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
import yaml
from apache_beam.options.pipeline_options import (
    FlinkRunnerOptions,
    GoogleCloudOptions,
    PipelineOptions,
    PortableOptions,
    StandardOptions,
)

from kldrift import deploy
from kldrift.cli import build_parser
from kldrift.io.kafka_source import ReaderStart
from kldrift.jobs import load_job
from kldrift.local.flink import FLINK_VERSION
from kldrift.pipeline.options import pipeline_options
from kldrift.pipeline.streaming import build_streaming
from kldrift.schemas.baseline import Baseline, FeatureBaseline
from kldrift.schemas.config import (
    ConfigError,
    KafkaSpec,
    PipelineConfig,
    parse_config,
    with_kafka_overrides,
)

ROOT = Path(__file__).resolve().parents[2]
DATAFLOW = ROOT / "deploy" / "dataflow"
K8S = ROOT / "deploy" / "flink" / "k8s"
BEAM_VERSION = beam.__version__
BEAM_SDK_IMAGE = re.compile(r"^apache/beam_python(?P<python>3\.\d+)_sdk:(?P<version>[^\s]+)$")

CONFIG: dict[str, Any] = {
    "name": "deploy-test",
    "event_time_field": "ts",
    "key_field": "model",
    "window": {"size": "10m", "period": "1m", "allowed_lateness": "2m"},
    "features": [
        {"name": "latency_ms", "kind": "numeric", "edges": [0, 10, 100]},
        {"name": "payload.country", "kind": "categorical", "categories": ["US", "DE"]},
    ],
    "kafka": {
        "bootstrap_servers": "127.0.0.1:9092",
        "input_topic": "events",
        "output_topic": "kldrift.drift",
        "dead_letter_topic": "kldrift.dead-letter",
    },
}


def _baseline() -> Baseline:
    return Baseline.create(
        [
            FeatureBaseline(
                name="latency_ms", kind="numeric", edges=[0, 10, 100], counts=[1, 5, 3, 1]
            ),
            FeatureBaseline(
                name="payload.country",
                kind="categorical",
                categories=["US", "DE"],
                counts=[6, 3, 1],
            ),
        ],
        source="test",
        created_at="x",
    )


def _config(**kafka: Any) -> PipelineConfig:
    return parse_config({**CONFIG, "kafka": {**CONFIG["kafka"], **kafka}})


# --- Dataflow: template metadata -----------------------------------------------------------------


def _run_flags() -> set[str]:
    """The option names of `kldrift run` (`--config` -> "config")."""
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    run = sub.choices["run"]
    return {s[2:] for a in run._actions for s in a.option_strings if s.startswith("--")}


def test_metadata_json_on_disk_is_the_generated_one() -> None:
    on_disk = (DATAFLOW / "metadata.json").read_text()
    assert on_disk == deploy.dataflow_metadata_json(), (
        "deploy/dataflow/metadata.json is stale: "
        "python -m kldrift.deploy dataflow-metadata > deploy/dataflow/metadata.json"
    )


def test_metadata_cli_prints_the_generated_metadata() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kldrift.deploy", "dataflow-metadata"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    assert done.stdout == (DATAFLOW / "metadata.json").read_text()


def test_metadata_parameters_are_run_flags_and_kafka_fields() -> None:
    metadata = deploy.dataflow_metadata()
    assert metadata["name"] and metadata["description"] and metadata["streaming"] is True
    assert metadata["supportsAtLeastOnce"] is False  # duplicates would be counted twice
    params = {p["name"]: p for p in metadata["parameters"]}
    assert list(params) == ["config", "baseline", *deploy.KAFKA_PARAMETERS]
    for param in params.values():
        assert set(param) >= {"name", "label", "helpText", "isOptional", "regexes"}
        assert param["label"] and param["helpText"]
        for regex in param["regexes"]:
            re.compile(regex)
    # config and baseline are `kldrift run` flags; the rest are fields of the config's kafka:.
    assert {"config", "baseline"} <= _run_flags()
    kafka_fields = KafkaSpec.model_fields
    assert set(deploy.KAFKA_PARAMETERS) <= set(kafka_fields)
    required_kafka = {name for name, f in kafka_fields.items() if f.is_required()}
    assert required_kafka <= set(params), "every required Kafka setting can be given"
    for name in deploy.KAFKA_PARAMETERS:
        assert kafka_fields[name].description in params[name]["helpText"]
    assert [p for p in params if not params[p]["isOptional"]] == ["config"]


@pytest.mark.parametrize(
    ("name", "good", "bad"),
    [
        ("config", ["gs://b/kldrift/config.yaml"], ["config.yaml", "s3://b/c.yaml"]),
        ("bootstrap_servers", ["b1:9092", "b1:9092,b2.kafka.svc:9093"], ["b1", "b1:9092,", ""]),
        ("input_topic", ["events", "kldrift.dead-letter"], ["two words", "a/b"]),
        ("start_from", ["committed", "earliest", "latest", "timestamp"], ["now", ""]),
        ("start_timestamp", ["1764064800", "1764064800.5"], ["yesterday"]),
        ("readers", ["1", "12"], ["0", "-1", "two"]),
    ],
)
def test_metadata_regexes_accept_what_the_config_accepts(
    name: str, good: list[str], bad: list[str]
) -> None:
    param = next(p for p in deploy.dataflow_metadata()["parameters"] if p["name"] == name)
    for value in good:
        assert all(re.fullmatch(r, value) for r in param["regexes"]), value
        if name in deploy.KAFKA_PARAMETERS:  # the config accepts it too
            _config(**{name: value}, **({"start_timestamp": 1} if value == "timestamp" else {}))
    for value in bad:
        assert not all(re.fullmatch(r, value) for r in param["regexes"]), value


# --- Dataflow: the launcher ---------------------------------------------------------------------


def test_template_args_split_parameters_from_pipeline_options() -> None:
    params, rest = deploy.parse_template_args(
        [
            "--config=gs://b/c.yaml",
            "--bootstrap_servers=b1:9092,b2:9092",
            "--readers=4",
            "--start_from=",
            "--project=p",
            "--job_name=kldrift",
            "--update",
            "--sdk_container_image=europe-west1-docker.pkg.dev/p/r/kldrift-dataflow:t",
        ]
    )
    assert params == deploy.TemplateArgs(
        "gs://b/c.yaml", None, {"bootstrap_servers": "b1:9092,b2:9092", "readers": "4"}
    )
    assert rest == [
        "--project=p",
        "--job_name=kldrift",
        "--update",
        "--sdk_container_image=europe-west1-docker.pkg.dev/p/r/kldrift-dataflow:t",
    ]


def test_kafka_overrides_are_validated_like_the_config() -> None:
    config = with_kafka_overrides(_config(), {"readers": "12", "input_topic": "clicks"})
    assert config.kafka is not None
    assert (config.kafka.readers, config.kafka.input_topic) == (12, "clicks")
    assert config.window == _config().window and config.features == _config().features
    with pytest.raises(ConfigError, match="start_timestamp is required"):
        with_kafka_overrides(_config(), {"start_from": "timestamp"})
    with pytest.raises(ConfigError, match="readers"):
        with_kafka_overrides(_config(), {"readers": "0"})


def test_dataflow_options_are_streaming_dataflow_and_keep_update() -> None:
    args = deploy.dataflow_beam_args(["--job_name=kldrift", "--update", "--project=p"])
    options = pipeline_options(args, streaming=True)
    assert options.view_as(StandardOptions).runner == "DataflowRunner"
    assert options.view_as(StandardOptions).streaming is True
    cloud = options.view_as(GoogleCloudOptions)
    assert (cloud.job_name, cloud.update, cloud.enable_streaming_engine) == ("kldrift", True, True)
    assert options.view_as(PortableOptions).environment_type is None  # no LOOPBACK, no Prism
    assert not any(a.startswith("--prism_location") for a in args)


def _write_job_files(directory: Path, baseline_name: str = "baseline.json") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / baseline_name).write_text(_baseline().model_dump_json())
    config = directory / "config.yaml"
    config.write_text(yaml.safe_dump({**CONFIG, "baseline": baseline_name}))
    return config


def test_job_files_are_copied_with_the_config_relative_baseline(tmp_path: Path) -> None:
    remote = _write_job_files(tmp_path / "bucket" / "kldrift")
    work = tmp_path / "work"
    work.mkdir()
    config_path, baseline_path = deploy.stage_job_files(str(remote), None, work)
    assert config_path.parent == work and Path(baseline_path).parent == work
    config, baseline = load_job(str(config_path), str(baseline_path))
    assert config.name == "deploy-test" and baseline.id == _baseline().id


def test_launcher_maps_parameters_to_kldrift_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    remote = _write_job_files(tmp_path / "bucket", baseline_name="other.json")
    submitted: dict[str, Any] = {}

    class Result:
        def job_id(self) -> str:
            return "2026-11-25_01_02_03-123"

    def submit(config: PipelineConfig, baseline: Baseline, beam_args: list[str]) -> Result:
        submitted.update(config=config, baseline=baseline, beam_args=beam_args)
        return Result()

    monkeypatch.setattr(deploy, "submit_streaming", submit)
    argv = [f"--config={remote}", "--readers=6", "--job_name=kldrift", "--update"]
    assert deploy.launch_dataflow(argv) == 0
    assert "2026-11-25_01_02_03-123" in capsys.readouterr().out
    assert submitted["config"].kafka.readers == 6
    assert submitted["baseline"].id == _baseline().id
    assert submitted["beam_args"][:2] == ["--job_name=kldrift", "--update"]
    assert "--runner=DataflowRunner" in submitted["beam_args"]


def test_launcher_reports_an_unreadable_config_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert deploy.launch_dataflow([f"--config={tmp_path}/missing.yaml"]) == 2
    assert capsys.readouterr().err.startswith(
        f"kldrift: error: cannot read {tmp_path}/missing.yaml"
    )


def test_main_py_is_the_launcher() -> None:
    text = (DATAFLOW / "main.py").read_text()
    assert "from kldrift.deploy import launch_dataflow" in text
    assert "launch_dataflow(sys.argv[1:])" in text


# --- Dataflow: image and launch.sh --------------------------------------------------------------


def _copy_sources(text: str) -> list[str]:
    sources = []
    for keyword, rest in deploy.dockerfile_instructions(text):
        words = rest.split()
        if keyword == "COPY" and not any(w.startswith("--from") for w in words):
            sources += [w for w in words[:-1] if not w.startswith("--")]
    return sources


def _check_installs_kldrift(text: str) -> None:
    sources = _copy_sources(text)
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: not in the build context (repo root)"
    readme = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["readme"]
    assert {"pyproject.toml", readme, "kldrift"} <= set(sources), "pip install . needs these"
    assert deploy.dockerfile_args(text)["BEAM_VERSION"] == BEAM_VERSION
    assert '"apache-beam==${BEAM_VERSION}"' in text  # pip keeps the image's Beam
    assert ("ENTRYPOINT", '["/opt/apache/beam/boot"]') in deploy.dockerfile_instructions(text)


def _beam_sdk_image(text: str) -> re.Match[str]:
    match = BEAM_SDK_IMAGE.match(deploy.dockerfile_from_images(text)[-1])
    assert match, "the image is built on the official Beam Python SDK image"
    return match


def test_dataflow_image_is_the_beam_sdk_image_with_kldrift_and_the_launcher() -> None:
    text = (DATAFLOW / "Dockerfile").read_text()
    assert _beam_sdk_image(text)["version"] == BEAM_VERSION
    _check_installs_kldrift(text)
    instructions = deploy.dockerfile_instructions(text)
    env = dict(rest.split("=", 1) for keyword, rest in instructions if keyword == "ENV")
    py_file = env["FLEX_TEMPLATE_PYTHON_PY_FILE"]
    assert ("COPY", f"deploy/dataflow/main.py {py_file}") in instructions
    launcher = "/opt/google/dataflow/python_template_launcher"
    assert any(
        k == "COPY" and "--from=template_launcher" in r and launcher in r for k, r in instructions
    )
    cloudbuild = yaml.safe_load((DATAFLOW / "cloudbuild.yaml").read_text())
    assert "deploy/dataflow/Dockerfile" in cloudbuild["steps"][0]["args"]


def _printed_commands(**env: str) -> list[list[str]]:
    done = subprocess.run(
        ["bash", str(DATAFLOW / "launch.sh"), "print"],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **env},
    )
    return [shlex.split(line) for line in done.stdout.splitlines()]


def _flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_launch_sh_builds_and_runs_the_template() -> None:
    subprocess.run(["bash", "-n", str(DATAFLOW / "launch.sh")], check=True)
    listed = re.search(r"TEMPLATE_PARAMETERS=\(([^)]*)\)", (DATAFLOW / "launch.sh").read_text())
    assert listed and listed.group(1).split() == [
        p["name"] for p in deploy.dataflow_metadata()["parameters"]
    ]
    commands = _printed_commands(
        PROJECT="p",
        REGION="europe-west1",
        BUCKET="b",
        TAG="t1",
        CONFIG="gs://b/kldrift/config.yaml",
        BOOTSTRAP_SERVERS="b1:9092,b2:9092",
        READERS="12",
    )
    build, template, run, update, drain = commands
    image = "europe-west1-docker.pkg.dev/p/kldrift/kldrift-dataflow:t1"
    assert build[:3] == ["gcloud", "builds", "submit"] and f"_IMAGE={image}" in build
    assert template[:4] == ["gcloud", "dataflow", "flex-template", "build"]
    assert _flag(template, "--image") == image
    assert Path(_flag(template, "--metadata-file")) == DATAFLOW / "metadata.json"
    assert run[:5] == ["gcloud", "dataflow", "flex-template", "run", "kldrift"]
    assert "--enable-streaming-engine" in run
    assert _flag(run, "--template-file-gcs-location") == template[4]
    parameters = _flag(run, "--parameters")
    assert parameters.startswith("^~^")  # "~"-delimited: bootstrap servers contain commas
    assert dict(p.split("=", 1) for p in parameters[3:].split("~")) == {
        "sdk_container_image": image,
        "config": "gs://b/kldrift/config.yaml",
        "bootstrap_servers": "b1:9092,b2:9092",
        "readers": "12",
    }
    assert update == [*run, "--update"]
    assert drain[:4] == ["gcloud", "dataflow", "jobs", "drain"]


# --- Dataflow and Flink: stable step labels -------------------------------------------------------


def _labels(config: PipelineConfig, starts: list[ReaderStart]) -> set[str]:
    pipeline = beam.Pipeline(options=PipelineOptions([]))
    build_streaming(pipeline, config, _baseline(), starts)  # constructs only; never runs
    proto = pipeline.to_runner_api()
    return {t.unique_name for t in proto.components.transforms.values() if t.unique_name}


def test_streaming_step_labels_are_stable() -> None:
    """Dataflow's --update and Flink's savepoints map state by step name."""
    first = _labels(_config(), [ReaderStart("events", ((0, 0),))])
    second = _labels(_config(), [ReaderStart("events", ((0, 0),))])
    assert first == second
    # Other start offsets and reader counts build the same graph, except that Beam's Create
    # reshuffles its elements only when there are several: 1 reader vs several adds those steps.
    two = _labels(_config(readers=2), [ReaderStart("events", ((p, 7 * p),)) for p in range(2)])
    three = _labels(_config(readers=3), [ReaderStart("events", ((p, 9),)) for p in range(3)])
    assert two == three
    reshuffle = "ReadFromKafka/Partitions/MaybeReshuffle/"
    assert first < three and all(label.startswith(reshuffle) for label in three - first)
    composite = "SlidingKLDivergence"
    expected = {
        "ReadFromKafka",
        composite,
        *(f"{composite}/{step}" for step in ("Bin", "PaneHistograms", "SlidingHistograms")),
        *(f"{composite}/{step}" for step in ("PaneToWindows", "ReviseWindows", "Revise", "Score")),
        "WriteReports",
        "WriteSummaries",
        "WriteDeadLetters",
    }
    assert expected <= first
    assert not [label for label in first if re.search(r"0x[0-9a-f]{6,}", label)], "no addresses"


# --- Flink on Kubernetes ----------------------------------------------------------------------------


def _manifests() -> dict[str, list[dict[str, Any]]]:
    return {
        path.name: [d for d in yaml.safe_load_all(path.read_text()) if d]
        for path in sorted(K8S.glob("*.yaml"))
    }


def _one(kind: str) -> dict[str, Any]:
    found = [d for docs in _manifests().values() for d in docs if d["kind"] == kind]
    assert len(found) == 1, kind
    return found[0]


def _containers(pod_spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod_spec.get("initContainers", []), *pod_spec.get("containers", [])]


def _submitter() -> tuple[dict[str, Any], dict[str, Any]]:
    job = _one("Job")
    pod = job["spec"]["template"]["spec"]
    container = next(c for c in pod["containers"] if c["name"] == "kldrift")
    return pod, container


def _submit_args() -> Any:
    _, container = _submitter()
    command = [*container["command"], *container["args"]]
    assert command[:2] == ["kldrift", "run"], "the submitter runs `kldrift run`"
    return build_parser().parse_args(command[1:])


def _beam_args() -> list[str]:
    return [a for a in _submit_args().beam_args if a != "--"]


def _beam_flag(name: str) -> str:
    values = [a.split("=", 1)[1] for a in _beam_args() if a.startswith(f"--{name}=")]
    assert len(values) == 1, name
    return values[0]


def test_every_manifest_parses_and_is_applied_by_the_kustomization() -> None:
    manifests = _manifests()
    kustomization = manifests.pop("kustomization.yaml")[0]
    assert kustomization["kind"] == "Kustomization"
    assert set(kustomization["resources"]) == set(manifests), "every manifest is applied"
    for docs in manifests.values():
        for doc in docs:
            assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"]
    assert {d["kind"] for docs in manifests.values() for d in docs} == {
        "ConfigMap",
        "FlinkDeployment",
        "Job",
        "Deployment",  # the exporter (exporter.yaml, checked in test_monitoring.py)
        "Service",
    }


def test_images_carry_the_installed_beam_and_one_flink_version() -> None:
    dockerfile = (K8S / "Dockerfile").read_text()
    sdk = _beam_sdk_image(dockerfile)
    assert sdk["version"] == BEAM_VERSION
    assert sdk["python"] == _beam_sdk_image((DATAFLOW / "Dockerfile").read_text())["python"]
    _check_installs_kldrift(dockerfile)
    args = deploy.dockerfile_args(dockerfile)
    assert args["FLINK_VERSION"] == FLINK_VERSION, "the Flink of kldrift's local runs"
    assert FLINK_VERSION in FlinkRunnerOptions.PUBLISHED_FLINK_VERSIONS

    # The job server jar: Beam's Flink runner for this Beam and Flink, where the Job points.
    add = next(r for k, r in deploy.dockerfile_instructions(dockerfile) if k == "ADD").split()
    url = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], add[0])
    jar = f"beam-runners-flink-{FLINK_VERSION}-job-server-{BEAM_VERSION}.jar"
    assert url.endswith(f"/{BEAM_VERSION}/{jar}")
    assert _beam_flag("flink_job_server_jar") == add[1]
    assert _beam_flag("flink_version") == FLINK_VERSION

    # Flink: the operator's version enum, the image tag and the S3 plugin jar agree.
    flink = _one("FlinkDeployment")["spec"]
    assert flink["flinkVersion"] == "v" + FLINK_VERSION.replace(".", "_")
    image_name, tag = flink["image"].split(":")
    assert image_name == "flink" and tag.startswith(FLINK_VERSION + ".")
    env = flink["podTemplate"]["spec"]["containers"][0]["env"]
    plugins = next(e["value"] for e in env if e["name"] == "ENABLE_BUILT_IN_PLUGINS")
    assert plugins.endswith(f"-{tag.split('-')[0]}.jar")

    # Every other image is the kldrift-worker image built from the Dockerfile.
    kustomize_images = {i["name"] for i in _manifests()["kustomization.yaml"][0]["images"]}
    pod, _ = _submitter()
    worker_pool = flink["taskManager"]["podTemplate"]["spec"]["containers"]
    assert kustomize_images == {"kldrift-worker"}
    for container in [*_containers(pod), *worker_pool]:
        assert container["image"] == "kldrift-worker", container["name"]


def test_submitter_runs_kldrift_run_on_flink_with_the_worker_pool() -> None:
    run = _submit_args()
    assert run.command == "run" and run.baseline is None and run.bootstrap is None
    options = pipeline_options(_beam_args(), streaming=True)  # builds offline: the jar is given
    assert options.view_as(StandardOptions).runner == "FlinkRunner"
    assert options.view_as(StandardOptions).streaming is True
    portable = options.view_as(PortableOptions)
    assert (portable.environment_type, portable.environment_config) == (
        "EXTERNAL",
        "localhost:50000",
    )
    assert "--checkpointing_interval=60000" in _beam_args()

    # flink_master is the operator's REST service of the FlinkDeployment.
    flink = _one("FlinkDeployment")
    assert _beam_flag("flink_master") == f"{flink['metadata']['name']}-rest:8081"
    # The worker pool is a sidecar of every TaskManager, on the port the job names.
    sidecars = flink["spec"]["taskManager"]["podTemplate"]["spec"]["containers"]
    pool = next(c for c in sidecars if "--worker_pool" in c.get("args", []))
    port = int(portable.environment_config.rsplit(":", 1)[1])
    assert [p["containerPort"] for p in pool["ports"]] == [port]


def _mount_of(pod: dict[str, Any], container: dict[str, Any], config_map: str) -> str:
    volume = next(v["name"] for v in pod["volumes"] if v["configMap"]["name"] == config_map)
    return next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == volume)


def test_config_map_holds_a_valid_config_at_the_path_the_job_reads() -> None:
    config_map = _one("ConfigMap")
    pod, container = _submitter()
    config_path = Path(_submit_args().config)
    assert str(config_path.parent) == _mount_of(pod, container, config_map["metadata"]["name"])
    config = parse_config(
        yaml.safe_load(config_map["data"][config_path.name]), "configmap.yaml config.yaml"
    )
    assert config.kafka is not None, "the streaming job needs its Kafka settings"
    assert config.kafka.bootstrap_servers and config.kafka.input_topic
    assert 1 <= config.kafka.readers <= int(_beam_flag("parallelism"))
    # The baseline is the kldrift-baseline ConfigMap, mounted where the config points.
    assert config.baseline is not None
    assert str(Path(config.baseline).parent) == _mount_of(pod, container, "kldrift-baseline")


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_renders_the_manifests_with_the_image_and_a_savepoint(tmp_path: Path) -> None:
    def render(directory: Path) -> list[dict[str, Any]]:
        out = subprocess.run(
            ["kubectl", "kustomize", str(directory)], capture_output=True, text=True, check=True
        ).stdout
        return [d for d in yaml.safe_load_all(out) if d]

    docs = render(K8S)
    assert {d["metadata"]["namespace"] for d in docs} == {"kldrift"}
    text = yaml.safe_dump_all(docs)
    assert "image: kldrift-worker\n" not in text, "every worker image reference is replaced"
    assert text.count("image: registry.example.com/kldrift-worker:0.1.0") == 4

    # README's restore step: uncomment the kustomization's patch.
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    kustomization = copy / "kustomization.yaml"
    lines = kustomization.read_text().splitlines()
    start = lines.index("# patches:")
    patched = lines[:start] + [re.sub(r"^# ?", "", line, count=1) for line in lines[start:]]
    kustomization.write_text("\n".join(patched) + "\n")
    job = next(d for d in render(copy) if d["kind"] == "Job")
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[-1].startswith("--savepoint_path=") and "--" in args[: args.index(args[-1])]


def test_readmes_cover_the_steps_and_the_guarantees() -> None:
    index = (ROOT / "deploy" / "README.md").read_text()
    for heading in ("### Prism", "### Flink", "### Dataflow"):
        assert heading in index
    assert "never deployed" in index
    flink_readme = (K8S / "README.md").read_text()
    for step in ("helm install", "docker build", "kubectl apply -k", "savepoint"):
        assert step in flink_readme
    dataflow_readme = (DATAFLOW / "README.md").read_text()
    assert "FileSystems" in dataflow_readme and "--update" in dataflow_readme
    for name in json.loads((DATAFLOW / "metadata.json").read_text())["parameters"]:
        assert f"`{name['name']}`" in dataflow_readme
