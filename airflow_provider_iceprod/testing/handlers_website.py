"""A placeholder for IceProd's website: the dataset pages that extra links point to (no login)."""

from __future__ import annotations

import html

from airflow_provider_iceprod.testing.handlers_base import BaseHandler
from airflow_provider_iceprod.testing.states import TASK_STATUS, status_sorted


class WebsiteIndexHandler(BaseHandler):
    ROUTE = "/website"

    def get(self) -> None:
        with self.ctx.store.lock:
            rows = [
                (d["dataset_id"], d["dataset"], d["status"], d["description"])
                for d in self.ctx.store.datasets.values()
            ]
        items = "".join(
            f'<li><a href="/website/dataset/{i}">{n}</a> [{html.escape(s)}] {html.escape(desc)}</li>'
            for i, n, s, desc in rows
        )
        self._page("IceProd stand-in", f"<ul>{items}</ul>" if items else "<p>No datasets yet.</p>")

    def _page(self, title: str, body: str) -> None:
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.write(
            f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"</head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
        )


class WebsiteDatasetHandler(WebsiteIndexHandler):
    ROUTE = "/website/dataset/{dataset_id}"

    def get(self, dataset_id: str) -> None:  # type: ignore[override]
        with self.ctx.store.lock:
            doc = self.ctx.store.datasets.get(dataset_id)
            counts: dict[str, int] = {}
            for task in self.ctx.store.dataset_tasks(dataset_id).values():
                counts[task["status"]] = counts.get(task["status"], 0) + 1
        if doc is None:
            self.set_status(404)
            self._page("Dataset not found", "")
            return
        fields = "".join(
            f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in doc.items()
        )
        tasks = ", ".join(f"{k}: {v}" for k, v in status_sorted(TASK_STATUS, counts).items()) or "none yet"
        self._page(
            f"Dataset {doc['dataset']}",
            f"<table>{fields}</table><p>Tasks: {html.escape(tasks)}</p>",
        )


HANDLERS: list[type[BaseHandler]] = [WebsiteIndexHandler, WebsiteDatasetHandler]
