"""The JSON API: personal tokens (revoked, expired, wrong role), site scoping as the forms, rate limits, every use
logged, imports with the workbook's rules and messages, the OpenAPI description for signed-in users."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import WEB_PASSWORD
from fastapi.testclient import TestClient
from test_ingest import snapshot
from test_web import sign_in
from typer.testing import CliRunner

import registry
from registry.audit import REDACTED, audited_session
from registry.cli import app as cli
from registry.codes import Role
from registry.export import export
from registry.models import ApiToken, ApiTokenUse, AuditLog, LabResult
from registry.privacy import Scanner, registered_identifiers
from registry.tokens import RateLimit, create_token, revoke_token
from registry.web.app import create_app


def _token(engine, name: str, role: Role, sites: list[str] | None = None, **options) -> str:
    with audited_session(engine, actor="admin") as session:
        _, secret = create_token(session, name, role, sites or [], **options)
        session.commit()
    return secret


def _bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def api(web_registry):
    return TestClient(create_app(web_registry, secret_key="test-secret", api_rate_limit=RateLimit(1000, 60)))


def _uses(engine) -> list[tuple]:
    with engine.connect() as connection:
        return [tuple(r) for r in connection.execute(
            sa.select(ApiToken.name, ApiTokenUse.method, ApiTokenUse.path, ApiTokenUse.status)
            .join(ApiToken, ApiToken.id == ApiTokenUse.token_id).order_by(ApiTokenUse.id)
        )]  # fmt: skip


def test_without_a_standing_token_nothing_is_answered(api, web_registry):
    response = api.get("/api/v1/patients")
    assert (response.status_code, response.json()) == (
        401,
        {"detail": "an API token is needed: Authorization: Bearer <token> (registry token create)"},
    )
    assert response.headers["www-authenticate"] == "Bearer"
    unknown = api.get("/api/v1/patients", headers=_bearer("mda5_not-a-token"))
    assert (unknown.status_code, unknown.json()) == (401, {"detail": "refused: unknown token"})
    secret = _token(web_registry, "revoked-one", Role.DATA_MANAGER)
    assert api.get("/api/v1/patients", headers=_bearer(secret)).status_code == 200
    with audited_session(web_registry, actor="admin") as session:
        revoke_token(session, "revoked-one")
        session.commit()
    revoked = api.get("/api/v1/patients", headers=_bearer(secret))
    assert (revoked.status_code, revoked.json()) == (401, {"detail": "refused: the token was revoked"})
    old = _token(web_registry, "expired-one", Role.DATA_MANAGER, days=1, now=datetime.now(UTC) - timedelta(days=2))
    expired = api.get("/api/v1/patients", headers=_bearer(old))
    assert (expired.status_code, expired.json()) == (401, {"detail": "refused: the token has expired"})
    assert _uses(web_registry) == [
        ("revoked-one", "GET", "/api/v1/patients", 200),
        ("revoked-one", "GET", "/api/v1/patients", 401),
        ("expired-one", "GET", "/api/v1/patients", 401),
    ]


def test_a_site_token_reads_its_sites_patients_exactly_as_the_forms(api, web_registry):
    coordinator = _bearer(_token(web_registry, "cora-script", Role.COORDINATOR, ["DEMO"]))
    manager = _bearer(_token(web_registry, "dana-script", Role.DATA_MANAGER))
    listed = api.get("/api/v1/patients", headers=coordinator).json()
    assert (listed["total"], [p["study_id"] for p in listed["patients"]]) == (4, ["EX-001", "EX-002", "EX-003",
                                                                                 "EX-004"])  # fmt: skip
    everyone = api.get("/api/v1/patients", headers=manager, params={"per_page": 2, "page": 3}).json()
    assert (everyone["total"], [p["study_id"] for p in everyone["patients"]]) == (5, ["EX-901"])
    assert api.get("/api/v1/patients/EX-901", headers=coordinator).status_code == 404
    assert api.get("/api/v1/patients/EX-901", headers=manager).status_code == 200
    document = api.get("/api/v1/patients/EX-001", headers=coordinator).json()
    assert list(document) == ["patients", "antibody_tests", "labs", "pfts", "hrct", "treatments", "adverse_events",
                              "follow_up"]  # fmt: skip
    assert document["patients"]["study_id"] == "EX-001" and "birth_date" not in document["patients"]
    with web_registry.connect() as connection:
        values = sorted(connection.execute(sa.text(
            "SELECT value FROM lab_result JOIN patient ON patient.id = patient_id WHERE study_id = 'EX-001'"
        )).scalars())  # fmt: skip
    assert sorted(lab["value"] for lab in document["labs"]) == values
    assert isinstance(document["follow_up"], list) and document["follow_up"][0]["vital_status"]
    too_many = api.get("/api/v1/patients", headers=manager, params={"per_page": 501})
    assert too_many.status_code == 422 and "per_page" in json.dumps(too_many.json())


def test_a_role_that_may_not_is_refused(api, web_registry):
    coordinator = _bearer(_token(web_registry, "cora-script", Role.COORDINATOR, ["DEMO"]))
    analyst = _bearer(_token(web_registry, "ana-notebook", Role.ANALYST))
    refused = api.get("/api/v1/results", headers=coordinator)
    assert (refused.status_code, refused.json()) == (403, {"detail": "the token's role (coordinator) may not do this"})
    investigator = _bearer(_token(web_registry, "ivy-script", Role.INVESTIGATOR, ["DEMO"]))
    refused = api.get("/api/v1/findings", headers=investigator)
    assert (refused.status_code, refused.json()) == (403, {"detail": "the token's role (investigator) may not do this"})
    upload = api.post("/api/v1/imports", headers=analyst, files={"workbook": ("x.xlsx", b"PK", "application/zip")})
    assert (upload.status_code, upload.json()) == (403, {"detail": "the token's role (analyst) may not do this"})


def test_the_rate_limit_answers_429_with_retry_after(web_registry):
    client = TestClient(create_app(web_registry, secret_key="k", api_rate_limit=RateLimit(3, 60)))
    headers = _bearer(_token(web_registry, "busy-loop", Role.ANALYST))
    statuses = [client.get("/api/v1/patients", headers=headers).status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    last = client.get("/api/v1/patients", headers=headers)
    assert (last.headers["retry-after"], last.json()["detail"]) == ("60", "too many requests: at most 3 every 60 s "
                                                                           "per token")  # fmt: skip
    assert [use[3] for use in _uses(web_registry)] == [200, 200, 200, 429, 429, 429]


def test_findings_and_results_for_readers_of_results(api, web_registry, tmp_path):
    analyst = _bearer(_token(web_registry, "ana-notebook", Role.ANALYST))
    with audited_session(web_registry, actor="test") as session:  # a value past its plausible range: a finding
        lab = session.exec(sa.select(LabResult).order_by(LabResult.id)).scalars().first()
        lab.value = 1e7
        session.commit()
    findings = api.get("/api/v1/findings", headers=analyst)
    assert findings.status_code == 200, findings.text
    body = findings.json()
    assert body["ran_by"] == "token:ana-notebook" and body["total"] == len(body["findings"])
    planted = [f for f in body["findings"] if f["table"] == "lab_result" and f["field"] == "value"]
    assert (
        planted and {"rule", "severity", "study_id", "message"} <= set(planted[0]) and planted[0]["value"] == "10000000"
    )
    results = api.get("/api/v1/results", headers=analyst)
    assert results.status_code == 200, results.text
    assert results.json()["flow"]["registered"] == 5 and len(results.json()["data_fingerprint"]) == 64
    out = tmp_path / "answers"
    out.mkdir()
    (out / "findings.json").write_text(findings.text, encoding="utf-8")
    (out / "results.json").write_text(results.text, encoding="utf-8")
    (out / "patient.json").write_text(api.get("/api/v1/patients/EX-001", headers=analyst).text, encoding="utf-8")
    (out / "patients.json").write_text(api.get("/api/v1/patients", headers=analyst).text, encoding="utf-8")
    with web_registry.connect() as connection:
        scan = Scanner(registered_identifiers(connection)).scan([out])
    assert scan.findings == [] and scan.unreadable == [] and len(scan.scanned) == 4


def _workbook(engine, folder: Path, change=None) -> bytes:
    path = folder / "cases.xlsx"
    export(engine, path)
    if change is not None:
        from openpyxl import load_workbook

        book = load_workbook(path)
        change(book)
        book.save(path)
    return path.read_bytes()


def _first_lab_value(book, value) -> None:
    book["labs"]["D2"] = value


def test_an_import_through_the_api_has_the_workbooks_rules_messages_and_audit(api, web_registry, tmp_path):
    manager = _bearer(_token(web_registry, "dana-etl", Role.DATA_MANAGER))
    bad = _workbook(web_registry, tmp_path, lambda book: _first_lab_value(book, "12,5"))
    before = snapshot(web_registry)
    refused = api.post("/api/v1/imports", headers=manager, files={"workbook": ("cases.xlsx", bad)})
    assert refused.status_code == 422
    assert refused.json()["written"] is False
    assert [p["text"] for p in refused.json()["problems"] if p["severity"] == "error"] == [
        'labs row 2, column value: "12,5" is not a number (use a point for decimals and no thousands separators)'
    ]
    assert snapshot(web_registry) == {**before, "api_token_use": snapshot(web_registry)["api_token_use"]}
    good = _workbook(web_registry, tmp_path, lambda book: _first_lab_value(book, 99.5))
    dry = api.post("/api/v1/imports", headers=manager, files={"workbook": ("cases.xlsx", good)},
                   params={"dry_run": "true"})  # fmt: skip
    assert (dry.status_code, dry.json()["written"], dry.json()["counts"]["labs"]["updated"]) == (200, False, 1)
    done = api.post("/api/v1/imports", headers=manager, files={"workbook": ("cases.xlsx", good)})
    assert (done.status_code, done.json()["written"]) == (201, True)
    with web_registry.connect() as connection:
        entry = connection.execute(sa.select(AuditLog).order_by(AuditLog.id.desc())).first()
        assert 99.5 in connection.execute(sa.select(LabResult.value)).scalars().all()
    assert (entry.actor, entry.reason, entry.table_name) == ("token:dana-etl", "import of cases.xlsx (API)",
                                                             "lab_result")  # fmt: skip


def test_a_site_tokens_import_stays_within_its_sites(api, web_registry, tmp_path):
    coordinator = _bearer(_token(web_registry, "cora-etl", Role.COORDINATOR, ["DEMO"]))
    workbook = _workbook(web_registry, tmp_path)  # holds EX-901 of site OTHER
    before = snapshot(web_registry)
    refused = api.post("/api/v1/imports", headers=coordinator, files={"workbook": ("cases.xlsx", workbook)})
    assert refused.status_code == 422
    texts = [p["text"] for p in refused.json()["problems"]]
    assert 'patients row 6, column site: "OTHER" is not one of the token\'s sites' in texts
    assert any(t.startswith("labs row ") and t.endswith('column study_id: "EX-901" is a patient of another site')
               for t in texts)  # fmt: skip
    after = snapshot(web_registry)
    assert {k: v for k, v in after.items() if k != "api_token_use"} == {
        k: v for k, v in before.items() if k != "api_token_use"
    }
    not_a_workbook = api.post("/api/v1/imports", headers=coordinator, files={"workbook": ("cases.csv", b"a,b\n")})
    assert (not_a_workbook.status_code, not_a_workbook.json()) == (
        422,
        {"detail": "cases.csv: an .xlsx workbook is expected (registry template writes one)"},
    )


def test_the_openapi_description_is_for_signed_in_users(api, web_registry):
    assert api.get("/api/v1/openapi.json").status_code == 401
    assert api.get("/api/v1/docs").status_code == 401
    assert sign_in(api, "cora", WEB_PASSWORD).status_code == 303
    document = api.get("/api/v1/openapi.json").json()
    assert document["openapi"].startswith("3.") and sorted(document["paths"]) == [
        "/api/v1/findings", "/api/v1/imports", "/api/v1/patients", "/api/v1/patients/{study_id}", "/api/v1/results",
    ]  # fmt: skip
    page = api.get("/api/v1/docs")
    assert page.status_code == 200 and "/api/v1/patients/{study_id}" in page.text and "Bearer" in page.text
    assert f'<footer class="muted">mda5-registry {registry.__version__}</footer>' in page.text  # not the API's info
    fresh = TestClient(create_app(web_registry, secret_key="k"))
    token = _bearer(_token(web_registry, "reader", Role.ANALYST))
    assert fresh.get("/api/v1/openapi.json", headers=token).status_code == 200


def test_token_commands(web_registry, tmp_path):
    url = web_registry.url.render_as_string(hide_password=False)
    runner = CliRunner()
    made = runner.invoke(cli, ["--database", url, "token", "create", "jdoe-notebook", "--role", "coordinator",
                               "--site", "DEMO", "--days", "30", "--actor", "admin"])  # fmt: skip
    assert made.exit_code == 0, made.output
    lines = made.output.splitlines()
    assert lines[0] == "Token jdoe-notebook (coordinator) created" and lines[1].startswith("Expires ")
    secret = lines[2]
    assert secret.startswith("mda5_") and len(secret) > 40
    listed = runner.invoke(cli, ["--database", url, "token", "list"]).output
    assert listed.startswith("jdoe-notebook\tcoordinator\tDEMO\tactive\texpires ") and secret not in listed
    with web_registry.connect() as connection:
        stored = connection.execute(sa.select(ApiToken.token_hash)).scalar_one()
        logged = connection.execute(sa.select(AuditLog).where(AuditLog.table_name == "api_token")).first()
    assert secret not in stored and len(stored) == 64
    assert (logged.actor, logged.reason, logged.new_values["token_hash"]) == ("admin", "API token jdoe-notebook "
                                                                              "created", REDACTED)  # fmt: skip
    for arguments, message in [
        (
            ["create", "Bad Name", "--role", "analyst"],
            "Not done: 'Bad Name' is not a usable token name: lower-case "
            "letters a-z, digits, '.', '_' and '-', starting with a letter or digit, at most 64 characters",
        ),
        (["create", "x", "--role", "analyst", "--days", "400"], "Not done: a token lasts 1 to 365 days, not 400"),
        (["create", "y", "--role", "coordinator"], "Not done: a coordinator needs at least one site (--site CODE)"),
        (
            ["create", "jdoe-notebook", "--role", "analyst"],
            "Not done: a token named 'jdoe-notebook' exists already (tokens are never reused: choose another name)",
        ),
        (["revoke", "nobody"], "Not done: no token named 'nobody' (registry token list)"),
    ]:
        refused = runner.invoke(cli, ["--database", url, "token", *arguments, "--actor", "admin"])
        assert (refused.exit_code, refused.output.strip()) == (1, message)
    revoked = runner.invoke(cli, ["--database", url, "token", "revoke", "jdoe-notebook", "--actor", "admin"])
    assert (revoked.exit_code, revoked.output.strip()) == (0, "Token jdoe-notebook revoked")
    assert "\trevoked\t" in runner.invoke(cli, ["--database", url, "token", "list"]).output


def test_parallel_requests_cannot_pass_the_rate_limit_together(web_registry):
    """The count and the request's own use are one serialised step: 24 requests at once, 5 answered."""
    from concurrent.futures import ThreadPoolExecutor

    client = TestClient(create_app(web_registry, secret_key="k", api_rate_limit=RateLimit(5, 60)))
    headers = _bearer(_token(web_registry, "parallel", Role.ANALYST))
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda _: client.get("/api/v1/patients", headers=headers).status_code, range(24)))
    assert sorted(statuses) == [200] * 5 + [429] * 19
    assert sorted(use[3] for use in _uses(web_registry)) == [200] * 5 + [429] * 19


def test_an_upload_is_refused_before_its_body_is_read(api, web_registry, monkeypatch):
    from registry.web import api as api_module

    def never(*_, **__):  # the route must not run
        raise AssertionError("the import ran")

    monkeypatch.setattr(api_module, "_outside_sites", never)
    body = b"x" * 1024
    anonymous = api.post("/api/v1/imports", content=body, headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert (anonymous.status_code, anonymous.json()) == (401, {"detail": "an API token is needed: Authorization: "
                                                                         "Bearer <token>"})  # fmt: skip
    secret = _token(web_registry, "uploader", Role.COORDINATOR, ["DEMO"])
    with audited_session(web_registry, actor="admin") as session:
        revoke_token(session, "uploader")
        session.commit()
    revoked = api.post("/api/v1/imports", content=body, headers={**_bearer(secret), "Content-Type": "text/plain"})
    assert (revoked.status_code, revoked.json()) == (401, {"detail": "refused: the token was revoked"})
    standing = _bearer(_token(web_registry, "big-uploader", Role.DATA_MANAGER))
    huge = api.post("/api/v1/imports", content=body, headers={**standing, "Content-Length": str(52 * 1024**2)})
    assert (huge.status_code, huge.json()) == (413, {"detail": "larger than an import takes (50 MB)"})


def test_an_unexpected_error_answers_json(web_registry, monkeypatch):
    from registry.web import api as api_module

    def broken(*_, **__):
        raise RuntimeError("EX-001 born 1968-03-14")  # a message that may quote data: never answered

    monkeypatch.setattr(api_module, "stored_rows", broken)
    client = TestClient(create_app(web_registry, secret_key="k"), raise_server_exceptions=False)
    response = client.get("/api/v1/patients", headers=_bearer(_token(web_registry, "crash", Role.ANALYST)))
    assert (response.status_code, response.json()) == (
        500,
        {"detail": "an unexpected error: nothing was written (the server log names where)"},
    )


def test_a_coordinators_token_gets_its_sites_findings_as_the_checks_page(api, web_registry):
    with audited_session(web_registry, actor="test") as session:  # a finding at each site
        for lab in session.exec(sa.select(LabResult)).scalars():
            lab.value = 1e7
        session.commit()
    coordinator = _bearer(_token(web_registry, "cora-checks", Role.COORDINATOR, ["DEMO"]))
    analyst = _bearer(_token(web_registry, "ana-checks", Role.ANALYST))
    theirs = api.get("/api/v1/findings", headers=coordinator).json()
    everyone = api.get("/api/v1/findings", headers=analyst).json()
    assert {f["study_id"] for f in theirs["findings"]} == {"EX-001", "EX-002", "EX-003", "EX-004"}
    assert {f["study_id"] for f in everyone["findings"]} == {"EX-001", "EX-002", "EX-003", "EX-004", "EX-901"}
    assert theirs["ran_by"] == "token:cora-checks" and everyone["ran_by"] == "token:ana-checks"
