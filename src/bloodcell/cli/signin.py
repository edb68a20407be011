"""Passwords and sign-in for the store's commands: typed at a hidden prompt or read from stdin, never defaulted."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from bloodcell.errors import ConfigError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from bloodcell.store.database import Store
    from bloodcell.store.users import Person

STORE_HELP = ("The sample store: an SQLite file or a postgresql:// URL (default: $BLOODCELL_STORE, else store.sqlite "
              "in your user data folder).")
USER_HELP = "Your bloodcell user name (you are asked for your password)."
STDIN_HELP = "Read the password from the first line of standard input instead of a prompt (for scripts)."

#: The options every store command shares.
StoreOption = Annotated[Optional[str], typer.Option("--store", help=STORE_HELP)]
UserOption = Annotated[str, typer.Option("--user", help=USER_HELP)]
PasswordStdinOption = Annotated[bool, typer.Option("--password-stdin", help=STDIN_HELP)]
FormatOption = Annotated[str, typer.Option("--format", help="table or json.")]


def read_password(from_stdin: bool, prompt: str, confirm: bool = False) -> str:
    """The password from stdin's first line or a hidden prompt (typed twice when ``confirm``)."""
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise ConfigError("--password-stdin: standard input held no password")
        return password
    if not sys.stdin.isatty():
        raise ConfigError("no terminal to ask for the password: pass it on standard input with --password-stdin")
    return typer.prompt(prompt, hide_input=True, confirmation_prompt=confirm)


def sign_in(store: Store, name: str, from_stdin: bool) -> Person:
    """The user ``name`` after checking their password (AuthError in one sentence otherwise; failures count
    towards the name's wait, as the service's sign-ins do)."""
    from bloodcell.store.sign_in_throttle import authenticate_throttled

    password = read_password(from_stdin, f"Password for {name}")
    return authenticate_throttled(store, name, password)


def change_as(store: str | None, name: str, from_stdin: bool, change: Callable[[Session, Person], object]) -> Person:
    """Sign ``name`` in to the store ``store`` (which must exist) and make ``change`` (session, user) in one
    transaction."""
    from bloodcell.store.database import open_store

    kept = open_store(store, create=False)
    by = sign_in(kept, name, from_stdin)
    with kept.session() as session:
        change(session, by)
    return by
