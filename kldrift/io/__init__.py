"""Sources and sinks: files (replay, baseline) and Kafka (streaming)."""

FILE_FORMATS = ("jsonl", "csv", "parquet", "avro")
"""What `kldrift baseline` and `replay` read (`--format`). Without it, each file's extension
decides: .csv, .parquet (or .pq), .avro; any other is JSON lines. Here, not in io.files, so the CLI
lists them without importing Beam."""
