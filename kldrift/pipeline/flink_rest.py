"""Cancelling a kldrift job on a remote Flink cluster through Flink's REST API.

Beam's Flink job server submits to a remote cluster (``--flink_master=HOST:PORT``) and, asked to
cancel, only stops waiting for it: the Flink job runs on (Beam 2.70's FlinkJobInvoker). So
`kldrift run` cancels the Flink job itself: the one RUNNING whose name is the Beam job's name."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

EMBEDDED_MASTERS = ("[local]", "[auto]", "[collection]")
"""`--flink_master` values that run Flink inside the job server (nothing remote to cancel)."""


def remote_master(master: str | None) -> str | None:
    """The REST address (``http://HOST:PORT``) of a remote `--flink_master`, else None."""
    if master is None or master in EMBEDDED_MASTERS:
        return None
    return master if master.startswith(("http://", "https://")) else f"http://{master}"


def flink_job_name(beam_job_id: str) -> str:
    """The Flink job's name for a Beam job service id (``NAME_UUID``): NAME."""
    return beam_job_id.rsplit("_", 1)[0]


def _call(url: str, method: str = "GET") -> Any:
    request = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read()
    return json.loads(body) if body else None


def cancel_running(rest: str, name: str) -> list[str]:
    """Cancel every RUNNING (or restarting) Flink job called `name` at `rest`; their ids."""
    jobs = _call(f"{rest}/jobs/overview")["jobs"]
    ids = [
        job["jid"]
        for job in jobs
        if job["name"] == name and job["state"] in ("RUNNING", "CREATED", "RESTARTING")
    ]
    for jid in ids:
        _call(f"{rest}/jobs/{jid}?mode=cancel", method="PATCH")
    return ids
