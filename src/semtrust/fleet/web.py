"""Server-rendered pages (Jinja2, no JavaScript): the fleet and one domain."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy.engine import Engine

from semtrust import __version__
from semtrust.fleet import views

__all__ = ["add_pages"]

TEMPLATES = Path(__file__).parent / "templates"


def event_summary(line: str) -> str:
    """One readable line for a forensic event record: its type, process and paths."""
    try:
        rec = json.loads(line)
    except ValueError:
        return line[:200]
    if not isinstance(rec, dict) or not isinstance(rec.get("event"), dict):
        return line[:200]
    ev = rec["event"]
    paths: list[str] = []

    def walk(x: Any) -> None:
        if isinstance(x, dict):
            for k, v in x.items():
                if k in ("pathname", "path", "filename") and isinstance(v, str):
                    paths.append(v)
                else:
                    walk(v)

    walk({k: v for k, v in rec.items() if k not in ("event", "export")})
    out = f"{ev.get('type', '?')} by {ev.get('process', '?')} (pid {ev.get('pid', '?')})"
    return out + (": " + ", ".join(paths[:4]) if paths else "")


def add_pages(app: FastAPI, engine: Engine) -> None:
    env = Environment(loader=FileSystemLoader(TEMPLATES),
                      autoescape=select_autoescape(["html"]))
    env.filters["ago"] = views.ago
    env.filters["event_summary"] = event_summary
    env.filters["short"] = lambda s: (s[:12] + "…") if isinstance(s, str) and len(s) > 12 \
        else (s or "")

    def render(template: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        html = env.get_template(template).render(version=__version__, **ctx)
        return HTMLResponse(html, status_code=status)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index(request: Request) -> HTMLResponse:
        doms = views.list_domains(engine)
        counts: dict[str, int] = {}
        for d in doms:
            counts[d["status"]] = counts.get(d["status"], 0) + 1
        return render("index.html", hosts=views.list_hosts(engine), domains=doms,
                      counts=counts, workloads=views.list_workloads(engine))

    @app.get("/hosts/{host}/domains/{name}", response_class=HTMLResponse,
             include_in_schema=False)
    def domain_page(host: str, name: str) -> HTMLResponse:
        d = views.domain_detail(engine, host, name)
        if d is None:
            return render("missing.html", status=404, host=host, name=name)
        return render("domain.html", d=d)
