"""The ctypes seccomp sensor on the real kernel: filter, deny, continue, ADDFD emulation."""

from __future__ import annotations

import errno
import hashlib
import os
import socket
import struct
import sys
from pathlib import Path

import pytest

from semtrust.sensors.fileinfo import EMPTY_DIGEST, FileInfo
from semtrust.sensors.seccomp import (
    SYSCALLS,
    Listener,
    SeccompError,
    build_filter,
    install_filter,
    run_filter,
)

pytestmark = pytest.mark.skipif(sys.platform != "linux" or os.uname().machine != "x86_64",
                                reason="seccomp sensor is x86_64 Linux only")


def test_filter_shape() -> None:
    code = build_filter(["openat", "mmap", "execve"])
    assert len(code) % 8 == 0
    insns = [struct.unpack_from("=HBBI", code, i) for i in range(0, len(code), 8)]
    assert insns[0] == (0x20, 0, 0, 4)  # load arch first
    assert any(k == SYSCALLS["openat"] for _c, _t, _f, k in insns)
    assert any(k == 0x80000000 for _c, _t, _f, k in insns)  # kill: foreign arch / x32
    # nested listeners refused in the kernel, whatever the subset
    assert run_filter(code, SYSCALLS["seccomp"], (1, 8, 0, 0, 0, 0)) == 0x00050000 | errno.EPERM


def _child(sock: socket.socket, paths: list[bytes]) -> None:
    """Install the filter, hand the listener up, try the opens, report errno or content."""
    try:
        lfd = install_filter(["openat", "open"])
        socket.send_fds(sock, [b"L"], [lfd])
        os.close(lfd)
        sock.recv(1)
        out = []
        for p in paths:
            try:
                fd = os.open(p, os.O_RDONLY)
                out.append(b"ok:" + os.read(fd, 64))
                os.close(fd)
            except OSError as e:
                out.append(b"err:%d" % e.errno)
        sock.sendall(b"\0".join(out))
    finally:
        os._exit(0)


def _read_path(pid: int, addr: int) -> bytes:
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        mem.seek(addr)
        return mem.read(256).split(b"\0", 1)[0]


def test_deny_continue_and_addfd(tmp_path: object) -> None:
    parent, child = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        parent.close()
        _child(child, [b"/etc/hostname", b"/etc/passwd", b"/semtrust-injected"])
    child.close()
    _m, fds, _f, _a = socket.recv_fds(parent, 16, 1)
    assert fds, "child did not send its listener"
    lst = Listener(fds[0])
    assert isinstance(lst.set_sync_wakeup(), bool)
    parent.sendall(b"G")
    seen = []
    hostname = Path("/etc/hostname").read_bytes()[:64]
    try:
        while True:
            n = lst.recv()
            if n is None:
                continue
            path = _read_path(n.pid, n.args[1] if n.name == "openat" else n.args[0])
            assert lst.id_valid(n.id)
            seen.append(path)
            if path == b"/etc/passwd":
                lst.deny(n.id, errno.EPERM)
            elif path == b"/semtrust-injected":
                fd = os.open("/etc/hostname", os.O_RDONLY)
                try:
                    assert lst.addfd_send(n.id, fd, cloexec=True) >= 0
                finally:
                    os.close(fd)
                break
            else:
                lst.allow(n.id)
        result = parent.recv(4096).split(b"\0")
    finally:
        os.waitpid(pid, 0)
        lst.close()
    assert result[0] == b"ok:" + hostname
    assert result[1] == b"err:%d" % errno.EPERM
    assert result[2] == b"ok:" + hostname  # the supervisor's fd, injected
    assert b"/etc/passwd" in seen


def test_answer_to_vanished_task_is_not_an_error() -> None:
    lst = Listener(os.open("/dev/null", os.O_RDONLY))
    with pytest.raises(SeccompError):
        lst.recv()  # not a listener: a real error, reported
    lst.close()


def test_fileinfo_describes_from_fd(tmp_path: object) -> None:
    fi = FileInfo()
    fd = os.open("/etc/hostname", os.O_RDONLY)
    try:
        d = fi.describe(fd, os.O_RDONLY, "/etc/hostname")
    finally:
        os.close(fd)
    st = os.stat("/etc/hostname")
    assert d.inode.uid == st.st_uid and d.inode.mode == st.st_mode
    assert d.digest == hashlib.sha256(Path("/etc/hostname").read_bytes()).digest()
    fd = os.open("/proc/self/status", os.O_RDONLY)
    try:
        p = fi.describe(fd, os.O_RDONLY, "/proc/self/status")
    finally:
        os.close(fd)
    assert p.digest == EMPTY_DIGEST and p.inode.s_magic == 0x9FA0
