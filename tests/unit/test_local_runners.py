"""`kldrift run --worker-processes` set-up: refused, in one line, where it does not apply."""

from __future__ import annotations

import pytest

from kldrift.exceptions import UserError
from kldrift.local.runners import worker_process_args


@pytest.mark.parametrize(
    ("beam_args", "says"),
    [
        (["--runner", "FlinkRunner", "--parallelism=2"], "is for Prism"),
        (["--runner=DataflowRunner"], "is for Prism"),
        (["--environment_type=LOOPBACK"], "drop --environment_type"),
    ],
)
def test_worker_processes_are_refused_off_prism_or_with_an_environment(
    beam_args: list[str], says: str
) -> None:
    with pytest.raises(UserError, match=says) as refused:
        worker_process_args(beam_args)
    assert "\n" not in str(refused.value)
