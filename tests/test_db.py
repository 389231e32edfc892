"""One URL setting selects the database; SQLite is made strict and concurrent."""

import pytest
import sqlalchemy as sa

from registry import db


def test_explicit_url_wins_over_environment(monkeypatch):
    monkeypatch.setenv(db.URL_VARIABLE, "sqlite:///from-env.db")
    assert db.database_url("sqlite:///explicit.db") == "sqlite:///explicit.db"
    assert db.database_url() == "sqlite:///from-env.db"


def test_default_is_a_sqlite_file_in_the_working_directory(monkeypatch):
    monkeypatch.delenv(db.URL_VARIABLE, raising=False)
    assert db.database_url() == "sqlite:///registry.db"


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_postgres_urls_use_psycopg3(scheme):
    assert db.database_url(f"{scheme}://u@h:5432/reg") == "postgresql+psycopg://u@h:5432/reg"


def test_redacted_hides_the_password():
    assert db.redacted("postgresql://alice:s3cret@db/reg") == "postgresql+psycopg://alice:***@db/reg"


def test_sqlite_enforces_foreign_keys_and_uses_wal(tmp_path):
    engine = db.make_engine(f"sqlite:///{tmp_path / 'r.db'}")
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_both_databases_answer(engine):
    with engine.connect() as connection:
        assert connection.execute(sa.select(sa.literal(1))).scalar() == 1
    assert engine.dialect.name in {"sqlite", "postgresql"}
