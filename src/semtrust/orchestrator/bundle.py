"""OCI bundles: validate, copy the rootfs onto a mount of its own, rewrite config.json.

Why a copy on its own mount: fanotify marks a whole filesystem (``FAN_MARK_FILESYSTEM``);
a tmpfs that holds only this container's root is the smallest filesystem that sees every
open and exec of the container and nothing of the host.  The bundle on disk is never
modified: the orchestrator writes its own ``config.json`` next to the copy.

Determinism: the copy keeps owners, modes and contents (``cp -a``); tmpfs reports
``s_id = "tmpfs"`` and its random UUID is replaced by zeros in the coefficient (spec 2.4.1,
TMPFS_MAGIC rule); paths are container-relative.  Nothing random enters a coefficient.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import ctypes.util
import json
import os
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from semtrust.errors import InputError

#: Largest config.json we read (bounded input).
MAX_CONFIG_BYTES = 4 * 1024 * 1024

ANNOTATION_MODEL = "io.semtrust.model"
ANNOTATION_ENFORCE = "io.semtrust.enforce"
ANNOTATION_OUTPUT = "io.semtrust.output"
ANNOTATION_NAME = "io.semtrust.name"
ANNOTATION_KEY = "io.semtrust.key"

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
MNT_DETACH = 2


@dataclass(frozen=True)
class Bundle:
    """A validated OCI bundle: its directory, parsed config and host rootfs path."""

    path: Path
    config: dict[str, Any]
    rootfs: Path

    @property
    def annotations(self) -> dict[str, str]:
        """The config's annotations (empty when absent)."""
        ann = self.config.get("annotations") or {}
        return {str(k): str(v) for k, v in ann.items()}


def _need(cond: bool, msg: str, source: str, field: str) -> None:
    if not cond:
        raise InputError(msg, source=source, field=field)


def validate_config(cfg: Any, source: str, *, need_args: bool = True) -> None:
    """Check the parts of an OCI runtime config that semtrust and runc rely on."""
    _need(isinstance(cfg, dict), "not a JSON object", source, "config")
    _need(isinstance(cfg.get("ociVersion"), str), "missing or not a string", source, "ociVersion")
    root = cfg.get("root")
    _need(isinstance(root, dict) and isinstance(root.get("path"), str) and bool(root["path"]),
          "missing root.path", source, "root.path")
    proc = cfg.get("process")
    _need(isinstance(proc, dict), "missing or not an object", source, "process")
    args = proc.get("args")
    if args is not None or need_args:
        _need(isinstance(args, list) and all(isinstance(a, str) for a in args),
              "must be a list of strings", source, "process.args")
        if need_args:
            _need(bool(args), "must not be empty", source, "process.args")
    cwd = proc.get("cwd")
    _need(isinstance(cwd, str) and cwd.startswith("/"), "must be an absolute path", source,
          "process.cwd")
    linux = cfg.get("linux", {})
    _need(isinstance(linux, dict), "not an object", source, "linux")
    ann = cfg.get("annotations", {})
    _need(isinstance(ann, dict) and all(isinstance(v, str) for v in ann.values()),
          "must map strings to strings", source, "annotations")
    mounts = cfg.get("mounts", [])
    _need(isinstance(mounts, list) and all(isinstance(m, dict) for m in mounts),
          "must be a list of objects", source, "mounts")
    sec = linux.get("seccomp")
    if sec is not None:
        _need(isinstance(sec, dict) and isinstance(sec.get("defaultAction"), str),
              "needs defaultAction", source, "linux.seccomp")


def load_bundle(path: str | os.PathLike[str], *, need_args: bool = True) -> Bundle:
    """Read and validate ``DIR/config.json`` and ``DIR/<root.path>``; InputError if bad."""
    bdir = Path(path)
    if not bdir.is_dir():
        raise InputError("bundle directory not found", source=str(bdir))
    cfg_path = bdir / "config.json"
    src = str(cfg_path)
    try:
        with open(cfg_path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise InputError("missing (not an OCI bundle)", source=src) from None
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", source=src) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise InputError(f"larger than {MAX_CONFIG_BYTES} bytes", source=src)
    try:
        cfg = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        line = getattr(exc, "lineno", None)
        raise InputError(f"not valid JSON: {getattr(exc, 'msg', exc)}", source=src,
                         line=line) from None
    validate_config(cfg, src, need_args=need_args)
    rootfs = Path(cfg["root"]["path"])
    if not rootfs.is_absolute():
        rootfs = bdir.resolve() / rootfs
    if not rootfs.is_dir():
        raise InputError(f"root filesystem {rootfs} is not a directory", source=src,
                         field="root.path")
    return Bundle(path=bdir.resolve(), config=cfg, rootfs=rootfs)


# --- seccomp profile -------------------------------------------------------------------

_ALLOW = "SCMP_ACT_ALLOW"
_NOTIFY = "SCMP_ACT_NOTIFY"


def inject_seccomp_notify(profile: dict[str, Any] | None, syscalls: Iterable[str],
                          listener_path: str) -> dict[str, Any]:
    """Return a seccomp profile where ``syscalls`` go to the listener instead of running.

    Notification only narrows what the existing profile allows: a syscall the profile
    allows (unconditionally or under argument conditions) is notified under the same
    conditions; a syscall the profile denies stays denied.  With no profile, the default
    action is ALLOW and ``syscalls`` are notified.
    """
    wanted = list(dict.fromkeys(syscalls))
    if profile is None:
        return {
            "defaultAction": _ALLOW,
            "listenerPath": listener_path,
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [{"names": wanted, "action": _NOTIFY}],
        }
    prof = copy.deepcopy(profile)
    rules: list[dict[str, Any]] = list(prof.get("syscalls") or [])
    mentioned: set[str] = set()
    out: list[dict[str, Any]] = []
    for rule in rules:
        names = [str(n) for n in rule.get("names") or []]
        hit = [n for n in names if n in wanted]
        mentioned.update(hit)
        if not hit or rule.get("action") != _ALLOW:
            out.append(rule)
            continue
        rest = [n for n in names if n not in wanted]
        if rest:
            keep = dict(rule)
            keep["names"] = rest
            out.append(keep)
        notify = dict(rule)
        notify["names"] = hit
        notify["action"] = _NOTIFY
        notify.pop("errnoRet", None)
        out.append(notify)
    if prof.get("defaultAction") == _ALLOW:
        extra = [n for n in wanted if n not in mentioned]
        if extra:
            out.append({"names": extra, "action": _NOTIFY})
    prof["syscalls"] = out
    prof["listenerPath"] = listener_path
    return prof


def runtime_config(
    bundle: Bundle,
    *,
    rootfs: str,
    listener_path: str,
    notify_syscalls: Sequence[str],
    cgroups_path: str | None = None,
    args: Sequence[str] | None = None,
    terminal: bool | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The config.json runc gets: the bundle's config plus mediation, never the original."""
    cfg = copy.deepcopy(bundle.config)
    cfg["root"] = dict(cfg["root"])
    cfg["root"]["path"] = rootfs
    proc = cfg["process"]
    if args is not None:
        proc["args"] = list(args)
    if terminal is not None:
        proc["terminal"] = terminal
    for m in cfg.get("mounts", []):  # bundle-relative bind sources must survive the move
        src = m.get("source")
        if isinstance(src, str) and src and not src.startswith("/") and (
                m.get("type") == "bind" or "bind" in (m.get("options") or [])
                or "rbind" in (m.get("options") or [])):
            m["source"] = str(bundle.path / src)
    linux = cfg.setdefault("linux", {})
    if cgroups_path is not None:
        linux["cgroupsPath"] = cgroups_path
    linux["seccomp"] = inject_seccomp_notify(linux.get("seccomp"), notify_syscalls,
                                             listener_path)
    if annotations:
        cfg.setdefault("annotations", {}).update(annotations)
    return cfg


def write_config(cfg: dict[str, Any], bundle_dir: Path) -> Path:
    """Write ``cfg`` as ``bundle_dir/config.json`` (mode 0600: it names our sockets)."""
    bundle_dir.mkdir(parents=True, exist_ok=True)
    path = bundle_dir / "config.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(cfg, f, indent=1)
    return path


# --- rootfs on a mount of its own -------------------------------------------------------

def _tree_bytes(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def mount_tmpfs(target: Path, size_bytes: int) -> None:
    """Mount a size-bounded tmpfs on ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    opts = f"size={size_bytes},mode=0755".encode()
    if _libc.mount(b"tmpfs", os.fsencode(target), b"tmpfs", 0, opts) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount tmpfs on {target}: {os.strerror(err)}")


def umount(target: Path) -> None:
    """Lazily unmount ``target`` (ignores 'not mounted')."""
    _libc.umount2(os.fsencode(target), MNT_DETACH)


def copy_rootfs(src: Path, dest: Path) -> None:
    """Copy ``src`` onto a fresh tmpfs at ``dest``, keeping owners, modes and links."""
    size = max(64 << 20, 2 * _tree_bytes(src) + (16 << 20))
    mount_tmpfs(dest, size)
    try:
        cp = shutil.which("cp") or "/bin/cp"
        subprocess.run([cp, "-a", "--", f"{src}/.", str(dest)], check=True,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE)
    except subprocess.CalledProcessError as exc:
        umount(dest)
        msg = exc.stderr.decode(errors="replace").strip().splitlines()[:1]
        raise InputError(f"cannot copy rootfs: {msg[0] if msg else exc}", source=str(src)
                         ) from None
    except BaseException:
        umount(dest)
        raise


def is_own_filesystem(path: Path) -> bool:
    """True when ``path`` is the root of a filesystem that nothing of the host shares.

    Used by the OCI wrapper: an engine's overlay rootfs (one superblock per container)
    can be marked in place; a plain directory must be copied to a tmpfs first.
    """
    try:
        st = os.stat(path)
        parent = os.stat(path.parent)
        host = os.stat("/")
    except OSError:
        return False
    if st.st_dev in (parent.st_dev, host.st_dev):
        return False
    fstype = _mount_fstype(path)
    return fstype in {"overlay", "tmpfs"}


def _mount_fstype(path: Path) -> str | None:
    target = os.path.realpath(path)
    found: str | None = None
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[1].replace("\\040", " ") == target:
                    found = parts[2]
    except OSError:
        return None
    return found


# --- a busybox bundle (tests, benchmarks, examples) -------------------------------------

BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")


def find_busybox() -> str | None:
    """A static busybox (Debian busybox-static) or None."""
    for cand in BUSYBOX_CANDIDATES:
        if os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


def build_busybox_bundle(bundle: Path, args: Sequence[str], *,
                         files: dict[str, str] | None = None,
                         busybox: str | None = None) -> Path:
    """Write a minimal ``runc spec``-like bundle with busybox and its applet links.

    ``files`` maps container paths to contents (e.g. ``/etc/hostname``).
    """
    bb = busybox or find_busybox()
    if bb is None:
        raise InputError("busybox not found (Debian package busybox-static)")
    rootfs = bundle / "rootfs"
    for d in ("bin", "proc", "sys", "dev", "tmp", "etc", "root"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    os.chmod(rootfs / "tmp", 0o1777)
    shutil.copy2(bb, rootfs / "bin" / "busybox")
    for applet in ("sh", "cat", "ls", "echo", "true", "false", "sleep", "id", "wc",
                   "head", "touch", "rm", "mkdir", "sha256sum", "find", "grep", "sed",
                   "tar", "gzip", "seq", "kill", "ps", "stat", "cp", "dd"):
        link = rootfs / "bin" / applet
        if not link.is_symlink():
            link.symlink_to("busybox")
    for cpath, text in (files or {}).items():
        dest = rootfs / cpath.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(text)
        os.chmod(dest, 0o644)
    cfg = {
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": list(args),
            "env": ["PATH=/bin", "HOME=/root"],
            "cwd": "/",
            "capabilities": {k: ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
                             for k in ("bounding", "effective", "permitted")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "semtrust",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
        ],
        "linux": {
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/sys/firmware"],
            "readonlyPaths": ["/proc/sys", "/proc/sysrq-trigger"],
        },
    }
    write_config(cfg, bundle)
    os.chmod(bundle / "config.json", 0o644)
    return bundle
