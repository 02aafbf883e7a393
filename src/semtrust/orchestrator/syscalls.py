"""The syscall classification: one table, data, for every x86_64 system call.

Every number the kernel knows is in exactly one class:

* ``inert`` — allowed in the kernel, no round trip: it cannot cause a security event
  (I/O on descriptors that were mediated when opened, the task's own state, clocks).
* ``mediated`` — sent to the mediator, which turns it into a TSEM event (spec §3.3)
  through the handler family named here. ``when`` narrows that to the arguments that
  matter (checked in the filter): when no condition holds the call is inert.
* ``refused`` — sent to the mediator, which records a fault with the call's name and
  arguments and, when enforcing, fails it with ``errno`` (allowed when learning, so a
  model can still be learned). ``in_kernel`` refusals are answered by the filter itself.

A number the table does not name — including numbers of kernels newer than this
table — is refused with ENOSYS. x32 and foreign architectures are killed by the filter.
``why`` says in a few words why an entry is in its class; the README's table is
generated from this module (``scripts/syscall_table.py``).
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

INERT = "inert"
MEDIATED = "mediated"
REFUSED = "refused"

PROT_EXEC = 0x4
READ_IMPLIES_EXEC = 0x0400000
SHM_EXEC = 0o100000
F_SETOWN = 8
F_SETSIG = 10
F_SETOWN_EX = 15
FIOSETOWN = 0x8901
SIOCSPGRP = 0x8902
TIOCSTI = 0x5412
TIOCLINUX = 0x541C
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
#: prctl options that change credentials, what may trace the task, its memory layout
#: description or its seccomp state: task_prctl events. Every other option only
#: touches the calling task's own bookkeeping.
PRCTL_MEDIATED = (
    4,  # PR_SET_DUMPABLE: lets other tasks ptrace/read /proc/PID/mem
    24,  # PR_CAPBSET_DROP
    28,  # PR_SET_SECUREBITS
    35,  # PR_SET_MM: rewrites exe link, argv/env/auxv addresses
    47,  # PR_CAP_AMBIENT
    0x59616D61,  # PR_SET_PTRACER (Yama)
)
#: The highest number this table was written against (Linux 6.18).
MAX_KNOWN_NR = 469


@dataclass(frozen=True, slots=True)
class Cond:
    """A filter condition on one argument (low 32 bits unless ``op`` is ``nonzero64``).

    ``mask``: ``arg & value != 0``; ``eq``: ``arg == value``; ``nonzero64``: the whole
    64-bit argument is not zero.
    """

    arg: int
    op: str
    value: int = 0

    def holds(self, args: tuple[int, ...]) -> bool:
        v = args[self.arg]
        if self.op == "nonzero64":
            return v != 0
        v &= 0xFFFFFFFF
        if self.op == "mask":
            return bool(v & self.value)
        return v == self.value

    def text(self) -> str:
        if self.op == "nonzero64":
            return f"arg{self.arg} != 0"
        if self.op == "mask":
            return f"arg{self.arg} & {self.value:#x}"
        return f"arg{self.arg} == {self.value:#x}"


@dataclass(frozen=True, slots=True)
class Syscall:
    """One row of the table."""

    nr: int
    name: str
    cls: str
    why: str
    family: str = ""  # mediated: handler family (module in orchestrator.handlers)
    event: str = ""  # mediated: the TSEM event type(s) it becomes
    when: tuple[Cond, ...] = ()  # the class applies only if any holds; else inert
    errno: int = 0  # refused: the error when enforcing
    in_kernel: bool = False  # refused by the filter itself (no fault, every mode)
    args: tuple[str, ...] = ()  # generic handlers: names of integer args in the CELL

    def applies(self, args: tuple[int, ...]) -> bool:
        """Would the filter send this call (with these arguments) to the mediator?"""
        return not self.when or any(c.holds(args) for c in self.when)


# x86_64 numbers: arch/x86/entry/syscalls/syscall_64.tbl of Linux 6.18 (the common and
# 64-bit entries; x32 entries are killed by the filter).
_NUMBERS = """
    0 read 1 write 2 open 3 close 4 stat 5 fstat 6 lstat 7 poll 8 lseek 9 mmap 10 mprotect
    11 munmap 12 brk 13 rt_sigaction 14 rt_sigprocmask 15 rt_sigreturn 16 ioctl 17 pread64
    18 pwrite64 19 readv 20 writev 21 access 22 pipe 23 select 24 sched_yield 25 mremap
    26 msync 27 mincore 28 madvise 29 shmget 30 shmat 31 shmctl 32 dup 33 dup2 34 pause
    35 nanosleep 36 getitimer 37 alarm 38 setitimer 39 getpid 40 sendfile 41 socket
    42 connect 43 accept 44 sendto 45 recvfrom 46 sendmsg 47 recvmsg 48 shutdown 49 bind
    50 listen 51 getsockname 52 getpeername 53 socketpair 54 setsockopt 55 getsockopt
    56 clone 57 fork 58 vfork 59 execve 60 exit 61 wait4 62 kill 63 uname 64 semget 65 semop
    66 semctl 67 shmdt 68 msgget 69 msgsnd 70 msgrcv 71 msgctl 72 fcntl 73 flock 74 fsync
    75 fdatasync 76 truncate 77 ftruncate 78 getdents 79 getcwd 80 chdir 81 fchdir 82 rename
    83 mkdir 84 rmdir 85 creat 86 link 87 unlink 88 symlink 89 readlink 90 chmod 91 fchmod
    92 chown 93 fchown 94 lchown 95 umask 96 gettimeofday 97 getrlimit 98 getrusage
    99 sysinfo 100 times 101 ptrace 102 getuid 103 syslog 104 getgid 105 setuid 106 setgid
    107 geteuid 108 getegid 109 setpgid 110 getppid 111 getpgrp 112 setsid 113 setreuid
    114 setregid 115 getgroups 116 setgroups 117 setresuid 118 getresuid 119 setresgid
    120 getresgid 121 getpgid 122 setfsuid 123 setfsgid 124 getsid 125 capget 126 capset
    127 rt_sigpending 128 rt_sigtimedwait 129 rt_sigqueueinfo 130 rt_sigsuspend
    131 sigaltstack 132 utime 133 mknod 134 uselib 135 personality 136 ustat 137 statfs
    138 fstatfs 139 sysfs 140 getpriority 141 setpriority 142 sched_setparam
    143 sched_getparam 144 sched_setscheduler 145 sched_getscheduler
    146 sched_get_priority_max 147 sched_get_priority_min 148 sched_rr_get_interval
    149 mlock 150 munlock 151 mlockall 152 munlockall 153 vhangup 154 modify_ldt
    155 pivot_root 156 _sysctl 157 prctl 158 arch_prctl 159 adjtimex 160 setrlimit
    161 chroot 162 sync 163 acct 164 settimeofday 165 mount 166 umount2 167 swapon
    168 swapoff 169 reboot 170 sethostname 171 setdomainname 172 iopl 173 ioperm
    174 create_module 175 init_module 176 delete_module 177 get_kernel_syms 178 query_module
    179 quotactl 180 nfsservctl 181 getpmsg 182 putpmsg 183 afs_syscall 184 tuxcall
    185 security 186 gettid 187 readahead 188 setxattr 189 lsetxattr 190 fsetxattr
    191 getxattr 192 lgetxattr 193 fgetxattr 194 listxattr 195 llistxattr 196 flistxattr
    197 removexattr 198 lremovexattr 199 fremovexattr 200 tkill 201 time 202 futex
    203 sched_setaffinity 204 sched_getaffinity 205 set_thread_area 206 io_setup
    207 io_destroy 208 io_getevents 209 io_submit 210 io_cancel 211 get_thread_area
    212 lookup_dcookie 213 epoll_create 214 epoll_ctl_old 215 epoll_wait_old
    216 remap_file_pages 217 getdents64 218 set_tid_address 219 restart_syscall
    220 semtimedop 221 fadvise64 222 timer_create 223 timer_settime 224 timer_gettime
    225 timer_getoverrun 226 timer_delete 227 clock_settime 228 clock_gettime
    229 clock_getres 230 clock_nanosleep 231 exit_group 232 epoll_wait 233 epoll_ctl
    234 tgkill 235 utimes 236 vserver 237 mbind 238 set_mempolicy 239 get_mempolicy
    240 mq_open 241 mq_unlink 242 mq_timedsend 243 mq_timedreceive 244 mq_notify
    245 mq_getsetattr 246 kexec_load 247 waitid 248 add_key 249 request_key 250 keyctl
    251 ioprio_set 252 ioprio_get 253 inotify_init 254 inotify_add_watch
    255 inotify_rm_watch 256 migrate_pages 257 openat 258 mkdirat 259 mknodat 260 fchownat
    261 futimesat 262 newfstatat 263 unlinkat 264 renameat 265 linkat 266 symlinkat
    267 readlinkat 268 fchmodat 269 faccessat 270 pselect6 271 ppoll 272 unshare
    273 set_robust_list 274 get_robust_list 275 splice 276 tee 277 sync_file_range
    278 vmsplice 279 move_pages 280 utimensat 281 epoll_pwait 282 signalfd
    283 timerfd_create 284 eventfd 285 fallocate 286 timerfd_settime 287 timerfd_gettime
    288 accept4 289 signalfd4 290 eventfd2 291 epoll_create1 292 dup3 293 pipe2
    294 inotify_init1 295 preadv 296 pwritev 297 rt_tgsigqueueinfo 298 perf_event_open
    299 recvmmsg 300 fanotify_init 301 fanotify_mark 302 prlimit64 303 name_to_handle_at
    304 open_by_handle_at 305 clock_adjtime 306 syncfs 307 sendmmsg 308 setns 309 getcpu
    310 process_vm_readv 311 process_vm_writev 312 kcmp 313 finit_module 314 sched_setattr
    315 sched_getattr 316 renameat2 317 seccomp 318 getrandom 319 memfd_create
    320 kexec_file_load 321 bpf 322 execveat 323 userfaultfd 324 membarrier 325 mlock2
    326 copy_file_range 327 preadv2 328 pwritev2 329 pkey_mprotect 330 pkey_alloc
    331 pkey_free 332 statx 333 io_pgetevents 334 rseq 335 uretprobe 424 pidfd_send_signal
    425 io_uring_setup 426 io_uring_enter 427 io_uring_register 428 open_tree 429 move_mount
    430 fsopen 431 fsconfig 432 fsmount 433 fspick 434 pidfd_open 435 clone3 436 close_range
    437 openat2 438 pidfd_getfd 439 faccessat2 440 process_madvise 441 epoll_pwait2
    442 mount_setattr 443 quotactl_fd 444 landlock_create_ruleset 445 landlock_add_rule
    446 landlock_restrict_self 447 memfd_secret 448 process_mrelease 449 futex_waitv
    450 set_mempolicy_home_node 451 cachestat 452 fchmodat2 453 map_shadow_stack
    454 futex_wake 455 futex_wait 456 futex_requeue 457 statmount 458 listmount
    459 lsm_get_self_attr 460 lsm_set_self_attr 461 lsm_list_modules 462 mseal
    463 setxattrat 464 getxattrat 465 listxattrat 466 removexattrat 467 open_tree_attr
    468 file_getattr 469 file_setattr
"""

NUMBERS: dict[str, int] = {}
for _i, _tok in enumerate(_toks := _NUMBERS.split()):
    if _i % 2 == 0:
        NUMBERS[_toks[_i + 1]] = int(_tok)

_ROWS: list[tuple[str, dict[str, object]]] = []


def _row(names: str, cls: str, why: str, **kw: object) -> None:
    for name in names.split():
        _ROWS.append((name, {"cls": cls, "why": why, **kw}))


def _inert(names: str, why: str) -> None:
    _row(names, INERT, why)


def _mediated(names: str, family: str, event: str, why: str, **kw: object) -> None:
    _row(names, MEDIATED, why, family=family, event=event, **kw)


def _refused(names: str, err: int, why: str, **kw: object) -> None:
    _row(names, REFUSED, why, errno=err, **kw)


# ----------------------------------------------------------------------- inert
_inert("read write readv writev pread64 pwrite64 preadv pwritev preadv2 pwritev2 lseek "
       "sendfile splice tee vmsplice copy_file_range fsync fdatasync sync_file_range "
       "fallocate ftruncate readahead fadvise64 flock",
       "I/O on an open descriptor; access was mediated when it was opened")
_inert("close close_range dup dup2 dup3 pipe pipe2",
       "descriptor table of the task itself")
_inert("sendmsg sendmmsg",
       "on a mediated socket; a msg_name destination is not modeled (see README limits)")
_inert("recvfrom recvmsg recvmmsg shutdown getsockname getpeername getsockopt setsockopt "
       "socketpair",
       "on a socket that was mediated at socket/connect/bind/accept, or an unnamed pair")
_inert("poll ppoll select pselect6 epoll_create epoll_create1 epoll_ctl epoll_wait "
       "epoll_pwait epoll_pwait2 eventfd eventfd2 signalfd signalfd4 timerfd_create "
       "timerfd_settime timerfd_gettime inotify_init inotify_init1 inotify_add_watch "
       "inotify_rm_watch",
       "waiting and notification objects of the task")
_inert("stat fstat lstat newfstatat statx access faccessat faccessat2 readlink readlinkat "
       "getdents getdents64 getcwd statfs fstatfs ustat sysfs getxattr lgetxattr fgetxattr "
       "listxattr llistxattr flistxattr getxattrat listxattrat file_getattr statmount "
       "listmount name_to_handle_at",
       "reads metadata only (inode_getattr is not modeled: no state changes)")
_inert("chdir fchdir umask",
       "task-local: paths are resolved from the task's cwd and umask at each event")
_inert("brk munmap mremap msync mincore madvise mlock mlock2 munlock mlockall munlockall "
       "mbind set_mempolicy get_mempolicy set_mempolicy_home_node pkey_alloc pkey_free "
       "memfd_create memfd_secret membarrier mseal remap_file_pages cachestat "
       "map_shadow_stack shmdt",
       "the task's own memory; none of these adds execute permission to a mapping")
_inert("rt_sigaction rt_sigprocmask rt_sigreturn rt_sigpending rt_sigtimedwait "
       "rt_sigsuspend sigaltstack pause restart_syscall",
       "signal state of the task itself")
_inert("futex futex_waitv futex_wake futex_wait futex_requeue set_robust_list "
       "set_tid_address rseq sched_yield arch_prctl set_thread_area get_thread_area "
       "uretprobe",
       "thread synchronisation and per-thread state")
_inert("nanosleep clock_nanosleep clock_gettime clock_getres gettimeofday time alarm "
       "getitimer setitimer timer_create timer_settime timer_gettime timer_getoverrun "
       "timer_delete times getrusage getrandom",
       "clocks and timers of the task (timer signals go to the task itself)")
_inert("getpid getppid gettid getuid geteuid getgid getegid getgroups getresuid getresgid "
       "getpgrp getpgid getsid capget getcpu uname sysinfo getrlimit getpriority "
       "sched_getparam sched_getscheduler sched_getattr sched_getaffinity "
       "sched_get_priority_max sched_get_priority_min sched_rr_get_interval ioprio_get "
       "lsm_get_self_attr lsm_list_modules",
       "reads the task's own identity or limits")
_inert("setpgid setsid setrlimit",
       "changes only the task's own process group, session or limits")
_inert("exit exit_group wait4 waitid", "process life cycle of the task and its children")
_inert("pidfd_open process_mrelease",
       "a handle on a process; signals and fd theft through it are mediated")
_inert("io_setup io_destroy io_getevents io_submit io_cancel io_pgetevents",
       "Linux AIO reads/writes descriptors that were mediated when opened")
_inert("mq_timedsend mq_timedreceive mq_getsetattr mq_notify semop semtimedop msgsnd "
       "msgrcv",
       "on an IPC object mediated when it was opened or associated")
_inert("landlock_create_ruleset landlock_add_rule landlock_restrict_self",
       "the task restricts itself further")
_inert("sync syncfs", "flushes caches; no object changes")
# ------------------------------------------------------------------- mediated
# Process life cycle: lineage and the identity it inherits.
_mediated("clone fork vfork clone3", "process", "(lineage only)",
          "fork lineage: the child inherits the task identity of the parent")
_mediated("open openat openat2 creat", "files", "file_open",
          "file_open on the object the task names")
_mediated("execve execveat", "files", "bprm_committed_creds",
          "new program: file_open of the executable and a new task identity")
_mediated("mmap mprotect pkey_mprotect", "memory", "mmap_file",
          "executable memory: only with PROT_EXEC", when=(Cond(2, "mask", PROT_EXEC),))
_mediated("personality", "memory", "mmap_file",
          "READ_IMPLIES_EXEC would make PROT_READ mappings executable without PROT_EXEC: "
          "refused", when=(Cond(0, "mask", READ_IMPLIES_EXEC),))
_mediated("shmat", "memory", "shm_shmat", "executable shared memory: only with SHM_EXEC",
          when=(Cond(2, "mask", SHM_EXEC),))
_mediated("socket", "sockets", "socket_create", "new socket")
_mediated("connect bind accept accept4 listen", "sockets",
          "socket_connect/socket_bind/socket_accept/socket_listen", "names a peer or address")
_mediated("sendto", "sockets", "socket_connect",
          "a destination address on an unconnected socket connects without connect()",
          when=(Cond(4, "nonzero64"),))
_mediated("kill tkill tgkill rt_sigqueueinfo rt_tgsigqueueinfo pidfd_send_signal",
          "signals", "task_kill", "a signal to another task")
_mediated("fcntl", "signals", "file_fcntl",
          "F_SETOWN/F_SETOWN_EX/F_SETSIG pick who SIGIO kills; other commands are inert",
          when=(Cond(1, "eq", F_SETOWN), Cond(1, "eq", F_SETOWN_EX), Cond(1, "eq", F_SETSIG)),
          args=("_", "cmd"))
_mediated("ioctl", "signals", "file_ioctl",
          "FIOSETOWN/SIOCSPGRP set the SIGIO owner, TIOCSTI/TIOCLINUX inject terminal "
          "input; other commands act on the open file only",
          when=(Cond(1, "eq", FIOSETOWN), Cond(1, "eq", SIOCSPGRP), Cond(1, "eq", TIOCSTI),
                Cond(1, "eq", TIOCLINUX)),
          args=("_", "cmd"))
_mediated("ptrace process_vm_readv process_vm_writev pidfd_getfd kcmp process_madvise",
          "process", "ptrace_traceme/ptrace_access_check",
          "reaches into another task's memory or descriptors")
_mediated("migrate_pages move_pages get_robust_list", "process", "ptrace_access_check",
          "acts on another task when the pid is not 0", when=(Cond(0, "nonzero64"),))
_mediated("prctl", "process", "task_prctl",
          "options that change credentials, dumpability, tracer or exe link",
          when=tuple(Cond(0, "eq", o) for o in PRCTL_MEDIATED), args=("option",))
_mediated("setpriority ioprio_set", "process", "task_setnice/task_setioprio",
          "priority of another task when the target is not the caller",
          when=(Cond(1, "nonzero64"),), args=("which",))
_mediated("sched_setparam sched_setscheduler sched_setattr sched_setaffinity prlimit64",
          "process", "task_setscheduler/task_prlimit",
          "scheduling or limits of another task when the pid is not 0",
          when=(Cond(0, "nonzero64"),))
_mediated("setuid setgid setreuid setregid setresuid setresgid setfsuid setfsgid setgroups "
          "capset", "creds", "capable/capset", "credential changes")
_mediated("unlink unlinkat rmdir", "inodes", "inode_unlink/inode_rmdir", "removes a name")
_mediated("link linkat", "inodes", "inode_link", "a new name for an existing file")
_mediated("symlink symlinkat", "inodes", "inode_symlink", "a new symbolic link")
_mediated("mknod mknodat", "inodes", "inode_mknod", "device nodes, FIFOs and sockets")
_mediated("chmod fchmod fchmodat fchmodat2 chown fchown lchown fchownat truncate utime "
          "utimes futimesat utimensat file_setattr",
          "inodes", "inode_setattr", "changes mode, owner, size, times or inode flags")
_mediated("setxattr lsetxattr fsetxattr setxattrat", "inodes", "inode_setxattr",
          "extended attributes (security.*, capabilities)")
_mediated("removexattr lremovexattr fremovexattr removexattrat", "inodes",
          "inode_removexattr", "extended attributes (security.*, capabilities)")
_mediated("mkdir mkdirat rename renameat renameat2", "create", "inode_mkdir/inode_rename",
          "new directories and names")
_mediated("mount", "mounts", "sb_mount/sb_remount", "attaches or changes a filesystem")
_mediated("umount2", "mounts", "sb_umount", "detaches a filesystem")
_mediated("pivot_root", "mounts", "sb_pivotroot", "changes the root of the mount namespace")
_mediated("move_mount", "mounts", "move_mount", "attaches a detached mount")
_mediated("fsopen fsconfig fsmount fspick mount_setattr open_tree_attr", "mounts",
          "sb_mount/sb_remount", "the new mount API")
_mediated("open_tree", "mounts", "file_open/sb_mount",
          "an O_PATH descriptor (file_open) or, with OPEN_TREE_CLONE, a mount copy")
_mediated("chroot", "mounts", "capable", "CAP_SYS_CHROOT: changes path resolution")
_mediated("unshare setns", "mounts", "capable",
          "new or joined namespaces (mounts, pids, users)")
_mediated("shmget semget", "ipc", "shm_associate/sem_associate",
          "associates a System V IPC object", args=("key", "_", "flags"))
_mediated("msgget", "ipc", "msg_queue_associate", "associates a System V IPC object",
          args=("key", "flags"))
_mediated("shmctl msgctl", "ipc", "shm_shmctl/msg_queue_msgctl",
          "controls a System V IPC object", args=("_", "cmd"))
_mediated("semctl", "ipc", "sem_semctl", "controls a System V IPC object",
          args=("_", "_", "cmd"))
_mediated("mq_open mq_unlink", "ipc", "msg_queue_associate/inode_unlink",
          "opens or removes a POSIX message queue by name")
_mediated("syslog", "system", "syslog", "reads or clears the kernel log", args=("type",))
_mediated("settimeofday clock_settime clock_adjtime adjtimex", "system", "settime",
          "sets the system clock")
_mediated("quotactl", "system", "quotactl", "disk quotas", args=("cmd",))
_mediated("quotactl_fd", "system", "quotactl", "disk quotas", args=("_", "cmd"))
_mediated("sethostname setdomainname vhangup", "system", "capable",
          "system identity and terminals (CAP_SYS_ADMIN, CAP_SYS_TTY_CONFIG)")
_mediated("add_key", "system", "key_alloc", "a new key in a kernel keyring")
_mediated("keyctl", "system", "key_permission", "kernel keyrings", args=("cmd",))
_mediated("init_module finit_module", "system", "kernel_load_data/kernel_read_file",
          "loads kernel code")
_mediated("delete_module", "system", "capable", "CAP_SYS_MODULE: removes kernel code")
# -------------------------------------------------------------------- refused
_refused("seccomp", errno.EPERM,
         "a second listener inside the domain could answer its own calls",
         in_kernel=True, when=(Cond(1, "mask", SECCOMP_FILTER_FLAG_NEW_LISTENER),))
_refused("userfaultfd", errno.EPERM,
         "page faults under task control could stall the mediator's reads of task memory",
         in_kernel=True)
_refused("io_uring_setup io_uring_enter io_uring_register", errno.ENOSYS,
         "io_uring opens, connects and sends without system calls", in_kernel=True)
_refused("open_by_handle_at", errno.EPERM,
         "opens a file by handle: no path to model, bypasses path resolution")
_refused("uselib", errno.ENOSYS, "legacy a.out library loader maps code without mmap")
_refused("kexec_load kexec_file_load", errno.EPERM, "replaces the running kernel")
_refused("bpf", errno.EPERM,
         "BPF programs run in the kernel outside any model and can read any memory")
_refused("perf_event_open", errno.EPERM,
         "system-wide observation and BPF attachment points")
_refused("fanotify_init fanotify_mark", errno.EPERM,
         "permission events could hold the mediator's own file accesses")
_refused("iopl ioperm", errno.EPERM, "raw port I/O reaches hardware directly")
_refused("modify_ldt", errno.ENOSYS, "legacy segment descriptors: kernel attack surface")
_refused("swapon swapoff", errno.EPERM, "system memory can be paged to a file the task reads")
_refused("reboot", errno.EPERM, "stops the machine the orchestrator runs on")
_refused("acct", errno.EPERM, "process accounting writes records for every process")
_refused("request_key", errno.EPERM,
         "may run a key upcall helper as root outside the domain")
_refused("lsm_set_self_attr", errno.EPERM,
         "changes the task's LSM label; no TSEM event describes it")
_refused("lookup_dcookie", errno.ENOSYS, "removed from Linux")
_refused("nfsservctl create_module get_kernel_syms query_module _sysctl getpmsg putpmsg "
         "afs_syscall tuxcall security vserver epoll_ctl_old epoll_wait_old",
         errno.ENOSYS, "not implemented by Linux")


def _build() -> tuple[dict[str, Syscall], dict[int, Syscall]]:
    by_name: dict[str, Syscall] = {}
    for name, kw in _ROWS:
        if name not in NUMBERS:
            raise ValueError(f"syscall table: unknown syscall {name!r}")
        if name in by_name:
            raise ValueError(f"syscall table: {name!r} classified twice")
        by_name[name] = Syscall(nr=NUMBERS[name], name=name, **kw)  # type: ignore[arg-type]
    missing = sorted(set(NUMBERS) - set(by_name))
    if missing:
        raise ValueError(f"syscall table: unclassified {missing}")
    return by_name, {s.nr: s for s in by_name.values()}


#: name -> entry and number -> entry for every x86_64 syscall of Linux up to MAX_KNOWN_NR.
BY_NAME, BY_NR = _build()
#: A number the table does not name.
UNKNOWN_ERRNO = errno.ENOSYS


def lookup(nr: int) -> Syscall | None:
    return BY_NR.get(nr)


def name_of(nr: int) -> str:
    s = BY_NR.get(nr)
    return s.name if s is not None else f"syscall_{nr}"


def notified(*, exclude: frozenset[str] = frozenset()) -> list[Syscall]:
    """Entries whose calls reach the mediator (mediated and refused-by-mediator)."""
    return [s for s in BY_NR.values()
            if s.name not in exclude and (s.cls == MEDIATED or (s.cls == REFUSED
                                                                and not s.in_kernel))]


README_BEGIN = "<!-- syscall-table:begin (generated by scripts/syscall_table.py) -->"
README_END = "<!-- syscall-table:end -->"


def markdown_table() -> str:
    """The README's table: one row per syscall, in number order."""
    lines = ["| nr | syscall | class | family: event | filter | why |",
             "|---:|---|---|---|---|---|"]
    for e in sorted(BY_NR.values(), key=lambda s: s.nr):
        fam = f"{e.family}: `{e.event}`" if e.cls == MEDIATED else ""
        filt = " or ".join(c.text() for c in e.when)
        if e.cls == REFUSED:
            err = errno.errorcode.get(e.errno, str(e.errno))
            filt = (f"{filt} → " if filt else "") + \
                (f"{err} in the kernel" if e.in_kernel else f"{err} when enforcing")
        lines.append(f"| {e.nr} | `{e.name}` | {e.cls} | {fam} | {filt} | {e.why} |")
    lines.append(f"| other | any number above {MAX_KNOWN_NR} or unnamed | refused | | "
                 f"{errno.errorcode[UNKNOWN_ERRNO]} when enforcing | unknown to this table |")
    return "\n".join(lines) + "\n"


def readme_section(readme: str) -> str:
    """``readme`` with the text between the table markers replaced by the table."""
    i = readme.index(README_BEGIN) + len(README_BEGIN)
    j = readme.index(README_END)
    return readme[:i] + "\n\n" + markdown_table() + "\n" + readme[j:]


def oci_rules(*, exclude: frozenset[str] = frozenset()) -> list[dict[str, object]]:
    """The table as OCI (runc) seccomp rules, for a profile whose default is ALLOW.

    Mediated and mediator-refused entries become ``SCMP_ACT_NOTIFY`` rules (one per
    condition: libseccomp ORs rules of one syscall), in-kernel refusals
    ``SCMP_ACT_ERRNO``. Every mask in the table is a single bit, so "bit set" is
    ``MASKED_EQ(mask, mask)``. Numbers the table does not name need a default action
    other than ALLOW; that is the container profile's choice.
    """
    rules: list[dict[str, object]] = []
    for e in sorted(BY_NR.values(), key=lambda s: s.nr):
        if e.name in exclude or e.cls == INERT:
            continue
        if e.cls == REFUSED and e.in_kernel:
            base: dict[str, object] = {"names": [e.name], "action": "SCMP_ACT_ERRNO",
                                       "errnoRet": e.errno}
        else:
            base = {"names": [e.name], "action": "SCMP_ACT_NOTIFY"}
        if not e.when:
            rules.append(base)
        for c in e.when:
            if c.op == "mask":
                arg = {"index": c.arg, "value": c.value, "valueTwo": c.value,
                       "op": "SCMP_CMP_MASKED_EQ"}
            elif c.op == "eq":
                arg = {"index": c.arg, "value": c.value, "op": "SCMP_CMP_EQ"}
            else:
                arg = {"index": c.arg, "value": 0, "op": "SCMP_CMP_NE"}
            rules.append({**base, "args": [arg]})
    return rules
