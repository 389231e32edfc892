"""register_site: one set of rules and messages for the command line and the web, on both databases."""

import pytest
import sqlalchemy as sa

from registry.models import AuditLog, Site
from registry.sites import SiteError, register_site


def _stored(engine: sa.Engine) -> tuple[list[tuple], int]:
    with engine.connect() as connection:
        sites = connection.execute(sa.select(Site.code, Site.name, Site.country).order_by(Site.code)).all()
        return [tuple(site) for site in sites], connection.execute(sa.select(sa.func.count(AuditLog.id))).scalar_one()


def test_a_site_is_registered_trimmed_and_audited(migrated):
    assert register_site(migrated, {"code": " NJ1 ", "name": "Nanjing", "country": "CN"}, actor="admin") == "NJ1"
    assert _stored(migrated) == ([("NJ1", "Nanjing", "CN")], 1)
    with migrated.connect() as connection:
        (entry,) = connection.execute(sa.select(AuditLog)).all()
    assert (entry.actor, entry.action, entry.table_name, entry.reason) == ("admin", "insert", "site", "site registered")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"code": "X" * 17, "name": "Too long"}, "code is longer than 16 characters"),  # PostgreSQL's own words before
        ({"code": "NJ2", "name": "  "}, "name is required"),
        (
            {"code": "NJ3", "name": "N" * 201, "country": "CHN"},
            "name is longer than 200 characters; country is longer than 2 characters",
        ),
        ({"code": "NJ1", "name": "Again"}, "site: another record already has the same code"),
    ],
)
def test_bad_fields_are_refused_with_every_rule_named_and_nothing_written(migrated, fields, message):
    register_site(migrated, {"code": "NJ1", "name": "Nanjing"}, actor="admin")
    before = _stored(migrated)
    with pytest.raises(SiteError) as refused:
        register_site(migrated, fields, actor="admin")
    assert str(refused.value) == message
    assert _stored(migrated) == before
