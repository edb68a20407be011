"""Passwords and sign-in for the store's commands: typed at a hidden prompt or read from stdin, never defaulted."""

from __future__ import annotations

import sys

import typer

from bloodcell.errors import ConfigError
from bloodcell.store.database import Store
from bloodcell.store.users import Person, authenticate

STORE_HELP = ("The sample store: an SQLite file or a postgresql:// URL (default: $BLOODCELL_STORE, else store.sqlite "
              "in your user data folder).")
USER_HELP = "Your bloodcell user name (you are asked for your password)."
STDIN_HELP = "Read the password from the first line of standard input instead of a prompt (for scripts)."


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
    """The user ``name`` after checking their password (AuthError in one sentence otherwise)."""
    password = read_password(from_stdin, f"Password for {name}")
    with store.session() as session:
        return authenticate(session, name, password)
