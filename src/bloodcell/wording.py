"""Words for what commands, reports and refusals print: a count with its noun in the right number."""

from __future__ import annotations


def counted(n: int, one: str, many: str | None = None) -> str:
    """``n`` and ``one`` or ``many`` (default: ``one`` + "s"): "1 photo", "3 photos", "1 white cell typed"."""
    return f"{n} {one if n == 1 else many or one + 's'}"


def with_article(noun: str) -> str:
    """``noun`` with "a" or "an" before it, by its first letter: "an admin", "a supervisor"."""
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def shown(value: object, limit: int = 60) -> str:
    """``value`` as a refusal quotes it: its repr, a string over ``limit`` characters cut short with "..."."""
    return repr(value) if not isinstance(value, str) or len(value) <= limit else repr(value[:limit - 3] + "...")
