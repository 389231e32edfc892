"""``registry token``: personal tokens for the JSON API (``registry serve`` answers it under /api/v1)."""

from __future__ import annotations

from typing import Annotated

import typer

from registry.cli.main import Actor, _account_change, _engine, app
from registry.codes import Role
from registry.settings import TOKEN_DAYS, TOKEN_MOST_DAYS

token_app = typer.Typer(
    help="Personal API tokens: created by an administrator, shown once, stored hashed, expiring, revocable.",
    no_args_is_help=True,
)
app.add_typer(token_app, name="token")


@token_app.command("create")
def token_create(
    ctx: typer.Context,
    name: Annotated[
        str, typer.Argument(help="Who holds it, or what for (jdoe-notebook); its name in the audit trail.")
    ],
    role: Annotated[Role, typer.Option(help="What it may do, as an account of this role.")],
    site: Annotated[
        list[str] | None, typer.Option(help="A site a coordinator's or investigator's token serves.")
    ] = None,
    days: Annotated[int, typer.Option("--days", help=f"Days it lasts (at most {TOKEN_MOST_DAYS}).")] = TOKEN_DAYS,
    actor: Actor = "",
) -> None:
    """Create a token and print it once: it is stored only as a hash, so it cannot be shown again.

    Example: registry token create jdoe-notebook --role analyst --days 30
    """
    from registry.tokens import create_token

    made: list[str] = []
    with _account_change(ctx, actor, f"API token {name} created", f"Token {name} ({role.value}) created") as session:
        token, secret = create_token(session, name, role, site or [], days)
        made += [secret, token.expires_at.strftime("%Y-%m-%d %H:%M UTC")]
    typer.echo(f"Expires {made[1]}. The token (shown once; keep it like a password):")
    typer.echo(made[0])


@token_app.command("revoke")
def token_revoke(
    ctx: typer.Context, name: Annotated[str, typer.Argument(help="The token's name.")], actor: Actor = ""
) -> None:
    """Revoke a token: every request with it is refused from now on (tokens are never deleted).

    Example: registry token revoke jdoe-notebook
    """
    from registry.tokens import revoke_token

    with _account_change(ctx, actor, f"API token {name} revoked", f"Token {name} revoked") as session:
        revoke_token(session, name)


@token_app.command("list")
def token_list(ctx: typer.Context) -> None:
    """List the tokens (never the tokens themselves): name, role, sites, status, expiry, last use.

    Example: registry token list
    """
    from datetime import UTC, datetime

    from registry.db import as_utc
    from registry.tokens import list_tokens

    now = datetime.now(UTC)
    with _engine(ctx).connect() as connection:
        for t in list_tokens(connection):
            status = "revoked" if t["revoked_at"] else "expired" if as_utc(t["expires_at"]) <= now else "active"
            used = as_utc(t["last_used_at"]).strftime("%Y-%m-%d %H:%M") if t["last_used_at"] else "never used"
            typer.echo(f"{t['name']}\t{t['role']}\t{','.join(t['sites'])}\t{status}\t"
                       f"expires {as_utc(t['expires_at']):%Y-%m-%d}\t{used}\tby {t['created_by']}")  # fmt: skip
