"""Every refusal and failure answers a page of the application that says what to do next, never raw JSON (the JSON
API's, under /api/, answer JSON: {"detail": ...}).

A form sent after the session ended is not lost: the sign-in page carries what was typed
(never the CSRF token or a password), and after signing in the form opens again with it,
not saved (:func:`registry.web.pages.resumed`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from registry.models import Account
from registry.web.pages import NotSignedIn, account, page
from registry.web.records import FORM_SAVES

#: Submitted fields that are never carried through the sign-in page.
NOT_CARRIED = ("csrf_token", "password")
ALL_PATIENTS = ("/patients", "All patients")
SIGNED_OUT = "You were signed out before this was saved: sign in again to go back to the form with what you typed."


@dataclass(frozen=True)
class Advice:
    title: str
    next_step: str


#: What each refusal means and what to do about it.
ADVICE = {
    403: Advice(
        "Not allowed", "Go back to the patient list; if your work needs this, ask a data manager or an administrator."
    ),
    404: Advice(
        "Not found",
        "There is no such page or patient (or it belongs to a site your account does not work for): "
        "go back to the patient list.",
    ),
    409: Advice("Not done", "Reload the page to see what is stored now, then try again."),
    422: Advice("Not accepted", "Go back, correct what is listed, and send it again."),
    500: Advice(
        "Something went wrong",
        "The error has been logged and nothing more was done. Reload the page or go back and try again; "
        "if it happens again, tell the administrator when it happened.",
    ),
}


def error_page(request: Request, status_code: int, problems: list[str], me: Account | None = None,
               headers: dict[str, str] | None = None) -> HTMLResponse:  # fmt: skip
    """The error page: what went wrong (``problems``, in words) and what to do next."""
    advice = ADVICE.get(status_code) or Advice(HTTPStatus(status_code).phrase, ADVICE[409].next_step)
    answer = page(request, "error.html", status_code, me=me, advice=advice, problems=problems, links=[ALL_PATIENTS])
    answer.headers.update(headers or {})
    return answer


def failed(request: Request) -> Response:
    """The page of an unexpected error (500): no traceback, no detail (for the API: JSON, as its other answers)."""
    if _is_api(request):
        return JSONResponse({"detail": "an unexpected error: nothing was written (the server log names where)"}, 500)
    return error_page(request, 500, [])


async def _signed_in(request: Request) -> Account | None:
    """Who is signed in, for the page's header; None if nobody is."""
    try:
        return await run_in_threadpool(account, request)
    except NotSignedIn:
        return None


def _problems(detail: object, status_code: int) -> list[str]:
    if isinstance(detail, str) and detail and detail != HTTPStatus(status_code).phrase:
        return [detail if detail.endswith(".") else f"{detail}."]
    return []


def _name(location: tuple) -> str:
    """The parameter a validation error is about, as a form or address names it (``page``, not ``query.page``)."""
    return ".".join(str(part) for part in location[1:]) or str(location[0])


def _form_page_at(request: Request) -> bool:
    """Whether this POST saves an entry form, whose page (GET, same address) can open again with what was typed."""
    return request.scope.get("endpoint") in FORM_SAVES


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def install(app: FastAPI) -> None:
    """Answer refusals, invalid requests and an ended session with pages."""

    @app.exception_handler(HTTPException)
    async def _refused(request: Request, error: HTTPException) -> Response:
        if _is_api(request):
            return JSONResponse({"detail": error.detail}, error.status_code, headers=error.headers)
        problems = _problems(error.detail, error.status_code)
        return error_page(request, error.status_code, problems, await _signed_in(request), error.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> Response:
        problems = [f"{_name(e['loc'])}: {e['msg']}." for e in error.errors()]
        if _is_api(request):
            return JSONResponse({"detail": problems}, 422)
        return error_page(request, 422, problems, await _signed_in(request))

    @app.exception_handler(NotSignedIn)
    async def _sign_in_first(request: Request, _: NotSignedIn) -> Response:
        if request.method == "POST" and _form_page_at(request):
            form = await request.form()
            typed = {name: value for name, value in form.items() if isinstance(value, str) and name not in NOT_CARRIED}
            return page(request, "login.html", 401, next=request.url.path, error=SIGNED_OUT, username="",
                        typed=json.dumps(typed))  # fmt: skip
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target, safe='/')}", status_code=303)
