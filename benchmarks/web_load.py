"""Response times of the web application under concurrent clients, on SQLite and on PostgreSQL.

Run:

    .venv/bin/python -m benchmarks.web_load --clients 20 --seconds 20

For each database it builds a fresh migrated registry holding the 61-patient demo
cohort (fixtures/demo) and one account per client (coordinators of site DEMO and
data managers, alternately), starts the real server (one uvicorn process, one worker,
on a free loopback port; this module with ``--serve``, in a child process), signs
every client in as its own account, then lets the clients (threads, one HTTP
connection each) run a mix of requests for ``--seconds``: the patient list, a
patient's page, a correction of one of their own patients (GET the edit form, POST it
with the smoking history toggled) and a new laboratory result for one of their own
patients (GET the form, POST it with a date no record of that patient has). No two
clients edit the same patient, so every save must succeed (303): any other answer is
counted as an error and described. Afterwards the database is checked to hold every
save that was answered 303. PostgreSQL is the server of ``--postgres-url``, else of
REGISTRY_TEST_POSTGRES_URL, else a throwaway one from tests/postgres.sh (skipped, with
a note, when none can be had; ``--no-postgres`` skips it). Figures go to
docs/benchmarks.md (section ``web_load``), measured and never asserted.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from benchmarks.common import DEMO, DOCS, REPO, fresh_registry, machine, write_section
from registry import db
from registry.accounts import create_account
from registry.audit import audited_session
from registry.codes import Role
from registry.ingest import import_path
from registry.models import LabResult, Patient

try:  # the project's dev extras install httpx2 (starlette's test client); plain httpx works the same
    import httpx
except ImportError:  # pragma: no cover - depends on the environment
    import httpx2 as httpx

POSTGRES_SCRIPT = REPO / "tests" / "postgres.sh"
PASSWORD = "load-test passphrase 2026"  # every benchmark account's (>= 12 characters, as accounts require)
TIMEOUT = 120.0  # seconds a client waits for one answer (httpx's default of 5 s would turn slow answers into errors)

#: Request kinds, in table order: key -> what the table calls it, and the status a correct answer has.
KINDS: dict[str, tuple[str, int]] = {
    "list": ("GET /patients (list of 61)", 200),
    "page": ("GET /patients/{id} (patient page)", 200),
    "edit_form": ("GET /patients/{id}/edit (form)", 200),
    "edit_save": ("POST /patients/{id}/edit (save)", 303),
    "lab_form": ("GET /patients/{id}/labs/new (form)", 200),
    "lab_save": ("POST /patients/{id}/labs/new (add lab)", 303),
}
#: Actions a client picks from (weights from --mix): an action is one request, or a form's GET and POST.
ACTIONS = ("list", "page", "edit", "lab")
SMOKING_TOGGLE = {"never": "former", "former": "never", "current": "former", "": "never"}
FIRST_LAB_DAY = date(2000, 1, 1)  # before every demo record (2017 on), so no clash with stored labs


# -- the server ---------------------------------------------------------------------------------------------------


def serve(port: int) -> None:
    """Run the application over REGISTRY_DATABASE_URL on 127.0.0.1:``port`` (one process, one worker)."""
    import uvicorn

    from registry.web.app import create_app

    app = create_app(db.make_engine(), secret_key=secrets.token_urlsafe(32))
    uvicorn.run(app, host="127.0.0.1", port=port, workers=1, log_level="warning", access_log=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    process: subprocess.Popen
    base: str
    log: Path

    def cpu_seconds(self) -> float | None:
        """User + system CPU time of the server process so far (Linux /proc), None elsewhere."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def running_server(url: str, log: Path) -> Iterator[Server]:
    port = free_port()
    env = os.environ | {db.URL_VARIABLE: url}  # not on the command line, where a password would show
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.web_load", "--serve", "--port", str(port)],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    server = Server(process, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited ({process.returncode}):\n{log.read_text(errors='replace')}")
            try:
                if httpx.get(f"{server.base}/login", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not answer within 60 s:\n{log.read_text(errors='replace')}")
            time.sleep(0.1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- the registry -------------------------------------------------------------------------------------------------


@dataclass
class Registry:
    engine: sa.Engine
    accounts: list[tuple[str, str]]  # (user name, role)
    study_ids: list[str]


def build_registry(url: str, clients: int) -> Registry:
    """A fresh migrated registry: site DEMO, the demo cohort (imported as a workbook), one account per client."""
    engine = fresh_registry(url)
    result = import_path(engine, DEMO, actor="benchmark")
    if not result.written:
        raise RuntimeError(f"the demo cohort did not import: {result}")
    accounts = []
    with audited_session(engine, actor="benchmark") as session:
        for n in range(1, clients + 1):
            name = f"load{n:02d}"
            if n % 2:
                create_account(session, name, PASSWORD, Role.COORDINATOR, ["DEMO"])
                accounts.append((name, Role.COORDINATOR.value))
            else:
                create_account(session, name, PASSWORD, Role.DATA_MANAGER)
                accounts.append((name, Role.DATA_MANAGER.value))
        session.commit()
    with engine.connect() as connection:
        study_ids = list(connection.execute(sa.select(Patient.study_id).order_by(Patient.study_id)).scalars())
    return Registry(engine, accounts, study_ids)


def stored_counts(engine: sa.Engine) -> tuple[int, int]:
    """Lab records, and the sum of the patients' versions (each stored correction adds one)."""
    with engine.connect() as connection:
        labs = connection.execute(sa.select(sa.func.count()).select_from(LabResult)).scalar_one()
        versions = connection.execute(sa.select(sa.func.sum(Patient.version))).scalar_one()
    return labs, versions


# -- the clients --------------------------------------------------------------------------------------------------


class Forms(HTMLParser):
    """The fields of each form of a page, as a browser would submit them (a select: its selected option)."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.forms: list[dict[str, str]] = []
        self._form: dict[str, str] | None = None
        self._select: str | None = None
        self._first_option = False
        self._textarea: str | None = None
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._form = {}
            self.forms.append(self._form)
        elif self._form is None:
            return
        elif tag == "input" and a.get("name") and a.get("type") not in ("submit", "button"):
            self._form[a["name"]] = a.get("value", "")
        elif tag == "select" and a.get("name"):
            self._select, self._first_option = a["name"], True
            self._form[self._select] = ""
        elif tag == "option" and self._select:
            if self._first_option or "selected" in a:
                self._form[self._select] = a.get("value", "")
            self._first_option = False
        elif tag == "textarea" and a.get("name"):
            self._textarea = a["name"]
            self._form[self._textarea] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None
        elif tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None

    def handle_data(self, data: str) -> None:
        if self._form is not None and self._textarea:
            self._form[self._textarea] += data

    def main(self) -> dict[str, str]:
        """The page's largest form (the record's; the others are sign-out and row actions)."""
        return max(self.forms, key=len, default={})


@dataclass
class Failure:
    kind: str
    method: str
    url: str
    status: str
    body: str


@dataclass
class ClientResult:
    samples: list[tuple[str, float, bool]] = field(default_factory=list)  # (kind, seconds, answered as expected)
    failures: list[Failure] = field(default_factory=list)
    sign_in: float = 0.0
    saved: Counter = field(default_factory=Counter)  # kind -> answers 303
    posted: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)  # (kind, url, form) of each 303


class Client:
    """One person at a browser: their own session, their own patients to edit."""

    def __init__(self, base: str, username: str, own: list[str], everyone: list[str], seed: int) -> None:
        self.http = httpx.Client(base_url=base, follow_redirects=False, timeout=TIMEOUT)
        self.username, self.own, self.everyone = username, own, everyone
        self.random = random.Random(seed)
        self.result = ClientResult()
        self.turn = 0
        self.labs = 0

    def request(self, kind: str, method: str, url: str, data: dict[str, str] | None = None) -> httpx.Response | None:
        expected = KINDS[kind][1]
        started = time.perf_counter()
        try:
            response = self.http.request(method, url, data=data)
        except httpx.HTTPError as error:
            elapsed = time.perf_counter() - started
            self.result.samples.append((kind, elapsed, False))
            self.result.failures.append(Failure(kind, method, url, type(error).__name__, str(error)[:300]))
            return None
        elapsed = time.perf_counter() - started
        ok = response.status_code == expected
        self.result.samples.append((kind, elapsed, ok))
        if not ok:
            body = " ".join(response.text.split())[:600]
            self.result.failures.append(Failure(kind, method, url, str(response.status_code), body))
            return None
        if expected == 303:
            self.result.saved[kind] += 1
            self.result.posted.append((kind, url, dict(data or {})))
        return response

    def sign_in(self) -> None:
        started = time.perf_counter()
        form = Forms(self.http.get("/login").text).main()
        form |= {"username": self.username, "password": PASSWORD}
        answer = self.http.post("/login", data=form)
        if answer.status_code != 303:
            raise RuntimeError(f"{self.username} could not sign in: {answer.status_code} {answer.text[:300]}")
        self.result.sign_in = time.perf_counter() - started

    def next_own(self) -> str:
        study_id = self.own[self.turn % len(self.own)]
        self.turn += 1
        return study_id

    def edit(self) -> None:
        study_id = self.next_own()
        url = f"/patients/{study_id}/edit"
        page = self.request("edit_form", "GET", url)
        if page is None:
            return
        form = Forms(page.text).main()
        form["smoking"] = SMOKING_TOGGLE.get(form.get("smoking", ""), "never")
        form["reason"] = f"load test: smoking history corrected by {self.username}"
        self.request("edit_save", "POST", url, form)

    def add_lab(self) -> None:
        study_id = self.next_own()
        url = f"/patients/{study_id}/labs/new"
        page = self.request("lab_form", "GET", url)
        if page is None:
            return
        day = FIRST_LAB_DAY + timedelta(days=self.labs)  # this client's patients only: never a clash
        self.labs += 1
        form = Forms(page.text).main()
        form |= {"analyte": "crp", "sample_date": day.isoformat(), "value": f"{self.random.uniform(1, 80):.1f}",
                 "unit": "mg/L"}  # fmt: skip
        self.request("lab_save", "POST", url, form)

    def act(self, action: str) -> None:
        if action == "list":
            self.request("list", "GET", "/patients")
        elif action == "page":
            self.request("page", "GET", f"/patients/{self.random.choice(self.everyone)}")
        elif action == "edit":
            self.edit()
        else:
            self.add_lab()

    def run(self, start: threading.Barrier, seconds: float, weights: list[float]) -> None:
        try:
            start.wait()
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                self.act(self.random.choices(ACTIONS, weights)[0])
        finally:
            self.http.close()


@dataclass
class Run:
    database: str
    clients: int
    seconds: float
    results: list[ClientResult]
    stored: tuple[int, int]  # lab records added, patient versions added, as the database holds them
    server_cpu: float | None
    client_cpu: float
    log: str

    def samples(self, kind: str | None = None) -> list[tuple[str, float, bool]]:
        return [s for r in self.results for s in r.samples if kind is None or s[0] == kind]

    def saved(self, kind: str) -> int:
        return sum(r.saved[kind] for r in self.results)

    def failures(self) -> list[Failure]:
        return [f for r in self.results for f in r.failures]


def load(url: str, label: str, clients: int, seconds: float, weights: list[float], scratch: Path) -> Run:
    """Build the registry at ``url``, serve it, and run the clients against it."""
    registry = build_registry(url, clients)
    before = stored_counts(registry.engine)
    own = {n: registry.study_ids[n::clients] for n in range(clients)}  # disjoint: nobody edits another's patients
    if any(not patients for patients in own.values()):
        raise SystemExit(f"{clients} clients need at least as many patients ({len(registry.study_ids)} here)")
    log = scratch / f"server-{label.split()[0].lower()}.log"
    with running_server(url, log) as server:
        people = [Client(server.base, name, own[n], registry.study_ids, seed=n)
                  for n, (name, _) in enumerate(registry.accounts)]  # fmt: skip
        with ThreadPoolExecutor(len(people)) as pool:  # at once; a client that could not sign in stops the run
            list(pool.map(Client.sign_in, people))
        for person in people:  # warm-up, not counted: templates compiled, connections opened
            person.http.get("/patients")
        start = threading.Barrier(clients + 1)
        threads = [threading.Thread(target=p.run, args=(start, seconds, weights)) for p in people]
        for thread in threads:
            thread.start()
        cpu_before, own_cpu_before = server.cpu_seconds(), time.process_time()
        start.wait()
        began = time.perf_counter()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - began
        cpu_after, own_cpu_after = server.cpu_seconds(), time.process_time()
    after = stored_counts(registry.engine)
    registry.engine.dispose()
    return Run(
        database=label, clients=clients, seconds=elapsed, results=[p.result for p in people],
        stored=(after[0] - before[0], after[1] - before[1]),
        server_cpu=None if cpu_before is None or cpu_after is None else cpu_after - cpu_before,
        client_cpu=own_cpu_after - own_cpu_before, log=log.read_text(errors="replace"),
    )  # fmt: skip


# -- PostgreSQL ---------------------------------------------------------------------------------------------------


@contextmanager
def postgres(explicit: str | None) -> Iterator[tuple[str | None, str]]:
    """(URL of a server's maintenance database, where it comes from), or (None, why there is none)."""
    if explicit:
        yield explicit, "the server of --postgres-url"
        return
    if given := os.environ.get("REGISTRY_TEST_POSTGRES_URL"):
        yield given, "the server of REGISTRY_TEST_POSTGRES_URL"
        return
    directory = tempfile.mkdtemp(prefix="registry-pg-")
    started = subprocess.run(["bash", str(POSTGRES_SCRIPT), "start", directory], capture_output=True, text=True)
    if started.returncode != 0:
        shutil.rmtree(directory, ignore_errors=True)
        yield None, f"no PostgreSQL server could be started ({started.stderr.strip() or started.returncode})"
        return
    try:
        yield started.stdout.strip(), "a throwaway server from tests/postgres.sh (fsync and full_page_writes off)"
    finally:
        subprocess.run(["bash", str(POSTGRES_SCRIPT), "stop", directory], check=False)
        shutil.rmtree(directory, ignore_errors=True)


def postgres_version(url: str) -> str:
    engine = db.make_engine(url)
    try:
        with engine.connect() as connection:
            return connection.execute(sa.text("SHOW server_version")).scalar_one().split()[0]
    finally:
        engine.dispose()


# -- the report ---------------------------------------------------------------------------------------------------

HEADING = "| database | request | count | requests/s | median ms | p95 ms | p99 ms | max ms | errors |"


def _row(database: str, name: str, samples: list[tuple[str, float, bool]], seconds: float) -> str:
    if not samples:
        return f"| {database} | {name} | 0 | 0 | - | - | - | - | 0 |"
    ms = np.array([s[1] for s in samples]) * 1000
    errors = sum(not s[2] for s in samples)
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return (f"| {database} | {name} | {len(ms):,} | {len(ms) / seconds:,.1f} | {p50:,.1f} | {p95:,.1f} | "
            f"{p99:,.1f} | {ms.max():,.1f} | {errors} |")  # fmt: skip


def table(runs: list[Run]) -> list[str]:
    lines = [HEADING, "|---|---|---|---|---|---|---|---|---|"]
    for run in runs:
        for kind, (name, _) in KINDS.items():
            lines.append(_row(run.database, name, run.samples(kind), run.seconds))
        lines.append(_row(run.database, "**all requests**", run.samples(), run.seconds))
    return lines


def details(run: Run) -> list[str]:
    sign_ins = np.array([r.sign_in for r in run.results]) * 1000
    saves = run.saved("edit_save"), run.saved("lab_save")
    requests = len(run.samples())
    cpu = (f"server process {run.server_cpu:.1f} s ({run.server_cpu / run.seconds:.0%} of one core, "
           f"{run.server_cpu / max(requests, 1) * 1000:.1f} ms per request), "
           if run.server_cpu is not None else "")  # fmt: skip
    lines = [
        f"- {run.database}: {run.seconds:.1f} s of load; {run.clients} sign-ins at once before it "
        f"(Argon2id) took {np.median(sign_ins):,.0f} ms median, {sign_ins.max():,.0f} ms max; "
        f"CPU used during the load: {cpu}clients {run.client_cpu:.1f} s. "
        f"Stored afterwards: {run.stored[1]:,} patient corrections and {run.stored[0]:,} lab records, "
        f"for {saves[0]:,} and {saves[1]:,} saves answered 303"
        + (" (all there)." if run.stored == (saves[1], saves[0]) else " (MISMATCH: saves lost or doubled)."),
    ]
    failures = run.failures()
    if failures:
        by = Counter((f.kind, f.status) for f in failures)
        lines.append(f"- {run.database}: failed answers: "
                     + ", ".join(f"{KINDS[k][0]} -> {s}: {n}" for (k, s), n in sorted(by.items())) + ".")  # fmt: skip
        for (kind, status), _ in sorted(by.items()):
            first = next(f for f in failures if (f.kind, f.status) == (kind, status))
            lines.append(f"  - first {status} ({first.method} {first.url}): `{first.body[:300]}`")
    return lines


def log_head(log: str, limit: int = 80) -> list[str]:
    """The server log's first lines (it logs warnings and errors only, with the traceback of any 500)."""
    return log.splitlines()[:limit]


def parse_mix(text: str) -> list[float]:
    weights = dict.fromkeys(ACTIONS, 0.0)
    for part in text.split(","):
        name, _, weight = part.partition("=")
        if name.strip() not in weights:
            raise argparse.ArgumentTypeError(f"unknown action {name!r} (choose from {', '.join(ACTIONS)})")
        weights[name.strip()] = float(weight)
    return [weights[a] for a in ACTIONS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20, help="concurrent clients, each its own account")
    parser.add_argument("--seconds", type=float, default=20.0, help="duration of the load, per database")
    parser.add_argument("--mix", default="list=3,page=3,edit=2,lab=2",
                        help="weights of the actions: list, page, edit (form + save), lab (form + add)")  # fmt: skip
    parser.add_argument("--postgres-url", help="a PostgreSQL server (else REGISTRY_TEST_POSTGRES_URL, else throwaway)")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--output", type=Path, default=DOCS)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # the server process itself
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.port)
        return
    weights = parse_mix(args.mix)
    runs: list[Run] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="registry-web-load-") as tmp:
        scratch = Path(tmp)
        label = f"SQLite {sqlite3.sqlite_version}"
        print(f"{label}: {args.clients} clients, {args.seconds:g} s ...", file=sys.stderr)
        runs.append(load(f"sqlite:///{scratch / 'registry.db'}", label, args.clients, args.seconds, weights, scratch))
        if args.no_postgres:
            notes.append("PostgreSQL: not measured (`--no-postgres`).")
        else:
            with postgres(args.postgres_url) as (server_url, source):
                if server_url is None:
                    notes.append(f"PostgreSQL: not measured: {source}.")
                else:
                    with db.new_postgres_database(server_url, "bench_web") as url:
                        label = f"PostgreSQL {postgres_version(url)}"
                        print(f"{label}: {args.clients} clients, {args.seconds:g} s ...", file=sys.stderr)
                        runs.append(load(url, label, args.clients, args.seconds, weights, scratch))
                    notes.append(f"PostgreSQL: {source}, a fresh database on it.")
    mix = ", ".join(f"{a} {w:g}" for a, w in zip(ACTIONS, weights, strict=True))
    lines = [
        "## Web application under load (`benchmarks/web_load.py`)",
        "",
        f"Machine: {machine()}; {' and '.join(r.database for r in runs)}. Server: one uvicorn process "
        f"(1 worker) on 127.0.0.1, the application's own engine settings (SQLAlchemy's default pool). "
        f"Clients: {args.clients} threads ({httpx.__name__}, one keep-alive connection each) in the "
        f"benchmark's process on the same machine, {args.seconds:g} s per database.",
        "",
        *table(runs),
        "",
        *[line for run in runs for line in details(run)],
        *[f"- {note}" for note in notes],
        "",
        *textwrap.wrap(
            f"What was measured: each database is a fresh migrated registry with the 61-patient demo cohort "
            f"and {args.clients} accounts (coordinators of site DEMO and data managers, alternately), served "
            "by the real application. Every client signs in as its own account, then, until the time is up, "
            f"picks an action at random (weights: {mix}): the patient list; the page of any patient; a "
            "correction of one of its own patients (the edit form, then its POST with the smoking history "
            "toggled and a reason); a new CRP result for one of its own patients (the form, then its POST "
            "with a date no record of that patient has). Clients edit disjoint patients, so every save must "
            "answer 303 (a 409 or any other answer is an error). Latency is the time from sending a request "
            "to having read the whole answer, in the client; redirects are not followed. Requests/s is the "
            "count over the load's wall time. The clients share the machine's cores with the server, so the "
            "figures include client-side queueing for the CPU and the GIL. One server process runs Python on "
            "one core at a time (the GIL): when its CPU use nears one core, a request's latency is mostly "
            "waiting behind the other clients' (about clients x CPU per request), whatever the database.",
            width=110,
        ),
        "",
    ]
    write_section("web_load", lines, args.output)
    print("\n".join(lines))
    for run in runs:
        if run.failures() or run.log.strip():
            print(f"\n--- {run.database}: server log (first lines) ---", file=sys.stderr)
            print("\n".join(log_head(run.log)) or "(empty)", file=sys.stderr)


if __name__ == "__main__":
    main()
