#!/usr/bin/env bash
# kldrift on Dataflow as a Flex Template: build the image, build the template, run or update the job.
#
#   deploy/dataflow/launch.sh image      # build + push the image (Cloud Build; BUILDER=docker: local)
#   deploy/dataflow/launch.sh template   # gcloud dataflow flex-template build (spec on GCS)
#   deploy/dataflow/launch.sh run        # gcloud dataflow flex-template run: a new streaming job
#   deploy/dataflow/launch.sh update     # the same with --update: replace JOB_NAME, keeping state
#   deploy/dataflow/launch.sh drain      # drain the running JOB_NAME (stop reading, finish windows)
#   deploy/dataflow/launch.sh cancel     # cancel it (state is dropped)
#   deploy/dataflow/launch.sh print      # print the commands instead of running them (no gcloud)
#
# Settings (environment):
#   PROJECT, REGION, BUCKET          required: the project, the Dataflow region, a GCS bucket name
#   CONFIG                           required for run/update: gs://.../config.yaml (kldrift config)
#   BASELINE                         gs://.../baseline.json (default: the config's baseline:, next to it)
#   REPOSITORY (kldrift)             Artifact Registry Docker repository in REGION
#   TAG (git short sha)              image and template version
#   IMAGE                            default REGION-docker.pkg.dev/PROJECT/REPOSITORY/kldrift-dataflow:TAG
#   TEMPLATE                         default gs://BUCKET/kldrift/templates/kldrift-TAG.json
#   JOB_NAME (kldrift)               the Dataflow job name; update/drain/cancel find the job by it
#   BOOTSTRAP_SERVERS, INPUT_TOPIC, OUTPUT_TOPIC, DEAD_LETTER_TOPIC, GROUP_ID, START_FROM,
#   START_TIMESTAMP, READERS         override the config's kafka.<name> (template parameters)
#   NETWORK, SUBNETWORK              the VPC of the launcher VM and the workers: both reach Kafka
#   SERVICE_ACCOUNT                  worker (and launcher) service account email
#   MAX_WORKERS, NUM_WORKERS, WORKER_MACHINE_TYPE, DISABLE_PUBLIC_IPS=1
#   EXPERIMENTS                      comma-separated, to --additional-experiments
#   ADDITIONAL_PIPELINE_OPTIONS      to --additional-pipeline-options, e.g.
#                                    dataflow_service_options=enable_hot_key_logging
#   TRANSFORM_NAME_MAPPINGS          with update: old=new step names (gcloud --transform-name-mappings)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"

usage() {
  sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
}

[ $# -eq 1 ] || usage
ACTION="$1"
DRY_RUN=0
if [ "$ACTION" = print ]; then
  DRY_RUN=1
fi

: "${PROJECT:?set PROJECT (the Google Cloud project)}"
: "${REGION:?set REGION (the Dataflow region, e.g. europe-west1)}"
: "${BUCKET:?set BUCKET (a GCS bucket name, without gs://)}"
REPOSITORY="${REPOSITORY:-kldrift}"
TAG="${TAG:-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo dev)}"
IMAGE="${IMAGE:-$REGION-docker.pkg.dev/$PROJECT/$REPOSITORY/kldrift-dataflow:$TAG}"
TEMPLATE="${TEMPLATE:-gs://$BUCKET/kldrift/templates/kldrift-$TAG.json}"
JOB_NAME="${JOB_NAME:-kldrift}"

# Template parameters (metadata.json); each is set from the upper-case environment variable.
TEMPLATE_PARAMETERS=(config baseline bootstrap_servers input_topic output_topic dead_letter_topic
  group_id start_from start_timestamp readers)

run() {
  if [ "$DRY_RUN" = 1 ]; then
    printf '%q ' "$@"
    printf '\n'
  else
    "$@"
  fi
}

# --parameters with "~" as the list delimiter (gcloud topic escaping): values such as
# bootstrap servers "b1:9092,b2:9092" contain commas.
parameters() {
  local out="^~^sdk_container_image=$IMAGE" name var value
  for name in "${TEMPLATE_PARAMETERS[@]}"; do
    var="$(printf '%s' "$name" | tr '[:lower:]' '[:upper:]')"  # bash 3 (macOS) has no ${x^^}
    value="${!var:-}"
    if [ -n "$value" ]; then
      out+="~$name=$value"
    fi
  done
  printf '%s' "$out"
}

image() {
  if [ "${BUILDER:-cloudbuild}" = docker ]; then
    run docker build -f "$HERE/Dockerfile" -t "$IMAGE" "$ROOT"
    run docker push "$IMAGE"
  else
    run gcloud builds submit "$ROOT" --project "$PROJECT" \
      --config "$HERE/cloudbuild.yaml" --substitutions "_IMAGE=$IMAGE"
  fi
}

template() {
  run gcloud dataflow flex-template build "$TEMPLATE" \
    --project "$PROJECT" \
    --image "$IMAGE" \
    --sdk-language PYTHON \
    --metadata-file "$HERE/metadata.json"
}

start() {  # $@: extra gcloud flags (--update ...)
  : "${CONFIG:?set CONFIG (gs://.../config.yaml)}"
  local flags=(
    --project "$PROJECT"
    --region "$REGION"
    --template-file-gcs-location "$TEMPLATE"
    --staging-location "gs://$BUCKET/kldrift/staging"
    --temp-location "gs://$BUCKET/kldrift/tmp"
    --enable-streaming-engine
    --parameters "$(parameters)"
  )
  [ -n "${NETWORK:-}" ] && flags+=(--network "$NETWORK")
  [ -n "${SUBNETWORK:-}" ] && flags+=(--subnetwork "$SUBNETWORK")
  [ -n "${SERVICE_ACCOUNT:-}" ] && flags+=(--service-account-email "$SERVICE_ACCOUNT")
  [ -n "${MAX_WORKERS:-}" ] && flags+=(--max-workers "$MAX_WORKERS")
  [ -n "${NUM_WORKERS:-}" ] && flags+=(--num-workers "$NUM_WORKERS")
  [ -n "${WORKER_MACHINE_TYPE:-}" ] && flags+=(--worker-machine-type "$WORKER_MACHINE_TYPE")
  [ "${DISABLE_PUBLIC_IPS:-0}" = 1 ] && flags+=(--disable-public-ips)
  [ -n "${EXPERIMENTS:-}" ] && flags+=(--additional-experiments "$EXPERIMENTS")
  [ -n "${ADDITIONAL_PIPELINE_OPTIONS:-}" ] &&
    flags+=(--additional-pipeline-options "$ADDITIONAL_PIPELINE_OPTIONS")
  run gcloud dataflow flex-template run "$JOB_NAME" "${flags[@]}" "$@"
}

job_id() {
  gcloud dataflow jobs list --project "$PROJECT" --region "$REGION" --status active \
    --filter "name=$JOB_NAME" --format "value(id)" --limit 1
}

stop() {  # $1: drain | cancel
  local id
  if [ "$DRY_RUN" = 1 ]; then
    id='$JOB_ID'
  else
    id="$(job_id)"
    [ -n "$id" ] || { echo "launch.sh: no active job named $JOB_NAME in $REGION" >&2; exit 1; }
  fi
  run gcloud dataflow jobs "$1" "$id" --project "$PROJECT" --region "$REGION"
}

case "$ACTION" in
  image) image ;;
  template) template ;;
  run) start ;;
  update)
    extra=(--update)
    [ -n "${TRANSFORM_NAME_MAPPINGS:-}" ] &&
      extra+=(--transform-name-mappings "$TRANSFORM_NAME_MAPPINGS")
    start "${extra[@]}"
    ;;
  drain) stop drain ;;
  cancel) stop cancel ;;
  print)
    image
    template
    CONFIG="${CONFIG:-gs://$BUCKET/kldrift/config.yaml}" start
    CONFIG="${CONFIG:-gs://$BUCKET/kldrift/config.yaml}" start --update
    stop drain
    ;;
  *) usage ;;
esac
