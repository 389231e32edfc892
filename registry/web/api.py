"""The JSON API for scripts, under /api/v1: patients and records, findings, results, and workbook imports.

A request carries a personal token (``Authorization: Bearer mda5_...``, registry/tokens.py); it reads and writes
what an account of the token's role and sites may in the forms, with the same rules and messages. Every request
made with a token is logged (refused ones too) and counted against the token's rate limit. The API's OpenAPI
description and its documentation page are for signed-in users (a session) and token holders; birth dates are never
returned (the forms show them to those who enter them).
"""

from __future__ import annotations

import tempfile
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from registry.codes import SITE_ROLES, Role
from registry.ingest import Problem, show
from registry.models import Patient, Site
from registry.sheets import SHEETS, stored_rows
from registry.tokens import Caller, RateLimit, authenticate, claim_use, finish_use, log_refusal
from registry.web.pages import READERS_OF_RESULTS, WRITERS, LatestChecks, client_address, engine_of, page
from registry.web.results import CHECKERS
from registry.web.sessions import signed_in

PREFIX = "/api/v1"
#: What the API never returns (the forms show a birth date to those who enter it; scripts do not need it).
WITHHELD = frozenset({"birth_date"})
#: The largest page of the patient list, and the largest workbook an import takes.
LARGEST_PAGE = 500
LARGEST_UPLOAD = 50 * 1024**2

router = APIRouter(prefix=PREFIX, tags=["registry"])


def _refuse(status: int, detail: str, headers: dict[str, str] | None = None) -> HTTPException:
    return HTTPException(status_code=status, detail=detail, headers=headers)


def _bearer(request: Request) -> str | None:
    scheme, _, secret = request.headers.get("authorization", "").partition(" ")
    return secret.strip() if scheme.lower() == "bearer" and secret.strip() else None


def caller(request: Request) -> Caller:
    """The token's caller; 401 without a standing token, 429 past its rate limit (each logged as a use)."""
    secret = _bearer(request)
    if secret is None:
        raise _refuse(401, "an API token is needed: Authorization: Bearer <token> (registry token create)",
                      {"WWW-Authenticate": "Bearer"})  # fmt: skip
    now, limit = datetime.now(UTC), request.app.state.api_rate_limit
    asked = (request.method, request.url.path, client_address(request))
    with engine_of(request).begin() as connection:
        found = authenticate(connection, secret, now)
        if isinstance(found, Caller):
            request.state.api_use_id, allowed = claim_use(connection, found.token_id, asked, now, limit)
        elif found[0] is not None:
            log_refusal(connection, found[0], asked, now)
    if not isinstance(found, Caller):
        raise _refuse(401, f"refused: {found[1]}", {"WWW-Authenticate": 'Bearer error="invalid_token"'})
    if not allowed:
        request.state.api_use_id = None  # logged as refused already
        raise _refuse(429, f"too many requests: at most {limit.requests} every {limit.seconds} s per token",
                      {"Retry-After": str(limit.seconds)})  # fmt: skip
    return found


Token = Annotated[Caller, Depends(caller)]


def _require(who: Caller, roles: tuple[Role, ...]) -> None:
    if who.role not in roles:
        raise _refuse(403, f"the token's role ({who.role.value}) may not do this")


def _row(values: dict[str, Any]) -> dict[str, Any]:
    """A stored row as JSON: values as the sheets write them, missing-data codes as ``[code]``, no birth date."""
    return {name: None if value is None else show(value) if not isinstance(value, bool | int | float) else value
            for name, value in values.items() if name not in WITHHELD and name not in ("id", "deleted")}  # fmt: skip


@router.get("/patients", summary="The patients the token may read, a page at a time")
def list_patients(
    request: Request,
    who: Token,
    page_number: Annotated[int, Query(alias="page", ge=1)] = 1,
    per_page: Annotated[int, Query(ge=1, le=LARGEST_PAGE)] = 100,
) -> dict[str, Any]:
    """Each patient's own row (as the patients sheet has it, without the birth date), ordered by study_id."""
    live = sa.select(Patient.id).where(Patient.deleted_at.is_(None), Patient.id.in_(who.visible_patients()))
    wanted = live.order_by(Patient.study_id).limit(per_page).offset((page_number - 1) * per_page)
    with engine_of(request).connect() as connection:
        total = connection.execute(sa.select(sa.func.count()).select_from(live.subquery())).scalar_one()
        rows = stored_rows(connection, SHEETS[0], wanted)
    return {"total": total, "page": page_number, "per_page": per_page,
            "patients": [_row(rows[key]) for key in sorted(rows)]}  # fmt: skip


@router.get("/patients/{study_id}", summary="One patient with every record, sheet by sheet")
def read_patient(request: Request, who: Token, study_id: str) -> dict[str, Any]:
    with engine_of(request).connect() as connection:
        patient_id = connection.execute(
            sa.select(Patient.id).where(Patient.study_id == study_id.replace("\x00", ""),
                                        Patient.deleted_at.is_(None), Patient.id.in_(who.visible_patients()))
        ).scalar()  # fmt: skip
        if patient_id is None:
            raise _refuse(404, "no such patient (or not one of the token's sites)")
        document: dict[str, Any] = {}
        for sheet in SHEETS:
            stored = stored_rows(connection, sheet, sa.select(Patient.id).where(Patient.id == patient_id))
            rows = [stored[key] for key in sorted(stored) if not stored[key]["deleted"]]
            document[sheet.name] = _row(rows[0]) if sheet.name == "patients" else [_row(v) for v in rows]
    return document


@router.get("/findings", summary="The latest data-quality findings (runs the checks if none has run yet)")
async def read_findings(request: Request, who: Token) -> dict[str, Any]:
    """The registry's latest run for the readers of results; a coordinator's token gets its sites' findings, as a
    coordinator's checks page (run now: a coordinator's run is theirs alone, never the registry's)."""
    _require(who, CHECKERS)
    engine, config = engine_of(request), request.app.state.config
    checks: LatestChecks | None = None if who.role in SITE_ROLES else request.app.state.latest_checks
    if checks is None:
        from registry.quality import run_checks
        from registry.quality.incremental import check_sites
        from registry.tables import load_tables

        def run() -> Any:
            if who.role not in SITE_ROLES:
                return run_checks(load_tables(engine), config, date.today())
            with engine.connect() as connection:
                sites = connection.execute(sa.select(Site.code).where(Site.id.in_(who.site_ids))).scalars().all()
                return check_sites(connection, sites, config, date.today())

        checks = LatestChecks(await run_in_threadpool(run), datetime.now(UTC), who.actor)
        if who.role not in SITE_ROLES:
            request.app.state.latest_checks = checks
    from registry.quality.output import shareable

    findings = shareable(checks.findings(engine))
    return {"ran_at": checks.ran_at.isoformat(), "ran_by": checks.ran_by, "total": len(findings),
            "findings": [{k: _json_value(v) for k, v in f.items()} for f in findings.to_dict("records")]}  # fmt: skip


def _json_value(value: Any) -> Any:
    import pandas as pd

    if value is None or (not isinstance(value, str | list | dict) and pd.isna(value)):
        return None
    if isinstance(value, bool | int | float | str):
        return value
    return show(value)


@router.get("/results", summary="Every analysis, as registry analyze writes it")
async def read_results(request: Request, who: Token) -> dict[str, Any]:
    _require(who, READERS_OF_RESULTS)
    import json

    from registry.analysis.run import analyze
    from registry.cohort import COLUMNS, build_cohort
    from registry.tables import load_tables

    config = request.app.state.config

    def results() -> dict[str, Any]:
        cohort = build_cohort(load_tables(engine_of(request), COLUMNS), config)
        if (why := cohort.why_not_analysable()) is not None:
            raise _refuse(409, why)
        return json.loads(json.dumps(analyze(cohort, config)))

    return await run_in_threadpool(results)


def _problem(p: Problem) -> dict[str, Any]:
    return {"severity": p.severity, "sheet": p.source, "row": p.row, "column": p.column,
            "value": None if p.value is None else show(p.value), "message": p.message, "text": str(p)}  # fmt: skip


def _outside_sites(engine: sa.Engine, who: Caller, path: Path) -> list[Problem]:
    """For a coordinator's (or investigator's) token: the rows of a workbook that name a patient or site not theirs."""
    from registry import workbook

    with engine.connect() as connection:
        own = set(connection.execute(sa.select(Site.code).where(Site.id.in_(who.site_ids))).scalars())
        stored = dict(connection.execute(sa.select(Patient.study_id, Site.code).join(Site)).all())
    problems = []
    for raw in workbook.read(path):
        header = [str(cell).strip() if cell is not None else "" for cell in raw.header]
        at = {name: header.index(name) for name in ("study_id", "site") if name in header}
        for number, cells in raw.rows:
            study_id = cells[at["study_id"]] if "study_id" in at and at["study_id"] < len(cells) else None
            site = cells[at["site"]] if "site" in at and at["site"] < len(cells) else None
            if site is not None and str(site).strip() and str(site).strip() not in own:
                problems.append(Problem(raw.source, number, "site", site, "is not one of the token's sites"))
            elif study_id is not None and stored.get(str(study_id).strip()) not in (None, *own):
                problems.append(Problem(raw.source, number, "study_id", study_id, "is a patient of another site"))
    return problems


@router.post("/imports", summary="Import a workbook (.xlsx): the same rules and messages as registry import")
async def submit_import(
    request: Request,
    who: Token,
    workbook_file: Annotated[UploadFile, File(alias="workbook", description="The .xlsx workbook")],
    dry_run: bool = False,
    strict: bool = False,
) -> JSONResponse:
    """All or nothing: every row is validated, nothing is written unless all are valid (201 written, 200 a dry run
    or nothing changed, 422 refused)."""
    _require(who, WRITERS)
    from registry.entry_checks import EntryChecks
    from registry.ingest import import_path
    from registry.workbook import WorkbookError

    name = Path(workbook_file.filename or "upload.xlsx").name
    data = await workbook_file.read(LARGEST_UPLOAD + 1)
    if len(data) > LARGEST_UPLOAD:
        raise _refuse(413, f"{name}: larger than {LARGEST_UPLOAD // 1024**2} MB")
    if not name.lower().endswith(".xlsx"):
        raise _refuse(422, f"{name}: an .xlsx workbook is expected (registry template writes one)")
    engine, config = engine_of(request), request.app.state.config

    def run() -> Any:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / name
            path.write_bytes(data)
            if who.role in SITE_ROLES and (outside := _outside_sites(engine, who, path)):
                return None, outside
            checks = EntryChecks(config, date.today())
            return import_path(engine, path, actor=who.actor, reason=f"import of {name} (API)", dry_run=dry_run,
                               checks=checks, strict=strict), []  # fmt: skip

    try:
        result, outside = await run_in_threadpool(run)
    except WorkbookError as error:
        raise _refuse(422, str(error)) from None
    if result is None:
        return JSONResponse({"written": False, "problems": [_problem(p) for p in outside]}, status_code=422)
    document = {
        "written": result.written,
        "counts": {sheet: vars(counts) for sheet, counts in result.counts.items()},
        "problems": [_problem(p) for p in result.problems],
        "findings_added": None if result.findings is None else len(result.findings),
    }
    status = 422 if result.errors else 201 if result.written else 200
    return JSONResponse(document, status_code=status)


def _docs_reader(request: Request) -> None:
    """The API's description is for signed-in users and token holders."""
    if request.headers.get("authorization"):
        caller(request)
        return
    if signed_in(request) is None:
        raise _refuse(401, "sign in (or present an API token) to read the API's description")


@router.get("/openapi.json", include_in_schema=False, dependencies=[Depends(_docs_reader)])
def openapi_document(request: Request) -> dict[str, Any]:
    return _description()


def _description() -> dict[str, Any]:
    """The OpenAPI description of the API's own routes (the forms are pages, not API)."""
    from fastapi.openapi.utils import get_openapi

    import registry

    return get_openapi(title="MDA5-ILD registry API", version=registry.__version__, routes=router.routes,
                       description=__doc__)  # fmt: skip


@router.get("/docs", include_in_schema=False, response_class=HTMLResponse, dependencies=[Depends(_docs_reader)])
def documentation(request: Request) -> HTMLResponse:
    """The API described from its OpenAPI document, as a page of the application (no script from elsewhere)."""
    document = _description()
    operations = [
        {"method": method.upper(), "path": path, "summary": op.get("summary", ""),
         "description": op.get("description", ""),
         "parameters": [(p["name"], p["in"], p.get("required", False)) for p in op.get("parameters", [])],
         "responses": sorted(op.get("responses", {}))}
        for path, methods in document["paths"].items() for method, op in methods.items()
    ]  # fmt: skip
    return page(request, "api.html", me=signed_in(request), operations=operations, info=document["info"])


async def _refused_before_upload(request: Request) -> JSONResponse | None:
    """An import's body is read before any dependency runs: without a standing token, or larger than an import
    takes (or of no declared length), it is refused before a byte of it is read."""
    if _bearer(request) is None:
        return JSONResponse({"detail": "an API token is needed: Authorization: Bearer <token>"}, 401)
    length = request.headers.get("content-length", "")
    if not length.isdigit():
        return JSONResponse({"detail": "an import needs a Content-Length"}, 411)
    if int(length) > LARGEST_UPLOAD + 1024**2:  # the workbook and the multipart form around it
        return JSONResponse({"detail": f"larger than an import takes ({LARGEST_UPLOAD // 1024**2} MB)"}, 413)

    def standing() -> Caller | tuple[int | None, str]:
        with engine_of(request).connect() as connection:
            return authenticate(connection, _bearer(request) or "", datetime.now(UTC))

    found = await run_in_threadpool(standing)
    return None if isinstance(found, Caller) else JSONResponse({"detail": f"refused: {found[1]}"}, 401)


def install(app: FastAPI, rate_limit: RateLimit) -> None:
    """The API's routes, its rate limit, and the log of every request made with a token."""
    app.state.api_rate_limit = rate_limit
    app.include_router(router)

    @app.middleware("http")
    async def _guard_and_log(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        upload = request.method == "POST" and request.url.path == f"{PREFIX}/imports"
        if upload and (refused := await _refused_before_upload(request)) is not None:
            return refused
        response = await call_next(request)
        if (use_id := getattr(request.state, "api_use_id", None)) is not None:

            def finish() -> None:
                with engine_of(request).begin() as connection:
                    finish_use(connection, use_id, response.status_code)

            await run_in_threadpool(finish)
        return response
