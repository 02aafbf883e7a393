"""Orchestrator building blocks: trust inheritance, address decoding, framing, names."""

from __future__ import annotations

import os
import socket
import struct

import pytest

from semtrust.events import Inet6Addr, InetAddr, OtherAddr, UnixAddr
from semtrust.orchestrator.mediator import _kernel_flags, parse_sockaddr
from semtrust.orchestrator.mgmt import MAX_REQUEST, MgmtError, recv_msg, send_msg, socket_path
from semtrust.orchestrator.tasks import Process, TaskTable, read_status


def test_untrusted_is_inherited_by_every_descendant() -> None:
    t = TaskTable()
    # 10 -> 11 -> 12, 10 -> 13; 20 unrelated
    for tgid, parent in ((10, 1), (11, 10), (12, 11), (13, 10), (20, 1)):
        t.procs[tgid] = Process(tgid, parent)
        if parent in t.procs:
            t.procs[parent].children.add(tgid)
    assert sorted(t.mark_untrusted(11)) == [11, 12]
    assert not t.procs[10].untrusted and not t.procs[13].untrusted
    assert sorted(t.mark_untrusted(10)) == [10, 13]  # 11, 12 already marked
    assert not t.procs[20].untrusted


def test_new_process_inherits_identity_and_trust_from_parent() -> None:
    t = TaskTable()
    me = read_status(os.getpid())
    parent = Process(me.ppid, 0, task_id=b"\x01" * 32, untrusted=True)
    t.procs[me.ppid] = parent
    proc, st = t.thread(os.getpid())
    assert proc.task_id == b"\x01" * 32 and proc.untrusted
    assert os.getpid() in parent.children
    assert st.coe.uid == os.getuid()


def test_sockaddr_decoding_matches_the_export_shape() -> None:
    sin = struct.pack("=H", socket.AF_INET) + bytes([0, 80]) + bytes([127, 0, 0, 1]) + bytes(8)
    assert parse_sockaddr(sin) == InetAddr(20480, 16777343)  # spec §2.4.4 example
    sin6 = (struct.pack("=H", socket.AF_INET6) + bytes([1, 187]) + (7).to_bytes(4, "little")
            + socket.inet_pton(socket.AF_INET6, "::1") + (2).to_bytes(4, "little"))
    a6 = parse_sockaddr(sin6)
    assert isinstance(a6, Inet6Addr) and a6.flow == 7 and a6.scope == 2
    assert a6.address == socket.inet_pton(socket.AF_INET6, "::1")
    assert parse_sockaddr(struct.pack("=H", socket.AF_UNIX) + b"/run/x.sock\0junk") == \
        UnixAddr("/run/x.sock")
    assert parse_sockaddr(struct.pack("=H", socket.AF_UNIX) + b"\0abstract") == \
        UnixAddr("@abstract")
    assert isinstance(parse_sockaddr(struct.pack("=H", 16) + b"\1\2\3"), OtherAddr)


def test_kernel_flags_drop_open_time_only_bits() -> None:
    f = _kernel_flags(os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_APPEND)
    assert f == os.O_WRONLY | os.O_APPEND | 0o100000  # O_LARGEFILE added, like f_flags
    assert _kernel_flags(os.O_RDONLY) == 32768  # spec §3.2 example "flags": "32768"


def test_mgmt_framing_is_bounded() -> None:
    a, b = socket.socketpair()
    with a, b:
        send_msg(a, {"op": "ping"}, MAX_REQUEST)
        assert recv_msg(b, MAX_REQUEST) == {"op": "ping"}
        a.sendall(struct.pack(">I", MAX_REQUEST + 1))
        with pytest.raises(MgmtError):
            recv_msg(b, MAX_REQUEST)
        a.sendall(struct.pack(">I", 3) + b"{x}")
        with pytest.raises(MgmtError):
            recv_msg(b, MAX_REQUEST)


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden", "x" * 65])
def test_domain_names_cannot_escape_the_socket_directory(name: str) -> None:
    with pytest.raises(MgmtError):
        socket_path(name)
