"""Data-quality checks and the report, on demand, for analysts, data managers and admins; the checks of their
own sites for coordinators.

The checks run over the whole registry, as ``registry check`` does; their findings stay
in the application until the next run, and the patient list and pages show them, each
linked to the record and field it concerns. A coordinator's run covers their sites'
patients only (as ``registry check --site``), is kept for them alone and never replaces
the registry's run. The report is rendered on request, as ``registry report`` does, and
refused while the data have error findings.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from registry.codes import Role
from registry.entry import EntryError
from registry.models import Account
from registry.quality import run_checks
from registry.quality.incremental import check_sites
from registry.report.build import NothingToAnalyse, ReportRefused, build_report
from registry.reviews import open_findings, reopen, verify
from registry.signoff import resolution_counts
from registry.tables import load_tables
from registry.web.pages import (
    LOCKERS,
    READERS_OF_RESULTS,
    SHEET_OF_TABLE,
    LatestChecks,
    PageNumber,
    Signed,
    engine_of,
    entry_sites,
    latest_checks,
    local_path,
    page,
    paged,
    require,
)
from registry.web.records import LARGEST_KEY
from registry.web.security import CsrfToken, check_csrf
from registry.web.workflow import unclosed_for

router = APIRouter()

#: Who may run the checks: a coordinator for their own sites, the readers of results for the registry.
CHECKERS = (Role.COORDINATOR, *READERS_OF_RESULTS)


def _own_sites(request: Request, me: Account) -> tuple[str, ...] | None:
    """A coordinator's sites (their checks cover these), None for everyone else (the registry's checks)."""
    if me.role is not Role.COORDINATOR:
        return None
    with engine_of(request).connect() as connection:
        return tuple(entry_sites(connection, me))


def _latest_checks_of(request: Request, me: Account) -> LatestChecks | None:
    """The registry's latest run, or a coordinator's latest run of their sites as they are now."""
    sites = _own_sites(request, me)
    return latest_checks(request) if sites is None else request.app.state.site_checks.get((me.username, sites))


@router.get("/checks", response_class=HTMLResponse)
def checks_page(request: Request, me: Signed, rule: str = "", number: PageNumber = 1) -> HTMLResponse:
    require(me, CHECKERS)
    return _checks_page(request, me, rule=rule, number=number)


def _checks_page(
    request: Request, me: Account, message: str | None = None, status_code: int = 200, rule: str = "", number: int = 1
) -> HTMLResponse:
    """The last run's summary, and its findings (of one ``rule``, or all) a page at a time."""
    checks, sites = _latest_checks_of(request, me), _own_sites(request, me)
    if checks is None:
        return page(request, "checks.html", status_code, me=me, checks=None, message=message, sites=sites)
    failing = checks.run.summary[checks.run.summary["failing"] > 0]
    findings = checks.findings(engine_of(request))
    open_count = len(open_findings(findings))
    if rule:
        findings = findings[findings["rule"] == rule]
    pages = paged(len(findings), number, "/checks", {"rule": rule})
    return page(
        request, "checks.html", status_code, me=me, checks=checks, message=message, rule=rule, pages=pages,
        rules=failing.to_dict("records"), findings=findings.iloc[pages.first - 1 : pages.last].to_dict("records"),
        open_count=open_count, sheet_of_table=SHEET_OF_TABLE, sites=sites, unclosed=unclosed_for(request, me),
    )  # fmt: skip


@router.post("/checks")
async def run_checks_now(request: Request, me: Signed, csrf: CsrfToken = None) -> Response:
    check_csrf(request, csrf)
    require(me, CHECKERS)
    sites, config = _own_sites(request, me), request.app.state.config

    def run() -> None:
        if sites is not None:
            with engine_of(request).connect() as connection:
                run = check_sites(connection, sites, config, date.today())
            request.app.state.site_checks[me.username, sites] = LatestChecks(run, datetime.now(UTC), me.username)
            return
        run = run_checks(load_tables(engine_of(request)), config, date.today())
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
            lambda: build_report(
                load_tables(engine_of(request)),
                config,
                today=date.today(),
                resolution=resolution_counts(engine_of(request)),
            )
        )
    except ReportRefused as refused:
        request.app.state.latest_checks = LatestChecks(refused.checks, datetime.now(UTC), me.username)
        return _checks_page(request, me, f"The report is not rendered: {refused}. Resolve them first.", 409)
    except NothingToAnalyse as empty:
        return _checks_page(request, me, f"The report is not rendered: {empty}.", 409)
    name = f"mda5-registry-report-{(config.data_cutoff or date.today()).isoformat()}.pdf"
    headers = {"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"}
    return Response(made.pdf, media_type="application/pdf", headers=headers)


@router.post("/findings/verify")
def verify_finding(
    request: Request,
    me: Signed,
    rule: Annotated[str, Form()],
    table: Annotated[str, Form()],
    record: Annotated[str, Form()],
    field: Annotated[str, Form()],
    value: Annotated[str, Form()] = "",
    comment: Annotated[str, Form()] = "",
    back: Annotated[str, Form()] = "/checks",
    csrf: CsrfToken = None,
) -> Response:
    """A data manager verifies a warning of the latest run, as it was shown to them."""
    check_csrf(request, csrf)
    require(me, LOCKERS)
    checks = latest_checks(request)
    found = checks.run.findings if checks is not None else None
    if found is not None:
        found = found[(found["rule"] == rule) & (found["table"] == table) & (found["record"] == record)
                      & (found["field"] == field) & (found["value"].fillna("") == value)]  # fmt: skip
    if found is None or found.empty:
        request.session["flash"] = "Not done: the finding is not in the latest check run (run the checks again)."
    else:
        try:
            verify(engine_of(request), found.iloc[0].to_dict(), comment=comment, actor=me.username)
            request.session["flash"] = f"Finding {rule} on {field} marked verified."
        except EntryError as refused:
            request.session["flash"] = f"Not done: {refused}."
    return RedirectResponse(local_path(back, "/checks"), status_code=303)


@router.post("/findings/reviews/{review_id}/reopen")
def reopen_finding(
    request: Request,
    me: Signed,
    review_id: Annotated[int, Path(ge=1, le=LARGEST_KEY)],
    reason: Annotated[str, Form()] = "",
    back: Annotated[str, Form()] = "/checks",
    csrf: CsrfToken = None,
) -> Response:
    check_csrf(request, csrf)
    require(me, LOCKERS)
    try:
        reopen(engine_of(request), review_id, actor=me.username, reason=reason)
        request.session["flash"] = "Review withdrawn: the finding is open again."
    except LookupError:
        raise HTTPException(status_code=404, detail="No such review") from None
    except EntryError as refused:
        request.session["flash"] = f"Not done: {refused}."
    return RedirectResponse(local_path(back, "/checks"), status_code=303)
