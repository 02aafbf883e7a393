"""Option parsing helpers shared by commands."""

from __future__ import annotations

import json
from typing import Any

import click

from semtrust.errors import InputError


def hex32(value: str | None, option: str) -> bytes | None:
    """A 64-hex option value, or None when not given."""
    if value is None:
        return None
    from semtrust.events.numbers import hexbytes  # only when given: it loads a C module

    try:
        return hexbytes(value.strip(), option, 32)
    except InputError as exc:
        raise click.BadParameter(exc.message, param_hint=option) from None


def echo_result(result: Any) -> None:
    """A management reply for people: list items one per line, dict items as
    ``key: value``, anything else as text."""
    if isinstance(result, list):
        for item in result:
            click.echo(item if isinstance(item, str | int) else json.dumps(item))
    elif isinstance(result, dict):
        for k, v in result.items():
            click.echo(f"{k}: {v}")
    else:
        click.echo(str(result).rstrip("\n"))
