"""Command line: thin commands over library calls.

Every :class:`SemtrustError` becomes one line on stderr and exit code 2; no
traceback reaches the user for bad input.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from semtrust import __version__
from semtrust.errors import SemtrustError


class _Group(click.Group):
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


def _register() -> None:
    from semtrust.cli import modelcmd, trajectory

    main.add_command(trajectory.points)
    main.add_command(trajectory.replay)
    main.add_command(modelcmd.model)
    from semtrust.cli import run  # [issue3]

    for cmd in (run.run, run.console, run.list_cmd):
        main.add_command(cmd)
    from semtrust.cli import attest  # [issue5]

    main.add_command(attest.attest)
    main.add_command(attest.verify)
    from semtrust.cli import oci  # [issue4]

    main.add_command(oci.oci)


_register()
