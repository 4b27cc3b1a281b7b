"""The "IceProd dataset" extra link: a button on the task page that opens the dataset on IceProd's website.

Airflow's api-server runs no provider code: it shows what the task stored under
``IceProdDatasetLink().xcom_key``. The operators push that XCom themselves as soon as the dataset is
known (so the button is there during a long wait), and :meth:`IceProdDatasetLink.get_link`, which the
task runner calls once when the task ends, reads the ``url`` XCom only. It never raises.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

#: XCom keys the IceProd operators push as soon as the dataset is known.
XCOM_DATASET_ID = "dataset_id"
XCOM_DATASET = "dataset"
XCOM_URL = "url"


class IceProdDatasetLink(BaseOperatorLink):
    """Opens ``<website>/dataset/<dataset_id>`` for the dataset a task submitted or acted on."""

    name = "IceProd dataset"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        try:
            from airflow.sdk.execution_time.xcom import XCom

            url = XCom.get_value(ti_key=ti_key, key=XCOM_URL)
        except Exception:  # a link must never break the task page or the task's finalization
            return ""
        return url if isinstance(url, str) and url.startswith(("https://", "http://")) else ""


def push_dataset_xcoms(ti: Any, *, dataset_id: str, dataset: int, url: str) -> None:
    """Push ``dataset_id``, ``dataset`` (the number), ``url`` and the link XCom for a task instance."""
    ti.xcom_push(key=XCOM_DATASET_ID, value=dataset_id)
    ti.xcom_push(key=XCOM_DATASET, value=dataset)
    ti.xcom_push(key=XCOM_URL, value=url)
    ti.xcom_push(key=IceProdDatasetLink().xcom_key, value=url)
