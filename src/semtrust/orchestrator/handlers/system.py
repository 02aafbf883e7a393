"""System V and POSIX IPC, the kernel log, clocks, quotas, keys and kernel modules.

These are generic-CELL events whose body is the call's name and the integer
arguments the syscall table names (``Syscall.args``), plus the strings that say
which object is meant (a queue name, a key type, a module's digest).
"""

from __future__ import annotations

import errno
import hashlib
import os

from semtrust.orchestrator import syscalls as table
from semtrust.orchestrator.core import Ctx, MediatorCore, Unmodelable, _s32

MAX_MODULE_IMAGE = 64 << 20
CAP_SYS_MODULE = 16
CAP_SYS_ADMIN = 21
CAP_SYS_TTY_CONFIG = 26

#: event type of each generic syscall
_EVENT = {
    "shmget": "shm_associate", "semget": "sem_associate", "msgget": "msg_queue_associate",
    "shmctl": "shm_shmctl", "semctl": "sem_semctl", "msgctl": "msg_queue_msgctl",
    "syslog": "syslog", "settimeofday": "settime", "clock_settime": "settime",
    "clock_adjtime": "settime", "adjtimex": "settime", "quotactl": "quotactl",
    "quotactl_fd": "quotactl", "keyctl": "key_permission",
}
_CAPS = {"sethostname": CAP_SYS_ADMIN, "setdomainname": CAP_SYS_ADMIN,
         "vhangup": CAP_SYS_TTY_CONFIG}


class SystemHandlers(MediatorCore):
    """Generic events of the ipc and system families."""

    def _generic_args(self, c: Ctx) -> None:
        e = table.BY_NAME[c.n.name]
        body: dict[str, object] = {"syscall": e.name}
        for i, key in enumerate(e.args):
            if key != "_":
                body[key] = c.n.args[i] & 0xFFFFFFFF
        self._generic(c, _EVENT[e.name], body)

    def _capability(self, c: Ctx) -> None:
        self._generic(c, "capable", {"syscall": c.n.name, "cap": _CAPS[c.n.name]})

    def _mq(self, c: Ctx) -> None:
        try:
            name = os.fsdecode(self.read_str(c, c.n.args[0]))
        except OSError as exc:
            self.lst.deny(c.n.id, exc.errno or errno.EFAULT)
            return
        if c.n.name == "mq_open":
            self._generic(c, "msg_queue_associate", {"syscall": "mq_open", "name": name,
                                                     "oflag": c.n.args[1] & 0xFFFFFFFF})
        else:
            self._generic(c, "inode_unlink", {"syscall": "mq_unlink", "name": name})

    def _add_key(self, c: Ctx) -> None:
        try:
            ktype = os.fsdecode(self.read_str(c, c.n.args[0]))
        except OSError as exc:
            self.lst.deny(c.n.id, exc.errno or errno.EFAULT)
            return
        self._generic(c, "key_alloc", {"syscall": "add_key", "type": ktype})

    def _module(self, c: Ctx) -> None:
        """Kernel code: its digest enters the model (init_module) or the file does."""
        a = c.n.args
        if c.n.name == "delete_module":
            self._generic(c, "capable", {"syscall": "delete_module", "cap": CAP_SYS_MODULE})
            return
        h = hashlib.sha256()
        if c.n.name == "init_module":
            size = a[1]
            if size > MAX_MODULE_IMAGE:
                raise Unmodelable("module image too large to measure")
            addr = a[0]
            left = size
            while left:
                chunk = self.read_mem(c, addr, min(left, 1 << 20))
                if not chunk:
                    self.lst.deny(c.n.id, errno.EFAULT)
                    return
                h.update(chunk)
                addr += len(chunk)
                left -= len(chunk)
            self.check_valid(c)
            self._generic(c, "kernel_load_data", {"syscall": "init_module",
                                                  "digest": h.hexdigest()})
            return
        try:
            fd = os.open(f"/proc/{c.tid}/fd/{_s32(a[0])}", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            self.lst.allow(c.n.id)  # bad fd: the kernel fails it
            return
        try:
            if os.fstat(fd).st_size > MAX_MODULE_IMAGE:
                raise Unmodelable("module file too large to measure")
            while chunk := os.read(fd, 1 << 20):
                h.update(chunk)
        finally:
            os.close(fd)
        self.check_valid(c)
        self._generic(c, "kernel_read_file", {"syscall": "finit_module",
                                              "digest": h.hexdigest()})


#: syscall name -> handler method
HANDLERS: dict[str, str] = {
    **{name: "_generic_args" for name in _EVENT},
    **{name: "_capability" for name in _CAPS},
    "mq_open": "_mq", "mq_unlink": "_mq", "add_key": "_add_key",
    "init_module": "_module", "finit_module": "_module", "delete_module": "_module",
}
