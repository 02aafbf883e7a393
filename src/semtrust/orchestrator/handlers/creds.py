"""Credentials: capable and capset events for the set*id family."""

from __future__ import annotations

from semtrust.orchestrator.core import CAP_SETGID, CAP_SETUID, Ctx, MediatorCore


class CredHandlers(MediatorCore):
    """Credentials: capable and capset events for the set*id family."""

    def _setid(self, c: Ctx) -> None:
        name = c.n.name
        self.d.tasks.invalidate(c.tid)
        if name == "capset":
            self._generic(c, "capset", {})
            return
        cap = CAP_SETGID if "gid" in name or name == "setgroups" else CAP_SETUID
        self._generic(c, "capable", {"cap": cap, "syscall": name})



#: syscall name -> handler method
HANDLERS: dict[str, str] = {
    "setuid": "_setid", "setgid": "_setid", "setreuid": "_setid", "setregid": "_setid",
    "setresuid": "_setid", "setresgid": "_setid", "setfsuid": "_setid", "setfsgid": "_setid",
    "setgroups": "_setid", "capset": "_setid",
}
