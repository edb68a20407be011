"""``bloodcell users add|list|disable``: the people who count, review and sign off, and their roles."""

from __future__ import annotations

import json
from typing import Optional

import typer

from bloodcell.errors import ConfigError
from bloodcell.cli.signin import (STDIN_HELP, FormatOption, PasswordStdinOption, StoreOption, change_as, read_password,
                                  sign_in)
from bloodcell.store.vocabulary import ROLES

app = typer.Typer(help="Users of a sample store and their roles (technician, supervisor, admin).", no_args_is_help=True,
                  rich_markup_mode=None)
ADMIN_HELP = "The admin adding the user (asked for their password); not needed for a store's first user, an admin."


@app.command("add")
def add(
    name: str = typer.Argument(..., help="The new user's name."),
    role: str = typer.Option(..., "--role", help=f"One of {', '.join(ROLES)}."),
    store: StoreOption = None,
    admin: Optional[str] = typer.Option(None, "--admin", help=ADMIN_HELP),
    password_stdin: bool = typer.Option(False, "--password-stdin", help=STDIN_HELP + " With --admin: the admin's "
                                        "password on the first line, the new user's on the second."),
) -> None:
    """Add a user; their password is asked for (twice) or read from stdin; there is no default password."""
    from bloodcell.store.database import open_store
    from bloodcell.store.users import add_user, user_count

    kept = open_store(store, create=not admin)  # only a store's first admin may make a new store
    with kept.session() as session:
        first = user_count(session) == 0
    if not first and not admin:
        raise ConfigError("this store has users already: sign in as an admin with --admin NAME to add one")
    by = sign_in(kept, admin, password_stdin) if admin and not first else None
    password = read_password(password_stdin, f"Password for {name}", confirm=True)
    with kept.session() as session:
        person = add_user(session, name, role, password, by)
    typer.echo(f"added {person.role} {person.name} to {kept.where}")


@app.command("list")
def list_(
    store: StoreOption = None,
    format: FormatOption = "table",
) -> None:
    """List the users, their roles and whether they can sign in."""
    from bloodcell.store.database import open_store
    from bloodcell.store.users import list_users

    with open_store(store, create=False).session() as session:
        users = [{"name": u.name, "role": u.role, "active": u.active, "created_at": u.created_at.isoformat()}
                 for u in list_users(session)]
    if format == "json":
        typer.echo(json.dumps(users, indent=2))
        return
    for user in users:
        typer.echo(f"{user['name']}\t{user['role']}\t{'active' if user['active'] else 'disabled'}")
    if not users:
        typer.echo("no users yet: add the first admin with `bloodcell users add NAME --role admin`")


@app.command("disable")
def disable(
    name: str = typer.Argument(..., help="The user to disable (kept with their history, unable to sign in)."),
    admin: str = typer.Option(..., "--admin", help="The admin disabling the user (asked for their password)."),
    store: StoreOption = None,
    password_stdin: PasswordStdinOption = False,
) -> None:
    """Disable a user."""
    from bloodcell.store.users import disable_user

    change_as(store, admin, password_stdin, lambda session, by: disable_user(session, name, by))
    typer.echo(f"disabled {name}")
