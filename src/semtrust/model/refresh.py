"""Bring a model up to date with the host's files as they are now.

Every point whose recorded event names a file (``file_open``, file-backed
``mmap_file``) is recomputed from the file at that path: re-stat, re-hash, a new
file description, a new coefficient. A changed executable changes the identity
of every task that runs it (spec §2.2), so identities are re-derived too: an
identity X of the model is known to come from an exec record E (task T, file D)
when ``task_identity(T, COE, D) == X`` for a COE X's events carry, and is
recomputed from the refreshed T and D.

With ``packages``, a changed file is applied only where dpkg's md5sums list the
same content for that path (as fapolicyd trusts package files); the loader's
cache is accepted when ``ldconfig`` regenerates it byte for byte. The rest is
listed for review and not applied.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from semtrust.events import Coe, Event
from semtrust.events.record import FileCell, FileDesc, MmapCell
from semtrust.model.coefficient import event_coefficient, task_identity
from semtrust.model.explain import file_of
from semtrust.model.merge import Composed, Entry, entries_of
from semtrust.model.modelfile import Model

FMODE_EXEC = 0x20
LD_SO_CACHE = "/etc/ld.so.cache"
DPKG_INFO = Path("/var/lib/dpkg/info")

UNCHANGED = "unchanged"
APPLIED = "refreshed"
ACCEPTED = "accepted"
REVIEW = "review"
MISSING = "missing"


@dataclass
class Change:
    """What refresh found for one file (or identity) of the model."""

    path: str
    status: str  # APPLIED, ACCEPTED, REVIEW or MISSING
    why: str
    old_digest: str | None = None
    new_digest: str | None = None
    points: int = 0

    def as_json(self) -> dict[str, object]:
        return {"path": self.path, "status": self.status, "why": self.why,
                "old_digest": self.old_digest, "new_digest": self.new_digest,
                "points": self.points}


class PackageDb:
    """dpkg's md5sums: path -> (md5 hex, package), read once on first use."""

    def __init__(self, info_dir: Path = DPKG_INFO) -> None:
        self.info_dir = info_dir
        self._index: dict[str, tuple[str, str]] | None = None

    def _load(self) -> dict[str, tuple[str, str]]:
        index: dict[str, tuple[str, str]] = {}
        try:
            names = sorted(os.listdir(self.info_dir))
        except OSError:
            return index
        for name in names:
            if not name.endswith(".md5sums"):
                continue
            pkg = name[: -len(".md5sums")]
            try:
                data = (self.info_dir / name).read_bytes()
            except OSError:
                continue
            for raw in data.splitlines():
                md5, _, rel = raw.decode("utf-8", "surrogateescape").partition("  ")
                if len(md5) == 32 and rel:
                    index["/" + rel.lstrip("/")] = (md5, pkg)
        return index

    def lookup(self, path: str) -> tuple[str, str] | None:
        """The package's md5 of ``path``; merged-/usr aliases (/bin = /usr/bin) too."""
        if self._index is None:
            self._index = self._load()
        hit = self._index.get(path)
        if hit is None and path.startswith("/usr/"):
            hit = self._index.get(path[4:])
        return hit


def _md5_sha256(path: str) -> tuple[str, bytes]:
    """MD5 (dpkg's) and SHA-256 (ours) of one read of the file."""
    h = hashlib.md5(usedforsecurity=False)
    s = hashlib.sha256()
    with open(path, "rb", buffering=0) as fp:
        for chunk in iter(lambda: fp.read(1 << 20), b""):
            h.update(chunk)
            s.update(chunk)
    return h.hexdigest(), s.digest()


def ldconfig_regenerates(path: str = LD_SO_CACHE) -> str | None:
    """None if ``ldconfig`` (without touching links) rebuilds ``path`` byte for byte from
    the current /etc/ld.so.conf and libraries; else why not."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return f"cannot stat: {exc.strerror}"
    if st.st_uid != 0 or st.st_mode & 0o022:
        return "not owned by root or writable by others"
    with tempfile.TemporaryDirectory(prefix="semtrust-ldconfig-") as d:
        tmp = os.path.join(d, "ld.so.cache")
        try:
            subprocess.run(["ldconfig", "-X", "-C", tmp], check=True, capture_output=True,
                           timeout=120)
        except (OSError, subprocess.SubprocessError) as exc:
            return f"ldconfig failed: {exc}"
        with open(tmp, "rb") as a, open(path, "rb") as b:
            if a.read() != b.read():
                return "differs from what ldconfig generates now"
    return None


class _Files:
    """Current descriptions of files, each hashed once."""

    def __init__(self) -> None:
        from semtrust.sensors.fileinfo import FileInfo

        self.fi = FileInfo()
        self.cache: dict[tuple[str, int], FileDesc | str | None] = {}

    def now(self, old: FileDesc) -> FileDesc | str | None:
        """The file at the recorded path described as it is now, why not, or None for
        objects refresh leaves alone (devices, sockets, FIFOs: opening them has effects)."""
        key = (old.path.pathname, old.flags)
        if key not in self.cache:
            self.cache[key] = self._describe(old)
        return self.cache[key]

    def _describe(self, old: FileDesc) -> FileDesc | str | None:
        path = old.path.pathname
        try:
            lst = os.lstat(path)
        except OSError as exc:
            return exc.strerror or str(exc)
        if stat.S_ISLNK(lst.st_mode):
            return "now a symbolic link"
        if not (stat.S_ISREG(lst.st_mode) or stat.S_ISDIR(lst.st_mode)):
            return None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY
                         | os.O_CLOEXEC)
        except OSError as exc:
            return exc.strerror or str(exc)
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != (lst.st_dev, lst.st_ino):
                return "replaced while it was checked"
            new = self.fi.describe(fd, old.flags, path, st=st, hash_content=True)
        except OSError as exc:
            return exc.strerror or str(exc)
        finally:
            os.close(fd)
        # Keep how the path was reached (device numbers are not hashed and may differ
        # after a reboot); only the object's facts are new.
        return new._replace(path=old.path)


def _with_file(ev: Event, f: FileDesc) -> Event:
    cell = ev.cell
    if isinstance(cell, FileCell):
        return ev._replace(cell=FileCell(f))
    assert isinstance(cell, MmapCell)
    return ev._replace(cell=cell._replace(file=f))


def _derivations(records: Mapping[bytes, Event]) -> dict[bytes, tuple[bytes, Coe, Event]]:
    """identity -> (parent identity, COE, exec record) for identities an exec explains."""
    execs = [ev for ev in records.values()
             if isinstance(ev.cell, FileCell) and ev.cell.file.flags & FMODE_EXEC
             and not ev.cell.file.path.instance]
    coes: dict[bytes, set[Coe]] = {}
    for ev in records.values():
        coes.setdefault(ev.task_id, set()).add(ev.coe)
    found: dict[bytes, tuple[bytes, Coe, Event]] = {}
    for x, cs in coes.items():
        for c in cs:
            for e in execs:
                assert isinstance(e.cell, FileCell)
                if task_identity(e.task_id, c, e.cell.file) == x:
                    found[x] = (e.task_id, c, e)
                    break
            if x in found:
                break
    return found


def refresh_model(model: Model, *, packages: bool = False,
                  package_db: PackageDb | None = None,
                  ld_check: Callable[[str], str | None] = ldconfig_regenerates,
                  ) -> tuple[Composed, list[Change], int]:
    """The refreshed model, what changed (per file), and how many points had no record."""
    files = _Files()
    db = package_db if package_db is not None else PackageDb()
    entries = entries_of(model)
    records = {e.point: e.record for e in entries if e.record is not None}
    pseudonyms = set(model.pseudonyms)
    changes: dict[str, Change] = {}
    decided: dict[str, bool] = {}  # path -> apply the new description?

    def verdict(old: FileDesc, new: FileDesc) -> bool:
        path = old.path.pathname
        if path in decided:
            return decided[path]
        ok, status, why = True, APPLIED, "changed on the host"
        if packages and old.digest != new.digest:
            ok, status, why = _package_verdict(path, new.digest, db, ld_check)
        elif packages:
            why = "owner, mode or filesystem changed"
        changes[path] = Change(path, status, why, old.digest.hex(), new.digest.hex())
        decided[path] = ok
        return ok

    def current(ev: Event) -> FileDesc | None:
        """The event's file as it is now, if it changed and the change is applied."""
        f = file_of(ev)
        if f is None or f.path.instance:
            return None
        new = files.now(f)
        if new is None:
            return None
        if isinstance(new, str):
            if f.path.pathname not in changes:
                changes[f.path.pathname] = Change(f.path.pathname, MISSING, new,
                                                  f.digest.hex())
            return None
        if new == f or (new._replace(digest=f.digest) == f and _pseudonymous(f, pseudonyms)):
            return None
        return new if verdict(f, new) else None

    derive = _derivations(records)
    identities: dict[bytes, bytes] = {}

    def identity(x: bytes, depth: int = 0) -> bytes:
        if x in identities:
            return identities[x]
        got = x
        d = derive.get(x)
        if d is not None and depth < 64:
            parent, coe, exe = d
            new_parent = identity(parent, depth + 1)
            new_exe = current(exe)
            exe_file = file_of(exe)
            if exe_file is not None and (new_exe is not None or new_parent != parent):
                got = task_identity(new_parent, coe, new_exe or exe_file)
        identities[x] = got
        return got

    out = Composed(model.aggregate, model.base, set(pseudonyms))
    for e in entries:
        ev = e.record
        if ev is None:
            out.add(e)
            continue
        new_ev = ev
        new_file = current(ev)
        if new_file is not None:
            new_ev = _with_file(new_ev, new_file)
        new_task = identity(ev.task_id)
        if new_task != ev.task_id:
            new_ev = new_ev._replace(task_id=new_task)
        if new_ev is ev:
            out.add(e)
            continue
        point = event_coefficient(new_ev, pseudonyms)
        f = file_of(ev)
        if f is not None and f.path.pathname in changes:
            changes[f.path.pathname].points += 1
        out.add(Entry(point, None, new_ev))
    unrecorded = sum(1 for e in entries if e.record is None)
    order = {APPLIED: 0, ACCEPTED: 0, REVIEW: 1, MISSING: 2}
    listed = sorted(changes.values(), key=lambda c: (order.get(c.status, 3), c.path))
    return out, listed, unrecorded


def _pseudonymous(f: FileDesc, pseudonyms: set[bytes]) -> bool:
    from semtrust.model.coefficient import is_pseudonym

    return is_pseudonym(f.path.pathname.encode("utf-8", "surrogateescape"), pseudonyms)


def _package_verdict(path: str, digest: bytes, db: PackageDb,
                     ld_check: Callable[[str], str | None]) -> tuple[bool, str, str]:
    if path == LD_SO_CACHE:
        why = ld_check(path)
        if why is None:
            return True, ACCEPTED, "regenerated byte for byte by ldconfig"
        return False, REVIEW, f"loader cache: {why}"
    hit = db.lookup(path)
    if hit is None:
        return False, REVIEW, "not a file of any installed package"
    md5, pkg = hit
    try:
        now, sha = _md5_sha256(path)
    except OSError as exc:
        return False, REVIEW, f"cannot read: {exc.strerror}"
    if sha != digest:  # the package check must be about the content the model gets
        return False, REVIEW, "changed while it was checked"
    if now != md5:
        return False, REVIEW, f"differs from package {pkg}'s checksum"
    return True, ACCEPTED, f"matches package {pkg}"
