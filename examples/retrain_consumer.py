"""A downstream consumer that triggers a (fake) retraining job from kldrift's drift reports.

    python examples/retrain_consumer.py --bootstrap 127.0.0.1:9092 --topic kldrift.drift

It reads typed reports (the producer's own model), applies the retraining policy (3 of the last 5
windows drifted, per model and feature, 30 minutes of cooldown) and "retrains" by writing a job
file. Offsets are committed only after the retraining call returned: at-least-once.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from kldrift.consumer import ReportConsumer, RetrainTrigger, Trigger


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

    policy = RetrainTrigger(k=3, m=5, cooldown_s=30 * 60, scope="feature")
    consumer = ReportConsumer(args.bootstrap, args.topic, args.group, from_beginning=True)
    try:
        while True:
            for message in consumer.poll(timeout_s=1.0):
                report = message.report
                print(
                    json.dumps(
                        {
                            "key": report.key,
                            "feature": report.feature,
                            "window_end": str(report.window_end),
                            "kl_bits_debiased": report.kl_bits_debiased,
                            "drift": report.drift,
                        }
                    )
                )
                trigger = policy.offer(report)
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
