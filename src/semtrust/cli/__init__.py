"""Command line: thin commands over library calls.

Every :class:`SemtrustError` becomes one line on stderr and exit code 2; no
traceback reaches the user for bad input.
"""

from __future__ import annotations

import gc
import importlib
import sys
from typing import Any

import click

from semtrust import __version__
from semtrust.errors import SemtrustError

# Command name -> (module, attribute). Commands are imported when used: replaying a
# trajectory should not pay for importing the orchestrator, TPM and crypto stacks.
_COMMANDS: dict[str, tuple[str, str]] = {
    "points": ("semtrust.cli.trajectory", "points"),
    "replay": ("semtrust.cli.trajectory", "replay"),
    "model": ("semtrust.cli.modelcmd", "model"),
    "run": ("semtrust.cli.run", "run"),
    "console": ("semtrust.cli.run", "console"),
    "list": ("semtrust.cli.run", "list_cmd"),
    "attest": ("semtrust.cli.attest", "attest"),
    "verify": ("semtrust.cli.attest", "verify"),
    "oci": ("semtrust.cli.oci", "oci"),
    "tma": ("semtrust.cli.tma", "tma"),
    "export": ("semtrust.cli.tma", "export"),
    "verifier": ("semtrust.cli.fleet", "verifier"),
    "agent": ("semtrust.cli.fleet", "agent"),
}


class _Group(click.Group):
    _starting = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The process's entry point (tests call ``main()`` instead).

        Start-up creates tens of thousands of objects that live as long as the process
        (modules, classes, click's parameters) and hardly any garbage: the collector
        would search them for cycles again and again. It is off until the command is
        loaded; then they are frozen out of its way (which also keeps forked children
        from copying pages just to update their collector headers) and it runs as usual.
        """
        self._starting = gc.isenabled()
        gc.disable()
        try:
            return super().__call__(*args, **kwargs)
        except SystemExit:
            # The process ends: what is left goes with it, not through another search.
            gc.freeze()
            raise
        finally:
            self._started()

    def _started(self) -> None:
        if self._starting:
            self._starting = False
            gc.freeze()
            gc.enable()

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        command = getattr(importlib.import_module(target[0]), target[1])
        assert isinstance(command, click.Command)
        self._started()
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SemtrustError as exc:
            click.echo(f"semtrust: {exc}", err=True)
            ctx.exit(2)
        except BrokenPipeError:
            # Output piped into `head` and closed: not an error of ours.
            sys.stderr.close()
            ctx.exit(0)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="semtrust")
def main() -> None:
    """semtrust: model and enforce the security behaviour of workloads."""
