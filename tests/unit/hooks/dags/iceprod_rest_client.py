"""IceProd's own client (rest-tools) in a task and in a trigger, run with ``dag.test()``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from airflow.sdk import DAG, BaseOperator, task

from airflow_provider_iceprod.hooks.iceprod import IceProdHook


class ListInTrigger(BaseOperator):
    def execute(self, context: Any) -> None:
        from rest_client_triggers import ListDatasetsTrigger

        self.defer(trigger=ListDatasetsTrigger(), method_name="done")

    def done(self, context: Any, event: dict[str, Any]) -> list[str]:
        return event["ids"]


with DAG(
    "iceprod_test_rest_client", schedule=None, start_date=datetime(2024, 1, 1, tzinfo=UTC), catchup=False
) as iceprod_test_rest_client:

    @task
    def list_in_task() -> list[str]:
        datasets = IceProdHook().get_conn().request_seq("GET", "/datasets", {"keys": "dataset_id"})
        return sorted(datasets)

    @task
    def unwrapped_route_in_task() -> dict[str, Any]:
        return IceProdHook("iceprod_service").run("GET", "/task_counts/status")

    list_in_task()
    unwrapped_route_in_task()
    ListInTrigger(task_id="list_in_trigger")
