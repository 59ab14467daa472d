"""Whole pipelines built from a config and runner options: streaming run, replay, baseline."""
