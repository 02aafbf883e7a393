"""The container's seccomp profile: the process mode's allowlist, as rules runc installs.

Generated from the one syscall table (:mod:`semtrust.orchestrator.syscalls`): inert
calls are allowed in the kernel, mediated and mediator-refused calls go to the listener
(the mediator models them, or records the refusal as a fault and fails it with the
table's errno when enforcing), in-kernel refusals fail with their errno, and every
number the table does not name fails with ENOSYS in the kernel (runc refuses
``SCMP_ACT_NOTIFY`` as the default action, so unknown numbers cannot reach the mediator:
they are refused in every mode). Only x86_64 is listed: libseccomp kills x32 and foreign
architectures (its bad-architecture action), as the process mode's filter does.

A condition of the table (``when``) becomes a notify rule per condition plus allow rules
for its complement, all on the low 32 bits of the argument (the kernel truncates these
``int`` arguments, so upper bits must not decide). An existing profile in the bundle only
narrows this: what it refuses stays refused, what it allows under conditions is notified
under those conditions (the mediator then applies the table's own conditions).
"""

from __future__ import annotations

import copy
from typing import Any

from semtrust.orchestrator import syscalls as table

_ALLOW = "SCMP_ACT_ALLOW"
_NOTIFY = "SCMP_ACT_NOTIFY"
_ERRNO = "SCMP_ACT_ERRNO"
_LOW32 = 0xFFFFFFFF
_EPERM = 1  # runc's errno for SCMP_ACT_ERRNO without errnoRet
ARCHITECTURES = ["SCMP_ARCH_X86_64"]


def _masked(arg: int, mask: int, value: int) -> dict[str, Any]:
    return {"index": arg, "value": mask, "valueTwo": value, "op": "SCMP_CMP_MASKED_EQ"}


def complement_blocks(values: set[int], bits: int = 32) -> list[tuple[int, int]]:
    """(mask, value) pairs covering every ``bits``-bit number not in ``values``:
    the largest prefix blocks that hold none of them (at most ``bits`` per value)."""
    out: list[tuple[int, int]] = []

    def walk(prefix: int, depth: int) -> None:
        shift = bits - depth
        inside = [v for v in values if v >> shift == prefix]
        if not inside:
            mask = ((1 << depth) - 1) << shift
            out.append((mask, prefix << shift))
            return
        if depth == bits:
            return
        walk(prefix << 1, depth + 1)
        walk((prefix << 1) | 1, depth + 1)

    walk(0, 0)
    return out


def _cond_arg(c: table.Cond) -> dict[str, Any]:
    if c.op == "mask":
        return _masked(c.arg, c.value, c.value)
    if c.op == "eq":
        return _masked(c.arg, _LOW32, c.value)
    return {"index": c.arg, "value": 0, "op": "SCMP_CMP_NE"}


def _otherwise(e: table.Syscall) -> list[list[dict[str, Any]]]:
    """Argument lists (ORed) that hold exactly when none of ``e.when`` holds."""
    args = {c.arg for c in e.when}
    ops = {c.op for c in e.when}
    if len(args) != 1 or len(ops) != 1:
        raise ValueError(f"{e.name}: conditions on several arguments or kinds")
    (arg,), (op,) = args, ops
    if op == "mask":
        bits = 0
        for c in e.when:
            bits |= c.value
        return [[_masked(arg, bits, 0)]]
    if op == "eq":
        return [[_masked(arg, m, v)] for m, v in complement_blocks({c.value for c in e.when})]
    return [[{"index": arg, "value": 0, "op": "SCMP_CMP_EQ"}]]


def table_rules(e: table.Syscall) -> list[dict[str, Any]]:
    """The rules for one table entry (x86_64 name)."""
    if e.cls == table.INERT:
        return [{"names": [e.name], "action": _ALLOW}]
    base: dict[str, Any] = {"names": [e.name], "action": _NOTIFY}
    if e.cls == table.REFUSED and e.in_kernel:
        base = {"names": [e.name], "action": _ERRNO, "errnoRet": e.errno}
    if not e.when:
        return [base]
    rules = [{**base, "args": [_cond_arg(c)]} for c in e.when]
    rules += [{"names": [e.name], "action": _ALLOW, "args": a} for a in _otherwise(e)]
    return rules


def _bundle_verdict(name: str, prof: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """What the bundle's own profile does with ``name``: ("allow", []), ("deny", [rule])
    or ("conditional", its rules with arguments)."""
    rules = [r for r in prof.get("syscalls") or [] if name in (r.get("names") or [])]
    plain = [r for r in rules if not r.get("args")]
    if plain:
        r = plain[-1]
        if r.get("action") == _ALLOW:
            return "allow", []
        deny = {k: v for k, v in r.items() if k not in ("names", "args", "comment")}
        return "deny", [{**deny, "names": [name]}]
    if rules:
        return "conditional", [{**{k: v for k, v in r.items() if k != "comment"},
                                "names": [name]} for r in rules]
    default = prof.get("defaultAction", _ALLOW)
    if default == _ALLOW:
        return "allow", []
    deny = {"action": default}
    if "defaultErrnoRet" in prof:
        deny["errnoRet"] = prof["defaultErrnoRet"]
    return "deny", [{**deny, "names": [name]}]


def container_profile(existing: dict[str, Any] | None, listener_path: str) -> dict[str, Any]:
    """The seccomp profile runc installs in the container (see module docstring)."""
    prof = copy.deepcopy(existing) if existing else {}
    rules: list[dict[str, Any]] = []
    inert: list[str] = []
    for e in sorted(table.BY_NR.values(), key=lambda s: s.nr):
        verdict, theirs = _bundle_verdict(e.name, prof) if existing else ("allow", [])
        if verdict == "deny":
            rules += theirs
        elif verdict == "conditional":
            for r in theirs:
                if r.get("action") == _ALLOW and e.cls != table.INERT:
                    r = {**r, "action": _NOTIFY}
                    r.pop("errnoRet", None)
                rules.append(r)
        elif e.cls == table.INERT:
            inert.append(e.name)
        else:
            rules += table_rules(e)
    rules.insert(0, {"names": inert, "action": _ALLOW})
    out: dict[str, Any] = {"defaultAction": _ERRNO, "defaultErrnoRet": table.UNKNOWN_ERRNO,
                           "architectures": list(ARCHITECTURES), "syscalls": rules,
                           "listenerPath": listener_path}
    default = prof.get("defaultAction", _ALLOW)
    if existing and default != _ALLOW:  # the bundle's refusal of what nobody names
        out["defaultAction"] = default
        if "defaultErrnoRet" in prof:
            out["defaultErrnoRet"] = prof["defaultErrnoRet"]
        else:
            out.pop("defaultErrnoRet")
    # A rule that does what the default does is left out (libseccomp refuses it).
    out["syscalls"] = [r for r in rules if r.get("args") or r["action"] != out["defaultAction"]
                       or r.get("errnoRet", _EPERM) != out.get("defaultErrnoRet", _EPERM)]
    for key in ("flags", "listenerMetadata"):
        if key in prof:
            out[key] = prof[key]
    return out


def notify_syscalls() -> list[str]:
    """Names whose calls (some or all) reach the mediator in a container."""
    return [e.name for e in table.notified()]

