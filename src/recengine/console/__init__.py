"""The web console at ``/ui`` (users, engines, catalogue, experiments): server-rendered pages (Jinja2) and one
plain-JavaScript file, no build step, no CDN.

The pages are skeletons; ``static/console.js`` fills them by calling the documented public API only (the same
routes any client has), so the console also shows that API at work. Admin controls exist only in the browser's
memory of an admin key (``sessionStorage``), checked against the admin API before it is kept: a page without a key
has none of them in its DOM.

    install(app)    # api/app.py: the pages and /ui/static
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from starlette.responses import HTMLResponse

from recengine import __version__

STATIC_DIR = Path(__file__).parent / "static"
#: page name → (path, title, template): the navigation bar lists them in this order.
PAGES: dict[str, tuple[str, str, str]] = {
    "users": ("/ui", "Users", "users.html.j2"),
    "engines": ("/ui/engines", "Engines", "engines.html.j2"),
    "catalogue": ("/ui/catalogue", "Catalogue", "catalogue.html.j2"),
    "experiments": ("/ui/experiments", "Experiments", "experiments.html.j2"),
}

_env = Environment(
    loader=PackageLoader("recengine.console", "templates"),
    autoescape=select_autoescape(["html", "j2"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
router = APIRouter(include_in_schema=False)


def render(page: str, request: Request, **context: Any) -> HTMLResponse:
    _, title, template = PAGES[page]
    settings = request.app.state.settings
    html = _env.get_template(template).render(
        page=page,
        title=title,
        pages=PAGES,
        version=__version__,
        default_k=settings.serving.default_k,
        max_k=settings.serving.max_k,
        **context,
    )
    # The page is a shell around API calls: never cache a stale one after an upgrade.
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


@router.get("/ui", response_class=HTMLResponse)
async def users_page(request: Request) -> HTMLResponse:
    return render("users", request)


@router.get("/ui/engines", response_class=HTMLResponse)
async def engines_page(request: Request) -> HTMLResponse:
    return render("engines", request)


@router.get("/ui/catalogue", response_class=HTMLResponse)
async def catalogue_page(request: Request) -> HTMLResponse:
    return render("catalogue", request)


@router.get("/ui/experiments", response_class=HTMLResponse)
async def experiments_page(request: Request) -> HTMLResponse:
    return render("experiments", request)


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=STATIC_DIR), name="console-static")
