"""The labelling web app (FastAPI): one page, a small JSON API, nothing else served.

- ``GET /?token=T``: the labelling page (``GET /stats?token=ADMIN``: the stats page);
- ``GET /api/state``: the annotator's progress and their next two unlabelled items (the second is
  prefetched), with A and B in the annotator's blind order: the unblinding key never leaves the
  server;
- ``POST /api/label``: one label, committed at once (``{"item_id", "choice"}``: 1 / 2 / tie, up /
  down, pass / fail, or ``{"item_id", "score"}`` on the five-point scale as shown, plus an optional
  ``reason``);
- ``POST /api/undo``: take back the annotator's latest label.

API calls carry ``Authorization: Bearer <token>``: an unknown token is 401, an item not assigned to
the annotator 403, a malformed body 422. Tokens are never logged (the server runs without an
access log, since page URLs carry them).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Literal

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse
from markdown_it import MarkdownIt
from pydantic import BaseModel, ConfigDict, Field

from alignkit.commands.label.project import DB_FILE, load_project, shown_left
from alignkit.commands.label.report import stats_lines
from alignkit.commands.label.stats import label_stats
from alignkit.commands.label.store import LabelStore

PAGE = Path(__file__).with_name("page.html")


class LabelIn(BaseModel):
    """A label as the page sends it (in the annotator's blind order)."""

    model_config = ConfigDict(extra="forbid")
    item_id: str = Field(min_length=1)
    choice: Literal["1", "2", "tie", "up", "down", "pass", "fail"] | None = None
    score: int | None = Field(None, ge=1, le=5)
    reason: str = Field("", max_length=4000)
    request_id: str | None = Field(None, max_length=100, description="The page's id of this action, kept by retries.")


def create_app(project_dir: str | Path) -> FastAPI:
    """The labelling web app of a project: the annotator page, its JSON API (next item, label, undo) and
    the admin's stats page; every request is authenticated by its token."""
    root, project, items = load_project(project_dir)
    by_id = {item["id"]: item for item in items}
    store = LabelStore(root / DB_FILE)
    rubric_html = MarkdownIt("commonmark", {"html": False}).render(project.rubric)  # raw HTML in the rubric is escaped
    app = FastAPI(title=f"alignkit label: {project.name}", docs_url=None, redoc_url=None, openapi_url=None)

    def annotator(request: Request) -> tuple[str, bool]:
        header = request.headers.get("authorization", "")
        found = store.who(header[7:] if header.lower().startswith("bearer ") else None)
        if found is None:
            raise HTTPException(401, "unknown or missing annotator token")
        return found

    def view(item: dict, name: str) -> dict:
        """What the page shows of an item: the texts in this annotator's order, never which is which."""
        shown = {"item_id": item["id"], "prompt": item["prompt"]}
        if project.kind == "compare":
            left = shown_left(project.seed, name, item["id"])
            shown.update(
                left=item["response_a" if left == "a" else "response_b"],
                right=item["response_b" if left == "a" else "response_a"],
            )
        elif project.kind == "thumbs":
            shown["response"] = item["response"]
        else:
            shown.update(reference=item["reference"], model=item["model"])
        return shown

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE.read_text(encoding="utf-8").replace("{{TITLE}}", html.escape(project.name))

    @app.get("/api/state")
    def state(who: tuple[str, bool] = Depends(annotator)) -> dict:
        name, _ = who
        mine, done = store.assigned(name), store.labelled(name)
        pending = [by_id[i] for i in mine if i not in done and i in by_id]
        return {
            "annotator": name,
            "project": project.name,
            "kind": project.kind,
            "scale": project.scale,
            "reasons": project.reasons,
            "rubric_html": rubric_html,
            "total": len(mine),
            "done": len(mine) - len(pending),
            "items": [view(i, name) for i in pending[:2]],
        }

    @app.post("/api/label")
    def label(body: LabelIn, who: tuple[str, bool] = Depends(annotator)) -> dict:
        name, _ = who
        if body.item_id not in store.assigned(name):
            raise HTTPException(403, f"item '{body.item_id}' is not assigned to {name}")
        choice, score, left = _unblind(
            body.choice, body.score, shown_left(project.seed, name, body.item_id) if project.kind == "compare" else None
        )
        outcome = store.put_label(name, body.item_id, choice, score, body.reason.strip(), left, body.request_id)
        return {"ok": True, "outcome": outcome}

    def _unblind(choice: str | None, score: int | None, left: str | None) -> tuple[str, int | None, str | None]:
        allowed = {
            "compare": {"binary": {"1", "2"}, "tie": {"1", "2", "tie"}, "five": set()}.get(project.scale, set()),
            "thumbs": {"up", "down"},
            "review": {"pass", "fail"},
        }[project.kind]
        if project.kind == "compare" and project.scale == "five":
            if score is None or choice is not None:
                raise HTTPException(422, "this project labels on a five-point scale: send a score from 1 to 5")
            unblinded = score if left == "a" else 6 - score  # the page's 1 means "left much better"
            return ("a" if unblinded < 3 else "b" if unblinded > 3 else "tie"), unblinded, left
        if choice not in allowed or score is not None:
            raise HTTPException(422, f"choice must be one of {', '.join(sorted(allowed))}")
        if project.kind == "compare" and choice in ("1", "2"):
            right = "b" if left == "a" else "a"
            return (left if choice == "1" else right), None, left
        return choice, None, left

    @app.post("/api/undo")
    def undo(who: tuple[str, bool] = Depends(annotator)) -> dict:
        return {"item_id": store.undo(who[0])}

    @app.get("/api/stats")
    def stats(who: tuple[str, bool] = Depends(annotator)) -> dict:
        if not who[1]:
            raise HTTPException(403, "the stats are for the project's admin token")
        return label_stats(store.all_labels(), items, store.annotators(), project.seed)

    @app.get("/stats", response_class=HTMLResponse)
    def stats_page(token: str = "") -> str:
        found = store.who(token)
        if found is None or not found[1]:
            raise HTTPException(401, "the stats page needs the project's admin token (?token=...)")
        return stats_html(project.name, label_stats(store.all_labels(), items, store.annotators(), project.seed))

    return app


def stats_html(title: str, stats: dict) -> str:
    """The stats page: agreement figures, and the items where the judge and the people disagree."""
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in stats_lines(stats))
    disagreements = "".join(
        f"<tr><td>{html.escape(d['item_id'])}</td><td>{d['judge']}</td><td>{d['people']}</td><td>{html.escape(str(d['votes']))}</td></tr>"
        for d in stats.get("judge", {}).get("disagreements", [])
    )
    table = (
        "<h2>Judge vs people: "
        f"disagreements</h2><table><tr><th>item</th><th>judge</th><th>people</th><th>votes</th></tr>{disagreements}</table>"
        if disagreements
        else ""
    )
    return (
        "<!doctype html><html><head><meta "
        f"charset='utf-8'><title>{html.escape(title)}: "
        f"stats</title><style>body{{font-family:system-ui,sans-serif;"
        f"margin:2em;max-width:60em}} table{{border-collapse:collapse;margin:1em "
        f"0}} th,td{{border:1px solid #ccc;padding:.35em .7em;text-align:left}}"
        " "
        f"th{{background:#f2f2f2}}</style></head><body><h1>{html.escape(title)}: "
        f"what the labels say</h1><table>{rows}</table>{table}</body></html>"
    )
