"""Data-quality checks and the report, on demand, for analysts, data managers and admins.

The checks run over the whole registry, as ``registry check`` does; their findings stay
in the application until the next run, and the patient list and pages show them, each
linked to the record and field it concerns. The report is rendered on request, as
``registry report`` does, and refused while the data have error findings.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from registry.quality import run_checks
from registry.report.build import NothingToAnalyse, ReportRefused, build_report
from registry.tables import load_tables
from registry.web.pages import READERS_OF_RESULTS, LatestChecks, Signed, engine_of, latest_checks, page, require
from registry.web.patients import SHEET_OF_TABLE
from registry.web.security import check_csrf

router = APIRouter()


@router.get("/checks", response_class=HTMLResponse)
def checks_page(request: Request, me: Signed) -> HTMLResponse:
    require(me, READERS_OF_RESULTS)
    return _checks_page(request, me)


def _checks_page(request: Request, me: Signed, message: str | None = None, status_code: int = 200) -> HTMLResponse:
    checks = latest_checks(request)
    failing = checks.run.summary[checks.run.summary["failing"] > 0] if checks else None
    return page(
        request, "checks.html", status_code, me=me, checks=checks, message=message,
        rules=failing.to_dict("records") if failing is not None else [],
        findings=checks.run.findings.to_dict("records") if checks else [], sheet_of_table=SHEET_OF_TABLE,
    )  # fmt: skip


@router.post("/checks")
async def run_checks_now(
    request: Request, me: Signed, csrf: Annotated[str | None, Form(alias="csrf_token")] = None
) -> Response:
    check_csrf(request, csrf)
    require(me, READERS_OF_RESULTS)

    def run() -> None:
        tables = load_tables(engine_of(request))
        run = run_checks(tables, request.app.state.config, date.today())
        request.app.state.latest_checks = LatestChecks(run, datetime.now(UTC), me.username)

    await run_in_threadpool(run)
    return RedirectResponse("/checks", status_code=303)


@router.get("/report.pdf", response_model=None)
async def report_pdf(request: Request, me: Signed) -> Response:
    """The PDF report of the registry as it is now (the same document ``registry report`` renders)."""
    require(me, READERS_OF_RESULTS)
    config = request.app.state.config
    try:
        made = await run_in_threadpool(
            lambda: build_report(load_tables(engine_of(request)), config, today=date.today())
        )
    except ReportRefused as refused:
        request.app.state.latest_checks = LatestChecks(refused.checks, datetime.now(UTC), me.username)
        return _checks_page(request, me, f"The report is not rendered: {refused}. Resolve them first.", 409)
    except NothingToAnalyse as empty:
        return _checks_page(request, me, f"The report is not rendered: {empty}.", 409)
    name = f"mda5-registry-report-{(config.data_cutoff or date.today()).isoformat()}.pdf"
    headers = {"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"}
    return Response(made.pdf, media_type="application/pdf", headers=headers)
