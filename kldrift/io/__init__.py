"""Sources and sinks: files (replay, baseline) and Kafka (streaming)."""
