"""Error types.

Every problem with input a user controls (trajectories, models, keys, socket
messages) is an :class:`InputError` that names where it happened, so the CLI can
print one line and exit 2 instead of a traceback.
"""

from __future__ import annotations


class SemtrustError(Exception):
    """Base class of errors the CLI reports as one line with exit code 2."""


class InputError(SemtrustError):
    """Malformed input: carries the source name, line number and field."""

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.source = source
        self.line = line
        self.field = field

    def located(self, source: str | None = None, line: int | None = None) -> InputError:
        """Fill in the location where an inner parser could not know it."""
        if self.source is None:
            self.source = source
        if self.line is None:
            self.line = line
        return self

    def __str__(self) -> str:
        where = ""
        if self.source is not None:
            where = self.source
            if self.line:
                where += f":{self.line}"
            where += ": "
        what = f"field '{self.field}': " if self.field else ""
        return f"{where}{what}{self.message}"


class ModelError(InputError):
    """A model file is malformed or inconsistent."""


class SignatureError(ModelError):
    """A signed model (or attestation) does not verify."""
