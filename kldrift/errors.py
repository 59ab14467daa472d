"""Errors a user can cause and fix, shared by the pipelines and the CLI (no Beam import here)."""


class InputNotFound(ValueError):
    """No file matched the input path or glob."""
