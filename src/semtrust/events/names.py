"""Event type names accepted by the reference TMA (spec §3.3 and §3.5.1)."""

from __future__ import annotations

EVENT_NAMES: tuple[str, ...] = (
    "undefined", "bprm_committed_creds", "task_kill", "task_setpgid", "task_getpgid",
    "task_getsid", "task_setnice", "task_setioprio", "task_getioprio", "task_prlimit",
    "task_setrlimit", "task_setscheduler", "task_getscheduler", "task_prctl", "file_open",
    "mmap_file", "file_ioctl", "file_ioctl_compat", "file_lock", "file_fcntl", "file_receive",
    "unix_stream_connect", "unix_may_send", "socket_create", "socket_connect", "socket_bind",
    "socket_accept", "socket_listen", "socket_socketpair", "socket_sendmsg", "socket_recvmsg",
    "socket_getsockname", "socket_getpeername", "socket_setsockopt", "socket_shutdown",
    "ptrace_traceme", "kernel_module_request", "kernel_load_data", "kernel_read_file",
    "sb_mount", "sb_umount", "sb_remount", "sb_pivotroot", "sb_statfs", "move_mount",
    "shm_associate", "shm_shmctl", "shm_shmat", "sem_associate", "sem_semctl", "sem_semop",
    "syslog", "settime", "quotactl", "quota_on", "msg_queue_associate", "msg_queue_msgctl",
    "msg_queue_msgsnd", "msg_queue_msgrcv", "ipc_permission", "key_alloc", "key_permission",
    "netlink_send", "inode_create", "inode_link", "inode_unlink", "inode_symlink",
    "inode_mkdir", "inode_rmdir", "inode_mknod", "inode_rename", "inode_setattr",
    "inode_getattr", "inode_setxattr", "inode_getxattr", "inode_listxattr",
    "inode_removexattr", "inode_killpriv", "tun_dev_create", "tun_dev_attach_queue",
    "tun_dev_attach", "tun_dev_open", "bpf", "bpf_map", "bpf_prog", "ptrace_access_check",
    "capable", "capget", "capset",
)
EVENT_NAME_SET = frozenset(EVENT_NAMES)

#: The seven types with an explicit CELL; everything else is a generic event.
EXPLICIT_CELLS = frozenset(
    {"file_open", "mmap_file", "socket_create", "socket_connect", "socket_bind",
     "socket_accept", "task_kill"}
)

#: Legacy text format (Quixote 1d0dc9f): lookup table; only these eight can be measured.
LEGACY_NAMES: tuple[str, ...] = (
    "undefined", "bprm_set_creds", "generic_event", "task_kill", "task_setpgid",
    "task_getpgid", "task_getsid", "task_setnice", "task_setioprio", "task_getioprio",
    "task_prlimit", "task_setrlimit", "task_setscheduler", "task_getscheduler", "task_prctl",
    "file_open", "mmap_file", "file_ioctl", "file_lock", "file_fcntl", "file_receive",
    "unix_stream_connect", "unix_may_send", "socket_create", "socket_connect", "socket_bind",
    "socket_accept", "socket_listen", "socket_socketpair", "socket_sendmsg", "socket_recvmsg",
    "socket_getsockname", "socket_getpeername", "socket_setsockopt", "socket_shutdown",
    "ptrace_traceme", "kernel_module_request", "kernel_load_data", "kernel_read_file",
    "sb_mount", "sb_umount", "sb_remount", "sb_pivotroot", "sb_statfs", "move_mount",
    "shm_associate", "shm_shmctl", "shm_shmat", "sem_associate", "sem_semctl", "sem_semop",
    "syslog", "settime", "quotactl", "quota_on", "msg_queue_associate", "msg_queue_msgctl",
    "msg_queue_msgsnd", "msg_queue_msgrcv", "ipc_permission", "key_alloc", "key_permission",
    "netlink_send", "inode_create", "inode_link", "inode_unlink", "inode_symlink",
    "inode_mkdir", "inode_rmdir", "inode_mknod", "inode_rename", "inode_setattr",
    "inode_getattr", "inode_setxattr", "inode_getxattr", "inode_listxattr",
    "inode_removexattr", "inode_killpriv", "tun_dev_create", "tun_dev_attach_queue",
    "tun_dev_attach", "tun_dev_open", "bpf", "bpf_map", "bpf_prog",
)
LEGACY_MEASURABLE = frozenset(
    {"generic_event", "task_kill", "file_open", "mmap_file", "socket_create",
     "socket_connect", "socket_bind", "socket_accept"}
)
