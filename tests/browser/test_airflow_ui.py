"""What a new user sees of the provider in Airflow's web UI, in a real Chromium.

The connection form explains itself, its Test button reports who is logged in, and the finished
submit task has its "IceProd dataset" link. With ``ICEPROD_SCREENSHOTS=docs/img`` (``make
screenshots``) the tests also save the screenshots used in ``docs/connection.md``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

CONN_ID = "iceprod_default"  # what the module's airflow_ui fixture logs in to (conftest.py)
DAG_ID = "iceprod_submit_and_wait"  # the example DAG it runs once
AirflowUI = Any  # conftest.AirflowUI: url, iceprod, run_id, dataset_url

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]

FIELD_LABELS = [
    "IceProd API URL",
    "API port",
    "Client secret (service accounts)",
    "OpenID issuer URL",
    "OAuth client id",
    "Actions URL",
    "IceProd website URL",
    "Refresh token",
    "Logged in at (epoch seconds)",
]
DESCRIPTIONS = [
    "Empty: https://keycloak.icecube.wisc.edu/auth/realms/IceCube",
    "Empty: iceprod-public",
    "Empty: the IceProd API URL",
    "Empty: https://iceprod.icecube.aq",
    "airflow-iceprod login --conn-id",
]


def _shot(page: Any, screenshot_dir: Path | None, name: str, **kwargs: Any) -> None:
    if screenshot_dir is not None:
        page.screenshot(path=str(screenshot_dir / name), **kwargs)


def _connection_row(page: Any, ui: AirflowUI) -> Any:
    page.goto(f"{ui.url}/connections")
    row = page.get_by_role("row").filter(has_text=CONN_ID)
    row.wait_for()
    return row


def test_connection_form_explains_itself(airflow_ui: AirflowUI, page: Any, screenshot_dir) -> None:
    page.set_viewport_size({"width": 1100, "height": 1500})  # the whole form, for the screenshots
    row = _connection_row(page, airflow_ui)
    row.get_by_role("button", name="Edit Connection").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Client secret (service accounts)").wait_for()
    _shot(dialog, screenshot_dir, "connection-form.png")
    dialog.get_by_text("Extra Fields", exact=True).click()
    dialog.get_by_text("Logged in at (epoch seconds)").wait_for()
    labels = [" ".join(t.split()) for t in dialog.locator("label").all_inner_texts()]
    for label in FIELD_LABELS:
        assert label in labels, (label, labels)
    text = dialog.inner_text()
    for description in DESCRIPTIONS:
        assert description in text, description
    # The stored port is what lets the Test button work (Airflow posts 0 for an empty one).
    page.wait_for_timeout(500)  # let the accordion finish opening
    _shot(dialog, screenshot_dir, "connection-form-extra.png")
    dialog.get_by_text("Standard Fields", exact=True).click()
    port_box = dialog.get_by_label("API port")
    port_box.wait_for()
    assert port_box.input_value() == str(airflow_ui.iceprod.api_url.rsplit(":", 1)[1])


def test_test_button_says_who_is_logged_in(airflow_ui: AirflowUI, page: Any, screenshot_dir) -> None:
    row = _connection_row(page, airflow_ui)
    with page.expect_response(re.compile(r"/api/v2/connections/test$")) as answer:
        row.get_by_role("button", name="Test Connection").click()
    assert answer.value.status == 200, answer.value.text()
    toast = page.get_by_text(re.compile(r"Authenticated as alice \("))
    toast.wait_for()
    assert "Test Connection Failed" not in page.inner_text("body")
    page.wait_for_timeout(700)  # the toast slides in
    _shot(page, screenshot_dir, "connection-test.png", clip={"x": 64, "y": 120, "width": 1216, "height": 780})


def test_finished_submit_task_links_to_the_dataset(airflow_ui: AirflowUI, page: Any, screenshot_dir) -> None:
    page.goto(f"{airflow_ui.url}/dags/{DAG_ID}/runs/{airflow_ui.run_id}/tasks/submit/details")
    link = page.get_by_role("link", name="IceProd dataset")
    link.wait_for()
    assert link.get_attribute("href") == airflow_ui.dataset_url
    _shot(page, screenshot_dir, "extra-link.png")
