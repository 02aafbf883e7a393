"""File facts from an open file descriptor, as TSEM binds them.

Everything is read from the fd the caller holds (never re-resolved by path), so
the facts describe exactly the object that was opened: inode owner and mode,
the superblock's ``s_magic``, ``s_id`` and ``s_uuid`` (``FS_IOC_GETFSUUID``) and
the SHA-256 of the content, hashed with ``pread`` so a shared file offset is
never moved. Digests are cached by (device, inode, size, mtime, ctime).

Hashing is bounded: a file larger than ``SEMTRUST_MAX_HASH_BYTES`` (default 1 GiB)
or taking longer than ``SEMTRUST_HASH_SECONDS`` (default 120) is not hashed (the
caller makes its event unmodelable), and hashing stops when ``cancel`` is set
(e.g. on SIGTERM). With ``async_over`` set, files larger than that are hashed
on a worker thread: ``digest`` raises :class:`DigestPending` and the caller
retries once the job's wakeup descriptor is readable, so one large file does
not hold up every other decision.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import os
import stat
import struct
import threading
import time
from dataclasses import dataclass, field

from semtrust.events import FileDesc, Inode, PathName

_libc = ctypes.CDLL(None, use_errno=True)
_libc.ioctl.restype = ctypes.c_int
_libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
_libc.fstatfs.restype = ctypes.c_int
_libc.fstatfs.argtypes = [ctypes.c_int, ctypes.c_void_p]

FS_IOC_GETFSUUID = 0x80111500
EMPTY_DIGEST = hashlib.sha256(b"").digest()
TMPFS_MAGIC = 0x01021994
PROC_SUPER_MAGIC = 0x9FA0

# Filesystems whose content is synthesized by the kernel: TSEM reports the
# zero-length digest for them instead of hashing.
PSEUDO_MAGICS = frozenset({
    PROC_SUPER_MAGIC, 0x62656572, 0x1CD1, 0x27E0EB, 0x63677270, 0x73636673, 0x64626720,
    0x74726163, 0xCAFE4A11, 0x50495045, 0x534F434B, 0x6E736673, 0x09041934, 0x42494E4D,
    0x858458F6, 0x19800202, 0xDEADBEEF, 0x68191122,
})

_DIGEST_CHUNK = 1 << 20
MAX_DIGEST_CACHE = 65536
MAX_FS_CACHE = 4096
MAX_HASH_JOBS = 4  # files hashed at once on worker threads
MAX_WAITING = 256  # decisions waiting for worker threads


def _env_int(name: str, default: int) -> int:
    try:
        v = int(os.environ.get(name, ""))
    except ValueError:
        return default
    return v if v > 0 else default


MAX_HASH_BYTES = _env_int("SEMTRUST_MAX_HASH_BYTES", 1 << 30)
HASH_SECONDS = _env_int("SEMTRUST_HASH_SECONDS", 120)


class DigestPending(Exception):
    """The digest is being computed on a worker thread; retry after ``FileInfo.wakeup``."""


@dataclass(slots=True)
class _Job:
    thread: threading.Thread | None = None
    digest: bytes | None = None
    error: OSError | None = None
    done: bool = False
    waiters: int = field(default=0)


@dataclass(frozen=True, slots=True)
class FsInfo:
    """Superblock facts shared by every inode of one device."""

    magic: int
    s_id: str
    uuid: bytes


def _mount_sources() -> dict[int, tuple[str, str]]:
    """st_dev -> (fstype, source) from /proc/self/mountinfo."""
    out: dict[int, tuple[str, str]] = {}
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as fp:
            for line in fp:
                left, _, right = line.partition(" - ")
                fields = left.split()
                rest = right.split()
                if len(fields) < 3 or len(rest) < 2:
                    continue
                major, _, minor = fields[2].partition(":")
                try:
                    dev = os.makedev(int(major), int(minor))
                except ValueError:
                    continue
                out.setdefault(dev, (rest[0], rest[1]))
    except OSError:
        pass
    return out


def _hash_fd(fd: int, cancel: threading.Event | None = None, limit: int = MAX_HASH_BYTES,
             seconds: float = HASH_SECONDS, size: int = -1) -> bytes:
    if 0 <= size < _DIGEST_CHUNK:
        # Most files are small: one read to the end (a byte more proves it is the end).
        data = os.pread(fd, size + 1, 0)
        if len(data) <= size:
            return hashlib.sha256(data).digest()
    h = hashlib.sha256()
    off = 0
    end = time.monotonic() + seconds
    while True:
        if cancel is not None and cancel.is_set():
            raise OSError(errno.EINTR, "hashing interrupted")
        if off > limit:
            raise OSError(errno.EFBIG, f"file larger than {limit} bytes, not hashed")
        if time.monotonic() > end:
            raise OSError(errno.ETIMEDOUT, f"hashing took over {seconds} s")
        chunk = os.pread(fd, _DIGEST_CHUNK, off)
        if not chunk:
            return h.digest()
        h.update(chunk)
        off += len(chunk)


def _hash_object(fd: int, cancel: threading.Event | None, limit: int, size: int = -1
                 ) -> bytes:
    """Hash through ``fd`` itself when it is readable: a fanotify event's descriptor must
    not be reopened (the new open would wait for the very decision being made)."""
    try:
        return _hash_fd(fd, cancel, limit, size=size)
    except OSError as e:
        if e.errno != errno.EBADF:
            raise
    # An O_PATH (or write-only) descriptor: reopen the very same object for reading.
    rfd = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        return _hash_fd(rfd, cancel, limit, size=size)
    finally:
        os.close(rfd)


class FileInfo:
    """Caches of superblock facts (per device) and content digests (per inode version)."""

    def __init__(self) -> None:
        self._fs: dict[int, FsInfo] = {}
        self._digests: dict[tuple[int, int, int, int, int], bytes] = {}
        self._mounts: dict[int, tuple[str, str]] | None = None
        self._statfs_buf = ctypes.create_string_buffer(120)
        self._uuid_buf = ctypes.create_string_buffer(17)
        self.cancel: threading.Event | None = None
        self.max_bytes = MAX_HASH_BYTES
        self.async_over: int | None = None
        self._jobs: dict[tuple[int, int, int, int, int], _Job] = {}
        self._failed: dict[tuple[int, int, int, int, int], OSError] = {}
        self._wake_r = self._wake_w = -1
        self.waiting = 0
        # Files a domain process opened for reading and writing: it may map one shared
        # and writable, and change its content with no new time stamps (they move only
        # at the first write fault on a clean page). Their digests are never reused.
        self._volatile: set[tuple[int, int]] = set()
        self._all_volatile = False  # too many to keep: no digest is reused at all

    def note_writable(self, dev: int, ino: int) -> None:
        """A domain process holds ``(dev, ino)`` open for reading and writing."""
        # Digests already kept for it stay where they are: ``digest`` no longer looks.
        if self._all_volatile or (dev, ino) in self._volatile:
            return
        if len(self._volatile) >= MAX_DIGEST_CACHE:
            self._all_volatile = True
            self._volatile.clear()
            self._digests.clear()
            return
        self._volatile.add((dev, ino))

    def is_volatile(self, dev: int, ino: int) -> bool:
        """Must this file's content be hashed again at every description?"""
        return self._all_volatile or (dev, ino) in self._volatile

    @property
    def wakeup(self) -> int:
        """A descriptor that becomes readable when a worker finished a digest."""
        if self._wake_r < 0:
            self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        return self._wake_r

    def drain(self) -> None:
        """Empty the wakeup pipe; finished jobs leave their digest (or error) behind, so a
        job whose waiter went away does not hold a worker slot."""
        with contextlib.suppress(OSError):
            while os.read(self.wakeup, 4096):
                pass
        for key, job in list(self._jobs.items()):
            if not job.done:
                continue
            del self._jobs[key]
            if len(self._digests) >= MAX_DIGEST_CACHE:
                self._digests.clear()
            if len(self._failed) >= MAX_DIGEST_CACHE:
                self._failed.clear()
            if job.digest is not None:
                self._digests[key] = job.digest
            elif job.error is not None:
                self._failed[key] = job.error

    def close(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1

    def fs_info(self, fd: int, dev: int) -> FsInfo:
        """Superblock magic, s_id and UUID of the filesystem ``fd`` lives on."""
        info = self._fs.get(dev)
        if info is not None:
            return info
        magic = 0
        if _libc.fstatfs(fd, ctypes.addressof(self._statfs_buf)) == 0:
            magic = struct.unpack_from("=q", self._statfs_buf.raw, 0)[0] & 0xFFFFFFFF
        uuid = bytes(16)
        ctypes.memset(self._uuid_buf, 0, 17)
        if _libc.ioctl(fd, FS_IOC_GETFSUUID, ctypes.addressof(self._uuid_buf)) == 0:
            n = self._uuid_buf.raw[0]
            uuid = (self._uuid_buf.raw[1:1 + min(n, 16)]).ljust(16, b"\0")
        if self._mounts is None or dev not in self._mounts:
            self._mounts = _mount_sources()
        fstype, source = self._mounts.get(dev, ("", ""))
        s_id = os.path.basename(source) if source.startswith("/dev/") else fstype or "unknown"
        info = FsInfo(magic, s_id[:31], uuid)
        if len(self._fs) >= MAX_FS_CACHE:
            self._fs.clear()
        self._fs[dev] = info
        return info

    def cached_fs(self, dev: int) -> FsInfo | None:
        """The superblock facts already read for ``dev`` (None: not described yet)."""
        return self._fs.get(dev)

    def digest(self, fd: int, st: os.stat_result, magic: int) -> bytes:
        """SHA-256 of a regular file's content; the zero-length digest for anything else."""
        if not stat.S_ISREG(st.st_mode) or magic in PSEUDO_MAGICS:
            return EMPTY_DIGEST
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        volatile = self.is_volatile(st.st_dev, st.st_ino)
        d = None if volatile else self._digests.get(key)
        if d is not None:
            return d
        failed = self._failed.get(key)
        if failed is not None:
            raise OSError(failed.errno, failed.strerror)
        if st.st_size > self.max_bytes:
            raise OSError(errno.EFBIG, f"file of {st.st_size} bytes is larger than "
                                       f"{self.max_bytes} (SEMTRUST_MAX_HASH_BYTES)")
        job = self._jobs.get(key)
        if job is not None or (self.async_over is not None and st.st_size > self.async_over):
            d = self._async(fd, key, job)
        else:
            d = _hash_object(fd, self.cancel, self.max_bytes, st.st_size)
        if volatile:
            return d
        if len(self._digests) >= MAX_DIGEST_CACHE:
            self._digests.clear()
        self._digests[key] = d
        return d

    def _async(self, fd: int, key: tuple[int, int, int, int, int], job: _Job | None) -> bytes:
        if job is not None and job.done:
            del self._jobs[key]
            if job.error is not None:
                raise job.error
            assert job.digest is not None
            return job.digest
        if job is None:
            if len(self._jobs) >= MAX_HASH_JOBS:
                raise OSError(errno.EBUSY, "too many large files being hashed")
            rfd = os.dup(fd)
            job = _Job()
            self.wakeup  # noqa: B018 - creates the pipe the worker writes to
            job.thread = threading.Thread(target=self._work, args=(job, rfd, self._wake_w),
                                          name="semtrust-hash", daemon=True)
            self._jobs[key] = job
            job.thread.start()
        if self.waiting >= MAX_WAITING:
            raise OSError(errno.EBUSY, "too many decisions waiting for digests")
        self.waiting += 1
        raise DigestPending()

    def _work(self, job: _Job, rfd: int, wake: int) -> None:
        try:
            job.digest = _hash_object(rfd, self.cancel, self.max_bytes)
        except OSError as exc:
            job.error = exc
        finally:
            os.close(rfd)
            job.done = True
            with contextlib.suppress(OSError):
                os.write(wake, b"x")

    def describe(
        self,
        fd: int,
        flags: int,
        pathname: str,
        *,
        st: os.stat_result | None = None,
        owner: bytes | None = None,
        instance: int = 1,
        hash_content: bool = True,
        measure_created: bool = False,
    ) -> FileDesc:
        """The TSEM file description of the object open on ``fd``.

        ``owner`` marks an object described relative to a creation in the modeling
        domain (spec §2.4.1 row 9b): only the directory part of ``pathname`` (up to
        the last ``/``), the ``instance`` number and the creator's task identity
        ``owner`` are hashed, so random temporary names never enter a coefficient.
        Its digest is the zero-length one, as TSEM reports for created files, unless
        ``measure_created`` asks for the content (code about to run, or an object
        the domain did not make itself).
        ``fd`` may be an ``O_PATH`` descriptor when ``hash_content`` is False.
        """
        if st is None:
            st = os.fstat(fd)
        fs = self.fs_info(fd, st.st_dev)
        inode = Inode(st.st_uid, st.st_gid, st.st_mode & 0xFFFF, fs.magic, fs.s_id,
                      bytes(16) if fs.magic == TMPFS_MAGIC else fs.uuid)
        if owner is not None:
            if instance < 1 or "/" not in pathname:
                raise ValueError("a creation-relative description needs a directory and "
                                 "an instance number >= 1")
            path = PathName(pathname, instance=instance, owner=owner,
                            dev_major=os.major(st.st_dev), dev_minor=os.minor(st.st_dev))
            digest = self.digest(fd, st, fs.magic) if measure_created and hash_content \
                else EMPTY_DIGEST
        else:
            path = PathName(pathname, dev_major=os.major(st.st_dev),
                            dev_minor=os.minor(st.st_dev))
            digest = self.digest(fd, st, fs.magic) if hash_content else EMPTY_DIGEST
        return FileDesc(flags & 0xFFFFFFFF, inode, path, digest)
