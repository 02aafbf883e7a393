"""Option parsing helpers shared by commands."""

from __future__ import annotations

import click

from semtrust.errors import InputError
from semtrust.events.numbers import hexbytes


def hex32(value: str | None, option: str) -> bytes | None:
    """A 64-hex option value, or None when not given."""
    if value is None:
        return None
    try:
        return hexbytes(value.strip(), option, 32)
    except InputError as exc:
        raise click.BadParameter(exc.message, param_hint=option) from None
