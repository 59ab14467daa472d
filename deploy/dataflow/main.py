"""Dataflow Flex Template launcher for kldrift (FLEX_TEMPLATE_PYTHON_PY_FILE in the Dockerfile).

Dataflow runs this on a launcher VM with the template parameters as ``--name=value`` arguments
(``--config``, ``--baseline``, ``--bootstrap_servers``, ...; see metadata.json) followed by the
job's pipeline options (``--project``, ``--region``, ``--job_name``, ``--temp_location``,
``--sdk_container_image``, ``--update``, ...). It does what ``kldrift run --config C --baseline B
-- <options>`` does, with two differences a launcher needs:

* the config and the baseline may be gs:// paths: kldrift reads local files only, so they are
  first copied to a local temp dir with Beam's FileSystems (kldrift.deploy.stage_job_files);
* the job is submitted and not waited on: a launcher must exit once the job exists, and
  ``kldrift run`` cancels its job when stopped.
"""

from __future__ import annotations

import logging
import sys

from kldrift.deploy import launch_dataflow


def main() -> int:
    logging.basicConfig(level=logging.INFO)
    return launch_dataflow(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
