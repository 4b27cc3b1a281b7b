from airflow_provider_iceprod.testing import LocalIceProd


def test_nightly_simulation_completes(iceprod_connection: LocalIceProd, airflow_db) -> None:
    from nightly_simulation import nightly_simulation

    run = nightly_simulation().test()

    assert run.state == "success"
    (dataset,) = iceprod_connection.datasets()
    assert dataset["status"] == "complete"
    assert dataset["jobs_submitted"] == 3
    assert iceprod_connection.task_counts(dataset["dataset_id"]) == {"complete": 6}


def test_nightly_simulation_fails_when_a_task_fails(iceprod_connection: LocalIceProd, airflow_db) -> None:
    from nightly_simulation import nightly_simulation

    iceprod_connection.grid.fail_task("process")

    run = nightly_simulation().test()

    assert run.state == "failed"
    (dataset,) = iceprod_connection.datasets()
    assert dataset["status"] == "errors"
