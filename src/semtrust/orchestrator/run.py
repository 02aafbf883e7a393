"""The ``semtrust run`` flow as a library call: launch, serve, report."""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from semtrust.attest.domain import DomainTrust, TrustOptions
from semtrust.attest.service import attach
from semtrust.errors import InputError, SemtrustError
from semtrust.model.tma import TMA
from semtrust.orchestrator.domain import Domain
from semtrust.orchestrator.launch import Workload, launch, set_nondumpable
from semtrust.orchestrator.mgmt import MgmtServer, socket_path
from semtrust.orchestrator.profiling import profile_request, profiled
from semtrust.orchestrator.pseudonyms import apply_pseudonyms
from semtrust.orchestrator.report import print_report
from semtrust.tma.wiring import finish_tma, on_tma_lost, remote_tma

if TYPE_CHECKING:
    from semtrust.model.modelfile import Model


@dataclass
class RunOptions:
    """Options of ``semtrust run``."""

    command: Sequence[str]
    name: str | None = None
    output: str | None = None
    trajectory: bool = False
    model: str | None = None
    enforce: bool = False
    # hardware root of trust and attestation (semtrust.attest.domain)
    tpm: str | None = None
    pcr: int | None = None
    base: bytes | None = None
    tma_key: str | None = None
    model_key: str | None = None
    # external TMA (semtrust.tma): its address, TLS files (cert, key, CA), MQTT export
    tma: str | None = None
    tma_tls: tuple[str, str, str] | None = None
    export: str | None = None
    # Paths whose content digest is replaced by the zero-length digest (spec §2.5).
    pseudonyms: Sequence[str] = ()
    default_pseudonyms: bool = True
    allow_empty: bool = False

    def trust_options(self) -> TrustOptions:
        return TrustOptions(tcti=self.tpm, pcr=self.pcr, base=self.base,
                            tma_key=Path(self.tma_key) if self.tma_key else None)


def build_tma(opts: RunOptions, trust: DomainTrust | None = None
              ) -> tuple[TMA, Model | None]:
    """A TMA in the mode the options ask for, and the model it was given (if any);
    bad models raise InputError.

    A signed model is verified (pinned to ``--model-key`` if given) and a model
    whose signature was stripped is refused; ``trust`` applies the base nonce and
    the platform's hardware aggregate.
    """
    tma = TMA() if opts.tma is None and opts.export is None else \
        remote_tma(opts, trust.name if trust is not None else opts.name)
    model: Model | None = None
    if opts.model is not None:
        from semtrust.model.modelfile import load_model

        model = load_model(opts.model, key=opts.model_key, allow_empty=opts.allow_empty)
        if trust is not None:
            trust.prepare(tma, model)
        else:
            tma.load_model(model)
        tma.seal()
        if opts.enforce:
            tma.enforce()
    elif opts.enforce:
        raise InputError("--enforce needs --model", field="--enforce")
    elif opts.model_key is not None:
        raise InputError("--model-key needs --model", field="--model-key")
    elif trust is not None:
        trust.prepare(tma, None)
    apply_pseudonyms(tma, opts.pseudonyms, learning=opts.model is None,
                     defaults=opts.default_pseudonyms)
    return tma, model


def new_domain(name: str, opts: RunOptions, command: list[str], tma: TMA | None = None
               ) -> tuple[DomainTrust, Domain]:
    """The domain's trust anchor and the domain itself, its TMA built from ``opts``
    (process and container mode alike); the trust anchor is closed if that fails."""
    trust = DomainTrust(name, opts.trust_options())
    model: Model | None = None
    try:
        if tma is None:
            tma, model = build_tma(opts, trust)
    except BaseException:
        trust.close()
        raise
    warning = trust.aggregate_mismatch()
    if warning is not None:
        print(f"semtrust: warning: {warning}", file=sys.stderr)
    domain = Domain(name, tma, command=command)
    if model is not None:
        domain.watch.use_model(model)
    return trust, domain


#: What a serving domain imports on first use: the mediator, explanations and reports of
#: events outside the model, the console's views, formats and request parser.
SERVING_MODULES = (
    "semtrust.orchestrator.mediator", "semtrust.model.explain", "semtrust.events.describe",
    "semtrust.events.jsonexport", "semtrust.model.modelfile", "semtrust.model.views",
    "semtrust.orchestrator.output", "semtrust.strict",
)

#: And with a TMA key: what signing an attestation loads.
SIGNING_MODULES = (
    "semtrust.attest.attestation", "cryptography.hazmat.primitives.hashes",
    "cryptography.hazmat.primitives.asymmetric.padding",
)


def preload_serving(signing: bool = False) -> None:
    """Import every module the domain may need while it serves (``signing``: and the
    attestation stack), before the workload is released.

    Start-up defers these imports, but none may happen once the workload runs: a module
    read from disk then could be one a workload wrote (in sealed mode an event outside
    the model is recorded and allowed), and it would run inside the orchestrator.
    """
    for name in SERVING_MODULES + (SIGNING_MODULES if signing else ()):
        importlib.import_module(name)


def launch_loading_mediator(argv: Sequence[str]) -> Workload:
    """``launch`` that imports what serving needs while it waits for the listener (on a
    machine with a spare CPU the two overlap)."""
    return launch(argv, meanwhile=preload_serving)


def run_domain(opts: RunOptions, *,
               launcher: Callable[[Sequence[str]], Workload] = launch_loading_mediator,
               tma: TMA | None = None,
               report: Callable[[Domain], None] | None = None) -> int:
    """Run a workload in a new modeling domain; return its exit code.

    ``report`` is called with the finished domain (benchmarks read its statistics).
    """
    cmd = list(opts.command) or [os.environ.get("SHELL") or "/bin/sh"]
    profile = profile_request()  # before anything starts: a bad value is exit 2
    name = opts.name or f"{os.path.basename(cmd[0])}-{os.getpid()}"
    path = socket_path(name)
    trust, domain = new_domain(name, opts, cmd, tma)
    tma = domain.tma
    attach(domain, trust)
    if profile.dumpable:
        print("semtrust: warning: SEMTRUST_PROFILE=dumpable: this orchestrator can be "
              "ptraced by processes of the same user; for profiling only", file=sys.stderr)
    else:
        set_nondumpable()
    try:
        server = MgmtServer(domain, path)  # before launching: a name clash fails fast
    except BaseException:
        trust.close()
        raise
    try:
        workload = launcher(cmd)
    except BaseException:
        server.close()
        trust.close()
        raise
    # Only now, with the workload forked with the caller's umask: emulated opens apply
    # each task's own umask, so ours must not take anything away.
    old_umask = os.umask(0)
    domain.workload_pid = workload.pid
    if workload.holder:
        domain.protected.add(workload.holder)
        domain.protected_nspids.update((1, 2))  # holder and keeper (orchestrator/launch.py)
    server.start()

    def _terminate(signum: int, frame: FrameType | None) -> None:
        domain.stop.set()
        workload.kill()

    prev = {s: signal.signal(s, _terminate) for s in (signal.SIGTERM, signal.SIGHUP)}
    on_tma_lost(tma, lambda: _terminate(signal.SIGTERM, None))
    prev[signal.SIGINT] = signal.signal(signal.SIGINT, signal.SIG_IGN)
    code = 1
    try:
        preload_serving(trust.key is not None)  # done already unless another launcher
        workload.release()
        with profiled(profile.cprofile):
            domain.serve(workload.listener)
        if domain.stop.is_set():
            workload.kill()
        code = workload.wait()
    finally:
        workload.kill()
        with contextlib.suppress(ChildProcessError):
            code = workload.wait()
        workload.listener.close()
        # An external TMA first models what is still in flight; once it is lost, nothing
        # of the domain's state can be read from it any more.
        lost = finish_tma(domain.tma)
        domain.watch.end(domain, lost=lost)
        server.close()
        try:
            if lost is None:
                trust.finish(domain.tma)  # --pcr: extend the final state
        except SemtrustError as exc:
            print(f"semtrust: {exc}", file=sys.stderr)
            code = code or 2
        finally:
            trust.close()
        os.umask(old_umask)
        for s, h in prev.items():
            signal.signal(s, h)
        if lost is not None:
            print(f"semtrust: {lost}; the model is incomplete and was not written",
                  file=sys.stderr)
            code = code or 2
        elif opts.output is not None:
            try:
                domain.write_output(opts.output, opts.trajectory)
            except OSError as exc:
                print(f"semtrust: cannot write {opts.output}: {exc.strerror}", file=sys.stderr)
                code = code or 2
        if report is not None:
            report(domain)
        if domain.fault_count:
            print(f"semtrust: {domain.fault_count} event(s) could not be modeled"
                  f"{' and were denied' if domain.enforcing else ''}, e.g.:", file=sys.stderr)
            for f in domain.faults[:3]:
                print(f"semtrust:   pid {f.get('pid')} {f.get('syscall')}: {f.get('reason')}",
                      file=sys.stderr)
        if lost is None:
            print_report(domain)
    return code
