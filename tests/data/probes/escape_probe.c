#include <stdio.h>
#include <errno.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
int main(void) {
    struct sock_filter allow[] = { BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW) };
    struct sock_fprog prog = { 1, allow };
    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    long rc = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
    printf("listener rc %ld errno %d\n", rc, rc < 0 ? errno : 0);
    rc = syscall(SYS_io_uring_setup, 4, (void *)0);
    printf("io_uring rc %ld errno %d\n", rc, rc < 0 ? errno : 0);
    rc = syscall(SYS_userfaultfd, 0);
    printf("userfaultfd rc %ld errno %d\n", rc, rc < 0 ? errno : 0);
    return 0;
}
