"""The container's seccomp profile: what runc's filter sends to the mediator or refuses."""

from __future__ import annotations

import errno
from typing import Any

#: The open family: notified in container mode too, and routed (opens.py) to fanotify
#: (objects on marked mounts) or to the process-mode handler (procfs, unmarked mounts).
FILE_OPEN_SYSCALLS = frozenset({"open", "openat", "openat2", "creat"})


def notify_syscalls() -> list[str]:
    """The process mode's mediated syscalls, the open family included."""
    from semtrust.sensors.seccomp import default_syscalls

    return list(default_syscalls())


def notify_profile_rules(profile: dict[str, Any]) -> dict[str, Any]:
    """mmap/mprotect are only interesting with PROT_EXEC: narrow their notify rule."""
    from semtrust.sensors.seccomp import PROT_EXEC, PROT_EXEC_FILTERED

    rules = []
    for rule in profile.get("syscalls", []):
        names = rule.get("names") or []
        prot = [n for n in names if n in PROT_EXEC_FILTERED]
        if rule.get("action") != "SCMP_ACT_NOTIFY" or not prot or rule.get("args"):
            rules.append(rule)
            continue
        rest = [n for n in names if n not in PROT_EXEC_FILTERED]
        if rest:
            rules.append({**rule, "names": rest})
        rules.append({**rule, "names": prot, "args": [
            {"index": 2, "value": PROT_EXEC, "valueTwo": PROT_EXEC,
             "op": "SCMP_CMP_MASKED_EQ"}]})
        if profile.get("defaultAction") != "SCMP_ACT_ALLOW":  # keep the non-exec case allowed
            rules.append({"names": prot, "action": "SCMP_ACT_ALLOW", "args": [
                {"index": 2, "value": PROT_EXEC, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]})
    out = dict(profile)
    out["syscalls"] = rules
    return out


_ALLOW = "SCMP_ACT_ALLOW"
#: seccomp(2)'s flags argument with SECCOMP_FILTER_FLAG_NEW_LISTENER set or clear.
_NEW_LISTENER = 8
_LISTENER_SET = [{"index": 1, "value": _NEW_LISTENER, "valueTwo": _NEW_LISTENER,
                  "op": "SCMP_CMP_MASKED_EQ"}]
_LISTENER_CLEAR = [{"index": 1, "value": _NEW_LISTENER, "valueTwo": 0,
                    "op": "SCMP_CMP_MASKED_EQ"}]
#: What the process mode's own filter refuses in the kernel, for the same reasons: no second
#: supervisor inside the domain (Linux already answers EBUSY to a second listener in a chain;
#: this does not depend on it); io_uring connects and sends without system calls; userfaultfd
#: can stall the mediator's reads of task memory. Refused in the kernel, they cost no
#: round trip to the mediator and hold even while it is busy or gone.
_REFUSED = (("seccomp", errno.EPERM, _LISTENER_SET),
            ("io_uring_setup", errno.ENOSYS, None),
            ("userfaultfd", errno.EPERM, None))


def refuse_escapes(profile: dict[str, Any]) -> dict[str, Any]:
    """Add the rules in ``_REFUSED`` to a runc seccomp profile.

    A name allowed unconditionally by the bundle's profile is taken out of that rule
    (``seccomp`` stays allowed without the listener flag); a name the profile already
    refuses unconditionally is left as it is.
    """
    rules: list[dict[str, Any]] = []
    blocked: set[str] = set()
    for rule in profile.get("syscalls", []):
        names = list(rule.get("names") or [])
        if rule.get("action") != _ALLOW and not rule.get("args"):
            blocked.update(names)
        ours = [n for n, _e, _a in _REFUSED if n in names]
        if rule.get("action") != _ALLOW or rule.get("args") or not ours:
            rules.append(rule)
            continue
        rest = [n for n in names if n not in ours]
        if rest:
            rules.append({**rule, "names": rest})
        if "seccomp" in ours:
            rules.append({**rule, "names": ["seccomp"], "args": _LISTENER_CLEAR})
    for name, err, args in _REFUSED:
        if name in blocked:
            continue
        rule = {"names": [name], "action": "SCMP_ACT_ERRNO", "errnoRet": err}
        if args:
            rule["args"] = args
        rules.append(rule)
    return {**profile, "syscalls": rules}

