"""A downstream consumer that triggers a (fake) retraining job from kldrift's drift reports.

    python examples/retrain_consumer.py --bootstrap 127.0.0.1:9092 --topic kldrift.drift

It reads the report topic with the producer's own models, acts on the window summaries (one verdict
per model and window over all its features; the features' reports are printed), applies the
retraining policy (3 of the last 5 windows drifted, per model, 30 minutes of cooldown) and
"retrains" by writing a job file. Offsets are committed only after the retraining call returned:
at-least-once.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from kldrift.consumer import ReportConsumer, RetrainTrigger, Trigger
from kldrift.schemas.report import WindowSummary


def start_retraining(trigger: Trigger, jobs: Path) -> None:
    """Stands in for a call to your orchestrator (Airflow, Kubeflow, a CI job...)."""
    jobs.mkdir(parents=True, exist_ok=True)
    job = jobs / f"retrain-{trigger.key}-{int(time.time() * 1000)}.json"
    job.write_text(trigger.to_json())
    print(
        f"retraining {trigger.key} because {', '.join(trigger.features)} drifted "
        f"({trigger.kl_bits_debiased:.3f} bits): {job}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--topic", default="kldrift.drift")
    parser.add_argument("--group", default="retrain-example")
    parser.add_argument("--jobs", default="retrain-jobs", type=Path)
    args = parser.parse_args()

    policy = RetrainTrigger(k=3, m=5, cooldown_s=30 * 60, scope="window")
    consumer = ReportConsumer(args.bootstrap, args.topic, args.group, from_beginning=True)
    try:
        while True:
            for message in consumer.poll(timeout_s=1.0):
                record = message.report
                if isinstance(record, WindowSummary):
                    line = {
                        "key": record.key,
                        "window_end": str(record.window_end),
                        "features_drifted": record.features_drifted,
                        "combined_p_value": record.combined_p_value,
                        "drift": record.drift,
                    }
                else:
                    line = {
                        "key": record.key,
                        "feature": record.feature,
                        "window_end": str(record.window_end),
                        "kl_bits_debiased": record.kl_bits_debiased,
                        "drift": record.drift,
                    }
                print(json.dumps(line), flush=True)
                trigger = policy.offer(record)
                if trigger is not None:
                    start_retraining(trigger, args.jobs)  # raises -> not committed
                if not policy.pending():
                    consumer.commit(message)
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()


if __name__ == "__main__":
    main()
