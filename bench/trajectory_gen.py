"""Deterministic generator of large, varied TSEM JSON export trajectories.

Benchmarks need trajectories far larger than the conformance vectors, with the
field variety a real workload has (many paths, inodes, credentials, socket
families, generic event types) and a controlled share of duplicate events, so
that "unique points" can be held fixed while the event count changes.

Each distinct event is a pure function of ``(seed, content id)``; the stream
picks, per position, either the next fresh content id or a random earlier one
(a duplicate: same hashed content, new ``number``/``ts``). Two files generated
with the same seed and ``--fresh`` therefore hold exactly the same set of
distinct events, whatever their length.

With ``--distinct`` every record is fresh and every COE and inode object is
distinct (random 32-bit ids, random capability masks), as in a long-running
host's export: nothing can be answered from a cache of earlier objects.

Usage::

    python bench/trajectory_gen.py OUT --events N [--seed S] [--fresh F | --dup-ratio R]
    python bench/trajectory_gen.py OUT --events N --distinct
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
from collections.abc import Iterator
from typing import TextIO

# --------------------------------------------------------------------------- pools

_FILESYSTEMS: tuple[tuple[str, str, str], ...] = (
    # (s_magic as the kernel prints it, s_id, s_uuid)
    ("0xef53", "sda1", "a953e99a39e54e478c9edf24815ddc49"),
    ("0xef53", "xvda", "feadbeaffeadbeaffeadbeaffeadbeaf"),
    ("0xef53", "xvdb", "0badc0de0badc0de0badc0de0badc0de"),
    ("0x58465342", "nvme0n1p2", "3f1c2b7d9e8a4c6f8b1d2e3f4a5b6c7d"),
    ("0x9123683e", "dm-0", "d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6"),
    ("0x794c7630", "overlay", "00000000000000000000000000000000"),
    ("0x9fa0", "proc", "00000000000000000000000000000000"),
    ("0x1021994", "tmpfs", "00000000000000000000000000000000"),
)
_TMPFS = 7

_DIRS: tuple[str, ...] = (
    "/usr/bin", "/usr/sbin", "/usr/lib", "/usr/lib/x86_64-linux-gnu", "/usr/lib/python3.11",
    "/usr/lib/python3/dist-packages", "/usr/share/locale", "/usr/share/zoneinfo/Europe",
    "/etc", "/etc/ssl/certs", "/etc/systemd/system", "/etc/apt/sources.list.d",
    "/var/lib/dpkg/info", "/var/log", "/var/cache/apt/archives", "/opt/app/lib",
    "/home/alice", "/home/alice/src/project", "/home/bob/.cache/pip", "/srv/www/htdocs",
    "/proc/self", "/proc/sys/kernel", "/lib/modules/6.8.0/kernel/drivers/net",
    "/home/ünïcødé/Documents", "/srv/share/with space", "/data/logs/2026/11",
)
_STEMS: tuple[str, ...] = (
    "libc", "libssl", "libcrypto", "libz", "python", "bash", "ls", "cat", "grep", "ld-linux",
    "passwd", "group", "hosts", "resolv", "nsswitch", "config", "index", "module", "data",
    "report", "cache", "shadow", "locale", "résumé", "quote\"d", "back\\slash", "tab\tname",
)
_SUFFIXES: tuple[str, ...] = (
    "", ".so", ".so.6", ".so.3", ".py", ".pyc", ".conf", ".json", ".txt", ".log", ".gz", ".db",
)
_COMMS: tuple[str, ...] = (
    "bash", "sh", "cat", "ls", "python3", "runc", "systemd", "sshd", "nginx", "postgres",
    "apt-get", "dpkg", "curl", "git", "make", "cc1", "ld", "node", "java", "quixote-us",
)
_CAPS: tuple[str, ...] = ("0x0", "0x0", "0x0", "0x1ffffffffff", "0x3ffffffffff", "0x3000", "0x400")
_CREDS: tuple[tuple[int, int], ...] = (
    (0, 0), (0, 0), (1000, 1000), (1000, 100), (1001, 1001), (33, 33), (65534, 65534),
    (999, 999), (108, 114), (4294967294, 4294967294),
)
_OPEN_FLAGS: tuple[int, ...] = (32768, 32768, 32768, 32800, 32834, 33345, 557056, 2, 65, 524288)
_MODES: tuple[str, ...] = ("0100644", "0100755", "0100600", "0100444", "0120777", "020666",
                           "040755", "0100640", "0104755", "010600")
_GENERIC: tuple[str, ...] = (
    "inode_getattr", "inode_getattr", "inode_getattr", "sb_statfs", "bprm_committed_creds",
    "file_fcntl", "file_ioctl", "file_receive", "file_lock", "capable", "task_prctl",
    "task_setpgid", "task_getsid", "socket_sendmsg", "socket_recvmsg", "socket_getsockname",
    "socket_setsockopt", "socket_listen", "socket_shutdown", "socket_socketpair",
    "inode_create", "inode_unlink", "inode_mkdir", "inode_rename", "inode_setattr",
    "inode_getxattr", "inode_setxattr", "sb_mount", "sb_umount", "key_alloc", "ipc_permission",
    "ptrace_access_check", "kernel_read_file", "bpf", "unix_stream_connect", "syslog",
)
_UNIX: tuple[str, ...] = (
    "/run/dbus/system_bus_socket", "/run/systemd/journal/socket", "/tmp/.X11-unix/X0",
    "/var/run/docker.sock", "/run/user/1000/bus", "@/tmp/abstract-ns-name",
    "/run/postgresql/.s.PGSQL.5432", "/tmp/sock",
)

# Event type mix (weights): roughly what a busy container produces.
_KINDS: tuple[tuple[str, int], ...] = (
    ("file_open", 34), ("mmap_file", 10), ("mmap_anon", 5), ("socket_create", 4),
    ("socket_connect", 5), ("socket_bind", 2), ("socket_accept", 2), ("task_kill", 3),
    ("generic", 35),
)
_KIND_NAMES = tuple(k for k, _ in _KINDS)
_KIND_CUM: list[int] = []
_acc = 0
for _, _w in _KINDS:
    _acc += _w
    _KIND_CUM.append(_acc)


def _q(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


def _h(*parts: object) -> str:
    text = "\x1f".join(map(str, parts))
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


class Generator:
    """Builds event text from content ids; everything derives from ``seed``."""

    def __init__(self, seed: int, fresh: int, distinct: bool = False) -> None:
        self.seed = seed
        self.distinct = distinct
        # Pools scale mildly with size so big files do not collapse onto few points.
        self.ntasks = max(256, fresh // 40)
        self.nfiles = max(2000, fresh)

    # ---------------------------------------------------------------- pieces
    def _task(self, t: int) -> tuple[str, str, int, str, str]:
        """(task_id, p_task_id, pid, comm, coe text) of task number ``t``."""
        r = random.Random(_h(self.seed, "task", t))
        uid, gid = _CREDS[r.randrange(len(_CREDS))]
        suid = uid if r.random() < 0.9 else 0
        coe = (
            f'{{"uid": "{uid}", "euid": "{uid}", "suid": "{suid}", "gid": "{gid}", '
            f'"egid": "{gid}", "sgid": "{gid}", "fsuid": "{uid}", "fsgid": "{gid}", '
            f'"capeff": "{_CAPS[r.randrange(len(_CAPS))] if uid == 0 else "0x0"}"}}'
        )
        parent = r.randrange(max(1, t)) if t else 0
        return (
            _h(self.seed, "tid", t), _h(self.seed, "tid", parent) if t else "0" * 64,
            1000 + t, _COMMS[r.randrange(len(_COMMS))], coe,
        )

    def _path(self, r: random.Random, f: int) -> str:
        rf = random.Random(_h(self.seed, "file", f))
        d = _DIRS[rf.randrange(len(_DIRS))]
        stem = _STEMS[rf.randrange(len(_STEMS))]
        return f"{d}/{stem}{f % 997 if f % 3 else ''}{_SUFFIXES[rf.randrange(len(_SUFFIXES))]}"

    def _inode(self, r: random.Random, fs: int) -> str:
        magic, s_id, s_uuid = _FILESYSTEMS[fs]
        uid, gid = _CREDS[r.randrange(len(_CREDS))] if r.random() < 0.3 else (0, 0)
        if self.distinct:
            uid, gid = r.randrange(1 << 32), r.randrange(1 << 32)
        return (
            f'{{"uid": "{uid}", "gid": "{gid}", "mode": "{_MODES[r.randrange(len(_MODES))]}", '
            f'"s_magic": "{magic}", "s_id": {_q(s_id)}, "s_uuid": "{s_uuid}"}}'
        )

    def _file(self, r: random.Random, k: int) -> str:
        """A ``file`` object; 8% are created-in-namespace tmpfs files."""
        flags = _OPEN_FLAGS[r.randrange(len(_OPEN_FLAGS))]
        if r.random() < 0.08:
            inode = self._inode(r, _TMPFS)
            name = f"/tmp/{'build' if k % 2 else 'session'}-{r.randrange(10**6)}/f{k % 50}.tmp"
            path = (
                f'{{"owner": "{_h(self.seed, "owner", r.randrange(self.ntasks))}", '
                f'"instance": "{r.randrange(1, 1 << 20)}", "type": "root", "pathname": {_q(name)}}}'
            )
            digest = hashlib.sha256(b"").hexdigest()
        else:
            f = r.randrange(self.nfiles)
            name = self._path(r, f)
            inode = self._inode(r, r.randrange(len(_FILESYSTEMS) - 1))
            dev = ""
            if r.random() < 0.85:
                major = r.choice((8, 259, 0, 253))
                dev = f'"dev": {{"major": "{major}", "minor": "{r.randrange(16)}"}}, '
            ptype = "root" if r.random() < 0.97 else "mnt"
            path = f'{{{dev}"type": "{ptype}", "pathname": {_q(name)}}}'
            # Content changes now and then (package upgrades): same path, new digest.
            digest = _h(self.seed, "content", f, r.random() < 0.05)
        return f'{{"flags": "{flags}", "inode": {inode}, "path": {path}, "digest": "{digest}"}}'

    def _sock(self, r: random.Random, family: int, owner: str) -> str:
        stype = r.choice((1, 2, 5)) if family in (1, 2, 10) else r.choice((2, 3))
        proto = {1: 0, 2: 6 if stype == 1 else 17, 10: 6 if stype == 1 else 17}.get(family, 0)
        return (
            f'{{"family": "{family}", "type": "{stype}", "protocol": "{proto}", '
            f'"owner": "{owner}"}}'
        )

    def _addr(self, r: random.Random, family: int, accept: bool) -> str:
        if family == 2:
            ip = bytes((r.choice((10, 127, 172, 192)), r.randrange(256), r.randrange(256),
                        r.randrange(1, 255)))
            port = (r.choice((80, 443, 22, 53, 5432, 8080)) if r.random() < 0.7
                    else r.randrange(1024, 65536))
            return (
                f'{{"af_inet": {{"port": "{int.from_bytes(port.to_bytes(2, "big"), "little")}", '
                f'"address": "{int.from_bytes(ip, "little")}"}}}}'
            )
        if family == 10:
            ip6 = (bytes(15) + b"\x01" if r.random() < 0.2
                   else bytes((0x20, 0x01, 0x0D, 0xB8)) + r.randbytes(12))
            port = r.randrange(1, 65536)
            flow, scope = (0, 0) if r.random() < 0.9 else (r.randrange(1 << 20), r.randrange(4))
            return (
                f'{{"af_inet6": {{"port": "{port}", "flow": "{flow}", "scope": "{scope}", '
                f'"address": "{ip6.hex()}"}}}}'
            )
        if family == 1:
            addr = _UNIX[r.randrange(len(_UNIX))]
            if r.random() < 0.3:
                addr = f"/run/user/{r.randrange(1000, 1100)}/app-{r.randrange(10**5)}.sock"
            return f'{{"af_unix": {{"address": {_q(addr)}}}}}'
        return f'{{"af_other": {{"address": "{r.randbytes(32).hex()}"}}}}'

    def _generic(self, r: random.Random, name: str, k: int) -> str:
        if name == "inode_getattr":
            f = r.randrange(self.nfiles)
            return f'{{"path": {{"type": "root", "pathname": {_q(self._path(r, f))}}}}}'
        if name in ("sb_statfs", "inode_setattr", "inode_getxattr", "inode_setxattr"):
            f = r.randrange(self.nfiles)
            return (
                f'{{"dentry": {{"inode": {self._inode(r, r.randrange(6))}, '
                f'"path": {{"type": "root", "pathname": {_q(self._path(r, f))}}}}}}}'
            )
        if name in ("bprm_committed_creds", "file_fcntl", "file_ioctl", "kernel_read_file"):
            extra = f', "cmd": "{r.randrange(1, 1 << 16)}", "arg": "{r.randrange(1 << 31)}"' \
                if name != "bprm_committed_creds" else ""
            return f'{{"file": {self._file(r, k)}{extra}}}'
        if name == "capable":
            return f'{{"cap": "{r.randrange(41)}", "opts": "{r.randrange(4)}"}}'
        if name in ("inode_create", "inode_mkdir", "inode_unlink", "inode_rename"):
            return (
                f'{{"dir": {{"inode": {self._inode(r, r.randrange(6))}, "path": {{"type": "root", '
                f'"pathname": {_q(_DIRS[r.randrange(len(_DIRS))])}}}}}, "mode": "0644"}}'
            )
        if name.startswith("socket_") or name == "unix_stream_connect":
            return f'{{"sock": {self._sock(r, r.choice((1, 2, 10)), _h(self.seed, "tid", k))}}}'
        return "{}"

    # ---------------------------------------------------------------- events
    def content(self, k: int) -> tuple[str, str, str]:
        """Event ``k`` split around its per-occurrence ``number`` and ``ts`` values."""
        r = random.Random(_h(self.seed, "event", k))
        t = r.randrange(self.ntasks)
        task_id, p_task_id, pid, comm, coe = self._task(t)
        if r.random() < 0.1:  # a setuid helper or changed credentials
            uid, gid = _CREDS[r.randrange(len(_CREDS))]
            coe = (
                f'{{"uid": "{uid}", "euid": "{r.choice((uid, 0))}", "suid": "{uid}", '
                f'"gid": "{gid}", "egid": "{gid}", "sgid": "{gid}", "fsuid": "{uid}", '
                f'"fsgid": "{gid}", "capeff": "{_CAPS[r.randrange(len(_CAPS))]}"}}'
            )
        if self.distinct:
            ids = [r.randrange(1 << 32) for _ in range(8)]
            coe = "{" + ", ".join(
                f'"{key}": "{v}"' for key, v in zip(
                    ("uid", "euid", "suid", "gid", "egid", "sgid", "fsuid", "fsgid"), ids,
                    strict=True)
            ) + f', "capeff": "{r.randrange(1 << 41):#x}"}}'
        kind = _KIND_NAMES[_bisect(_KIND_CUM, r.randrange(_KIND_CUM[-1]))]
        if kind == "file_open":
            name, cell = kind, f'{{"file": {self._file(r, k)}}}'
        elif kind == "mmap_file":
            name = kind
            cell = (
                f'{{"file": {self._file(r, k)}, "prot": "{r.choice((1, 3, 5, 7))}", '
                f'"flags": "{r.choice((2, 18, 1048578, 34, 2066))}"}}'
            )
        elif kind == "mmap_anon":
            name = "mmap_file"
            prot = r.choice((0, 1, 3, 7))
            cell = f'{{"prot": "{prot}", "flags": "{r.choice((34, 131106, 16418))}"}}'
        elif kind == "socket_create":
            name = kind
            family = r.choice((1, 2, 2, 10, 16, 17))
            stype = r.choice((1, 2, 3, 5, 524289, 526337))
            cell = (
                f'{{"family": "{family}", "type": "{stype}", "protocol": "{r.choice((0, 6, 17))}", '
                f'"kern": "{1 if r.random() < 0.05 else 0}"}}'
            )
        elif kind in ("socket_connect", "socket_bind", "socket_accept"):
            name = kind
            family = r.choice((2, 2, 2, 10, 10, 1, 1, 16, 17, 38))
            owner = _h(self.seed, "tid", r.randrange(self.ntasks)) if r.random() < 0.5 else task_id
            cell = (
                f'{{"sock": {self._sock(r, family, owner)}, '
                f'"addr": {self._addr(r, family, kind == "socket_accept")}}}'
            )
        elif kind == "task_kill":
            name = kind
            cell = (
                f'{{"target": "{_h(self.seed, "tid", r.randrange(self.ntasks))}", '
                f'"sig": "{r.choice((1, 2, 9, 15, 15, 17, 19, 10))}", '
                f'"cross_ns": "{1 if r.random() < 0.1 else 0}"}}'
            )
        else:
            name = _GENERIC[r.randrange(len(_GENERIC))]
            cell = self._generic(r, name, k)
        export = "async_event" if r.random() < 0.02 else "event"
        head = (
            f'{{"export": {{"type": "{export}"}}, "event": {{"pid": "{pid}", '
            f'"tnum": "{r.randrange(1 << 32)}", "context": "{t % 4}", "number": "'
        )
        mid = (
            f'", "process": {_q(comm)}, "type": "{name}", "ttd": "{t}", '
            f'"p_ttd": "{t // 7}", "task_id": "{task_id}", "p_task_id": "{p_task_id}", "ts": "'
        )
        tail = f'"}}, "COE": {coe}, "{name}": {cell}}}'
        return head, mid, tail

    def lines(self, events: int, fresh: int, aggregate: bool = True) -> Iterator[str]:
        """``events`` lines holding exactly ``fresh`` distinct content ids (0..fresh-1)."""
        if not 1 <= fresh <= events:
            raise ValueError("need 1 <= fresh <= events")
        pick = random.Random(_h(self.seed, "stream"))
        cache: dict[int, tuple[str, str, str]] = {}
        if aggregate:
            yield (
                '{"export": {"type": "aggregate"}, "aggregate": {"value": "'
                + _h(self.seed, "aggregate") + '"}}'
            )
        next_id = 0
        ts = 10**10
        for pos in range(events):
            remaining = events - pos
            if next_id == 0 or pick.random() * remaining < fresh - next_id:
                k = next_id
                next_id += 1
            elif pick.random() < 0.6:  # locality: most repeats are recent
                k = max(0, next_id - 1 - int(pick.expovariate(1 / 200)))
            else:
                k = pick.randrange(next_id)
            parts = cache.get(k)
            if parts is None:
                parts = self.content(k)
                if len(cache) >= 1 << 15:
                    cache.clear()
                cache[k] = parts
            ts += pick.randrange(1, 50_000)
            yield f"{parts[0]}{pos + 1}{parts[1]}{ts}{parts[2]}"


def _bisect(cum: list[int], x: int) -> int:
    for i, c in enumerate(cum):
        if x < c:
            return i
    return len(cum) - 1


def generate(out: TextIO, events: int, seed: int, fresh: int, aggregate: bool = True,
             distinct: bool = False) -> None:
    """Write the trajectory to ``out``, streaming (constant memory); ``distinct`` makes
    every COE and inode object distinct (``fresh`` should then be ``events``)."""
    gen = Generator(seed, fresh, distinct)
    buf: list[str] = []
    for line in gen.lines(events, fresh, aggregate):
        buf.append(line)
        if len(buf) >= 2048:
            out.write("\n".join(buf) + "\n")
            buf.clear()
    if buf:
        out.write("\n".join(buf) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("out", help="output file ('-' for stdout)")
    ap.add_argument("--events", type=int, required=True, help="number of event records")
    ap.add_argument("--seed", type=int, default=1)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--fresh", type=int, help="number of distinct event contents")
    g.add_argument("--dup-ratio", type=float, default=0.3,
                   help="share of records that repeat an earlier event (default 0.3)")
    g.add_argument("--distinct", action="store_true",
                   help="every record fresh, every COE and inode object distinct")
    ap.add_argument("--no-aggregate", action="store_true", help="omit the leading aggregate record")
    a = ap.parse_args(argv)
    if a.distinct:
        fresh = a.events
    elif a.fresh is not None:
        fresh = a.fresh
    else:
        fresh = max(1, round(a.events * (1 - a.dup_ratio)))
    if a.out == "-":
        generate(sys.stdout, a.events, a.seed, fresh, not a.no_aggregate, a.distinct)
    else:
        with open(a.out, "w", encoding="utf-8", errors="surrogateescape") as fp:
            generate(fp, a.events, a.seed, fresh, not a.no_aggregate, a.distinct)
    return 0


if __name__ == "__main__":
    sys.exit(main())
