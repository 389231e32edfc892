"""Registering recruiting sites: the same rules, messages and audit entry from the command line and the web."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from registry.audit import audited_session
from registry.ingest import CellError, parse_cell
from registry.models import Site, is_bookkeeping
from registry.sheets import SheetColumn
from registry.violations import explain

#: The fields of a new site, read by the import's cell parser (lengths, required).
SITE_FIELDS = [
    SheetColumn(c.name, c.name, c, not c.nullable)
    for c in Site.__table__.columns
    if c.name != "id" and not is_bookkeeping(c)
]


class SiteError(ValueError):
    """The site cannot be registered as given; the message names each field and the rule it breaks."""


def register_site(engine: sa.Engine, fields: Mapping[str, Any], *, actor: str) -> str:
    """Register a site from its fields as typed (code, name, country); returns its code.

    Every field is read before anything is written, so that a value the database
    would refuse in its own words (an over-long code on PostgreSQL) is told plainly.
    """
    values, errors = {}, []
    for field in SITE_FIELDS:
        try:
            values[field.target] = parse_cell(field, fields.get(field.name))
        except CellError as error:
            errors.append(f"{field.name} {error}")
    if not errors:
        with audited_session(engine, actor=actor, reason="site registered") as session:
            session.add(Site(**values))
            try:
                session.commit()
            except sa.exc.IntegrityError as error:
                errors.append(explain(error).message)
    if errors:
        raise SiteError("; ".join(errors))
    return values["code"]
