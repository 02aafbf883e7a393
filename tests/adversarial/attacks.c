/* Red-team workload: one static program, one attack per mode.
 * "benign-X" does the allowed neighbour of attack X (learned), "X" the attack.
 * Each mode prints what happened; the tests read stdout. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/personality.h>
#include <sys/shm.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SYS_open_tree
#define SYS_open_tree 428
#endif

static void say(const char *fmt, long a, long b) {
    char buf[256];
    int n = snprintf(buf, sizeof buf, fmt, a, b);
    if (write(1, buf, n) < 0) _exit(3);
}

static int maps_has(const char *needle, char perm) {
    char buf[1 << 16];
    int fd = open("/proc/self/maps", O_RDONLY);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return -1;
    buf[n] = 0;
    for (char *l = strtok(buf, "\n"); l; l = strtok(NULL, "\n"))
        if (strstr(l, needle) && strchr(l, ' ') && l[strchr(l, ' ') - l + 3] == perm) return 1;
    return 0;
}

static int pkey(int attack) {
    unsigned char *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    p[0] = 0xC3; /* ret */
    if (!attack) { say("benign\n", 0, 0); return 0; }
    long r = syscall(SYS_pkey_mprotect, p, 4096, PROT_READ | PROT_EXEC, -1);
    say("pkey_mprotect %ld errno %ld\n", r, r ? errno : 0);
    if (r == 0) { ((void (*)(void))p)(); say("EXECUTED\n", 0, 0); }
    return 0;
}

static int persona(int attack) {
    if (attack) {
        int r = personality(READ_IMPLIES_EXEC);
        say("personality %ld errno %ld\n", r, r < 0 ? errno : 0);
    }
    void *p = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    (void)p;
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    int x = 0;
    while (f && fgets(line, sizeof line, f)) {
        unsigned long lo;
        char perm[5];
        if (sscanf(line, "%lx-%*x %4s", &lo, perm) == 2 && (void *)lo == p && perm[2] == 'x') x = 1;
    }
    if (x) say("EXECUTABLE\n", 0, 0);
    say("done\n", 0, 0);
    return 0;
}

static int shm(int attack) {
    int id = shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0600);
    if (id < 0) { say("shmget errno %ld\n", errno, 0); return 0; }
    void *p = shmat(id, NULL, attack ? SHM_EXEC : 0);
    say("shmat %ld errno %ld\n", p == (void *)-1 ? -1 : 0, p == (void *)-1 ? errno : 0);
    if (p != (void *)-1 && attack) say("SHMEXEC\n", 0, 0);
    if (p != (void *)-1) shmdt(p);
    shmctl(id, IPC_RMID, NULL);
    return 0;
}

static int span(int attack) {
    int fd = open("/etc/hostname", O_RDONLY);
    char *p = mmap(NULL, 8192, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    mmap(p, 4096, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 0);
    long r = mprotect(p, attack ? 8192 : 4096, PROT_READ | PROT_EXEC);
    say("mprotect %ld errno %ld\n", r, r ? errno : 0);
    if (r == 0 && attack) say("SPAN_OK\n", 0, 0);
    return 0;
}

static int opentree(const char *path) {
    int fd = syscall(SYS_open_tree, AT_FDCWD, path, 0);
    say("open_tree %ld errno %ld\n", fd, fd < 0 ? errno : 0);
    if (fd < 0) return 0;
    char link[64], buf[128];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    int rfd = open(link, O_RDONLY);
    say("reopen %ld errno %ld\n", rfd, rfd < 0 ? errno : 0);
    if (rfd >= 0) {
        ssize_t n = read(rfd, buf, sizeof buf - 1);
        if (n > 0) { buf[n] = 0; if (write(1, "CONTENT:", 8) < 0 || write(1, buf, n) < 0) return 3; }
    }
    return 0;
}

static int sigio(int attack) {
    int p[2];
    if (pipe(p)) return 2;
    long r = fcntl(p[0], F_SETSIG, attack ? SIGKILL : SIGUSR1);
    say("setsig %ld errno %ld\n", r, r ? errno : 0);
    signal(SIGUSR1, SIG_IGN);
    int targets[2] = {1, 2};
    for (int i = 0; i < (attack ? 2 : 1); i++) {
        int t = attack ? targets[i] : getpid();
        r = fcntl(p[0], F_SETOWN, t);
        say("setown %ld errno %ld\n", t, r ? errno : 0);
        fcntl(p[0], F_SETFL, O_ASYNC | O_NONBLOCK);
        if (write(p[1], "x", 1) != 1) return 2;
        char c;
        if (read(p[0], &c, 1) != 1) return 2;
    }
    struct f_owner_ex ex = {F_OWNER_PID, attack ? 1 : getpid()};
    r = fcntl(p[0], F_SETOWN_EX, &ex);
    say("setown_ex %ld errno %ld\n", r, r ? errno : 0);
    usleep(100000);
    say("done\n", 0, 0);
    return 0;
}

static volatile int stop;
static int race_fd, race_memfd;
static void *swapper(void *arg) {
    (void)arg;
    while (!stop) { dup2(race_memfd, race_fd); }
    return NULL;
}

static int race(const char *self, int attack) {
    if (!attack) {
        int fd = open(self, O_RDONLY);
        void *m = mmap(NULL, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE, fd, 0);
        say("mmap %ld\n", m == MAP_FAILED ? -1 : 0, 0);
        maps_has("memfd:", 'x');
        return 0;
    }
    race_memfd = memfd_create("payload", 0);
    if (ftruncate(race_memfd, 4096)) return 2;
    pthread_t t;
    int won = 0;
    for (int i = 0; i < 3000 && !won; i++) {
        race_fd = open(self, O_RDONLY);
        if (i == 0) pthread_create(&t, NULL, swapper, NULL);
        void *m = mmap(NULL, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE, race_fd, 0);
        if (m != MAP_FAILED) {
            if (maps_has("memfd:", 'x') == 1) won = 1;
            munmap(m, 4096);
        }
        close(race_fd);
    }
    stop = 1;
    if (won) say("RACE_WON\n", 0, 0);
    say("done\n", 0, 0);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    const char *m = argv[1];
    int attack = strncmp(m, "benign-", 7) != 0;
    const char *k = attack ? m : m + 7;
    if (!strcmp(k, "pkey")) return pkey(attack);
    if (!strcmp(k, "personality")) return persona(attack);
    if (!strcmp(k, "shmat")) return shm(attack);
    if (!strcmp(k, "span")) return span(attack);
    if (!strcmp(k, "open_tree")) return opentree(attack ? argv[2] : "/etc/hostname");
    if (!strcmp(k, "sigio")) return sigio(attack);
    if (!strcmp(k, "race")) return race(argv[0], attack);
    if (!strcmp(k, "future")) {
        if (attack) {
            long r = syscall(470, 0, 0);
            say("470 %ld errno %ld\n", r, r < 0 ? errno : 0);
            r = syscall(1000, 0, 0);
            say("1000 %ld errno %ld\n", r, r < 0 ? errno : 0);
        }
        say("done\n", 0, 0);
        return 0;
    }
    if (!strcmp(k, "unlink")) {
        if (attack) {
            int r = unlink(argv[2]);
            say("unlink %ld errno %ld\n", r, r ? errno : 0);
        }
        say("done\n", 0, 0);
        return 0;
    }
    return 2;
}
