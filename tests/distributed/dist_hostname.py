"""``[core] hostname_callable`` of the distributed tier: each simulated host reports its own name.

Airflow records it for triggerer jobs (``job.hostname``) and task instances (``task_instance.hostname``),
so the tests know which process holds which trigger or task.
"""

from __future__ import annotations

import os
import socket


def hostname() -> str:
    return os.environ.get("ICEPROD_DIST_HOSTNAME") or socket.getfqdn()
