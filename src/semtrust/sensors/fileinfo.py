"""File facts from an open file descriptor, as TSEM binds them.

Everything is read from the fd the caller holds (never re-resolved by path), so
the facts describe exactly the object that was opened: inode owner and mode,
the superblock's ``s_magic``, ``s_id`` and ``s_uuid`` (``FS_IOC_GETFSUUID``) and
the SHA-256 of the content, hashed with ``pread`` so a shared file offset is
never moved. Digests are cached by (device, inode, size, mtime, ctime).
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import stat
import struct
from dataclasses import dataclass

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


def _hash_fd(fd: int) -> bytes:
    h = hashlib.sha256()
    off = 0
    while True:
        chunk = os.pread(fd, _DIGEST_CHUNK, off)
        if not chunk:
            return h.digest()
        h.update(chunk)
        off += len(chunk)


class FileInfo:
    """Caches of superblock facts (per device) and content digests (per inode version)."""

    def __init__(self) -> None:
        self._fs: dict[int, FsInfo] = {}
        self._digests: dict[tuple[int, int, int, int, int], bytes] = {}
        self._mounts: dict[int, tuple[str, str]] | None = None
        self._statfs_buf = ctypes.create_string_buffer(120)
        self._uuid_buf = ctypes.create_string_buffer(17)

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
        self._fs[dev] = info
        return info

    def digest(self, fd: int, st: os.stat_result, magic: int) -> bytes:
        """SHA-256 of a regular file's content; the zero-length digest for anything else."""
        if not stat.S_ISREG(st.st_mode) or magic in PSEUDO_MAGICS:
            return EMPTY_DIGEST
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        d = self._digests.get(key)
        if d is not None:
            return d
        try:
            d = _hash_fd(fd)
        except OSError as e:
            if e.errno != errno.EBADF:
                raise
            # An O_PATH descriptor: reopen the very same object for reading.
            rfd = os.open(f"/proc/self/fd/{fd}",
                          os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
            try:
                d = _hash_fd(rfd)
            finally:
                os.close(rfd)
        if len(self._digests) >= MAX_DIGEST_CACHE:
            self._digests.clear()
        self._digests[key] = d
        return d

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
