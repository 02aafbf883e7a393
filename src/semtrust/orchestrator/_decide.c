/*
 * semtrust.orchestrator._decide: the known-point decision, without Python.
 *
 * Most mediated calls of a running workload are opens of files it opened
 * before: the event is already a valid point of the model. The pure-Python
 * path spends ~15 us of interpreter time on each (dispatch, describe, decide).
 * This module receives notifications itself and answers that common case in
 * C, doing exactly what the Python path does for it:
 *
 *   the thread is one Python registered (trusted, credentials cached, no exec
 *   or mapping check pending, no credential switch needed) -> the path is read
 *   from the task's memory -> resolved from /proc/TID/root or /proc/TID/cwd or
 *   /proc/TID/fd/N with openat2(RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS
 *   [| RESOLVE_IN_ROOT]) to an O_PATH descriptor (the kernel's own step, as
 *   Python's fast lookup does) -> the object's identity (dev, ino, size, mtime,
 *   ctime, mode, uid, gid), the open's kernel flags and the name the kernel
 *   gives it (readlink of /proc/self/fd/N) are looked up among the decisions
 *   Python made -> enforcing, the object is opened through that descriptor,
 *   checked again and injected (SECCOMP_IOCTL_NOTIF_ADDFD); learning, the call
 *   continues.
 *
 * A name that does not resolve (ENOENT, ENOTDIR in that one step) fails the call
 * with the kernel's error, as Python's one-step lookup does (no event: nothing was
 * opened).
 *
 * mkdir and mkdirat of a name that already exists fail with EEXIST here, as the
 * kernel (and Python's handler) fail them before any event: build tools call
 * mkdir -p on directories that are nearly always there. Only a name resolved in one
 * step to an existing object is answered; anything else (a symlink or '..' on the
 * way, a name that is not there) is Python's, which models the creation.
 *
 * First-seen opens (enforcing only): most opens of an archiver or a compiler name
 * a file once, so no entry can answer them. For a read-only open of a regular file
 * (at most max_hash bytes) or directory that Python would describe as a plain
 * pre-existing object -- not procfs or a device name, not deleted, not an object
 * the domain created nor under a directory it created, not a pseudonym path, on a
 * device Python described a file of -- the file_open coefficient is computed here,
 * as coefficient.py does, from the descriptor that is then injected: the task
 * identity and COE digest of the thread's token, the kernel flags, the inode part
 * (owner, mode, the device's magic, s_id and UUID as Python pushed them), the name
 * the task sees and the SHA-256 of the content. Only a valid point of the sealed
 * model is answered; any other point is Python's (it records forensics and denies).
 *
 * An entry is a fact Python established: "for this task identity and COE
 * (the token), the object in this state, opened with these flags and named so,
 * is a valid point of the model". Whatever is not certain here -- another
 * syscall, O_CREAT/O_TMPFILE/O_PATH/O_TRUNC, '..', a symlink on the way, procfs,
 * an unknown thread or object, any error -- is handed to Python untouched
 * (before any side effect), which decides it as before. Python keeps every
 * rule; this module only replays answers Python gave, for objects whose state
 * did not change.
 *
 * Counts of the points answered here and the decision latencies are collected
 * and drained by Python into the TMA and the domain's statistics.
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>
#include <openssl/sha.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/openat2.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#define NR_OPEN 2
#define NR_OPENAT 257
#define NR_MKDIR 83
#define NR_MKDIRAT 258
#define AT_FDCWD_ -100
#define PROC_MAGIC 0x9FA0
#define PATH_MAX_ 4096
#define LINK_MAX_ 4096
#define VALID_FLAGS 0x7FFFC3u  /* the bits open/openat keep (VALID_OPEN_FLAGS in core.py) */
#define TMPFILE_BIT 020000000
#define LARGEFILE 0100000
#define MAX_ENTRIES (1 << 16)
#define ENTRY_SLOTS (1 << 17)
#define THREAD_SLOTS 4096
#define DEV_SLOTS 256
#define MAX_LAT 65536
#define PATH_SLOTS (1 << 16)
#define MAX_TOKENS_ 4096
#define CREATED_SLOTS (1 << 17)
#define CDIR_SLOTS (1 << 14)
#define DEVTAIL_MAX 96
#define HASH_CHUNK (1 << 16)

typedef struct {
    uint64_t dev, ino, mode, uid, gid;
    int64_t size, mtime, mtime_ns, ctime, ctime_ns;
} ident_t;

typedef struct {
    uint64_t hash;     /* 0: empty */
    uint64_t token;
    uint32_t kflags;
    uint32_t slot;     /* Python's index of the coefficient */
    ident_t id;
    uint32_t linklen;
    char *link;
} entry_t;

typedef struct {
    int tid;           /* 0: empty */
    uint64_t token;    /* 0: not answered here */
    int root;          /* the thread's root (O_PATH), kept while roots are stable; -1 */
} thread_t;

typedef struct {
    uint64_t dev;
    uint32_t magic;
    int used;
} devmagic_t;

/* What a token stands for in a coefficient: the task identity, the COE digest and
 * the task root stripped from names (none for "/" or a procfs-named root). */
typedef struct {
    int set;
    unsigned char task_id[32], coe[32];
    char *root;
    size_t rootlen;
} tokinfo_t;

/* A device's part of an inode description, as Python described it (magic, s_id
 * padded to 32 bytes, UUID or zeros): pushed when Python first described a file there. */
typedef struct {
    int used;
    uint64_t dev;
    uint32_t magic;
    uint32_t taillen;
    unsigned char tail[DEVTAIL_MAX];
} devrec_t;

typedef struct {
    unsigned char co[32];
    uint32_t slot;
    int used;
} point_t;

typedef struct {
    PyObject_HEAD
    int lfd;
    int wake;
    int emulate;
    int roots_ok;        /* Python: no call that may change a root is in flight */
    uint64_t answered;   /* decisions answered here */
    uint64_t handed;     /* notifications handed to Python */
    uint64_t why[8];     /* why they were: see Fast_get_handed */
    entry_t *entries;
    uint32_t *used;      /* indices of the occupied entries (clearing costs what is held) */
    Py_ssize_t nentries;
    thread_t threads[THREAD_SLOTS];
    Py_ssize_t nthreads;
    devmagic_t devs[DEV_SLOTS];
    /* Hashes of the paths Python decided (allowed or not found): a path never seen
     * there is handed over at once, without resolving it here first (a first-seen
     * file would otherwise be resolved twice). Only a filter: a hit still needs the
     * object's entry. */
    uint64_t paths[PATH_SLOTS];
    Py_ssize_t npaths;
    uint32_t *hits;      /* per slot, drained by Python */
    uint32_t *dirty;     /* slots whose count went up since the last drain */
    Py_ssize_t nhits, ndirty;
    int64_t lat[MAX_LAT];
    Py_ssize_t nlat;
    /* First-seen opens (enforcing): the coefficient computed here from what Python
     * pushed, checked against the sealed model's valid points. */
    uint64_t computed;   /* decisions answered so */
    /* Of those, the descriptions a thread had not had before: Python numbers an event
     * when it first describes an object's state for a thread (its caches), so these
     * take event numbers. Keyed like entries, with the thread and its token. */
    uint64_t numbered;
    uint64_t described[PATH_SLOTS];
    Py_ssize_t ndescribed;
    int64_t max_hash;    /* largest file hashed here; 0: first-seen opens are Python's */
    tokinfo_t tokens[MAX_TOKENS_ + 1];
    devrec_t devrecs[DEV_SLOTS];
    point_t *points;
    Py_ssize_t npoints, pointcap;
    unsigned char *pseudo;  /* 32 bytes each */
    Py_ssize_t npseudo;
    uint64_t *created;   /* mix(dev, ino) of objects the domain created (a superset) */
    Py_ssize_t ncreated;
    uint64_t cdirs[CDIR_SLOTS];  /* path hashes of created directories */
    Py_ssize_t ncdirs;
    int created_full;    /* a table overflowed: every first-seen open is Python's */
} Fast;

static int64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static uint64_t
mix(uint64_t h, uint64_t v)
{
    h ^= v + 0x9E3779B97F4A7C15ULL + (h << 6) + (h >> 2);
    h *= 0xFF51AFD7ED558CCDULL;
    return h ^ (h >> 33);
}

static uint64_t
entry_hash(uint64_t token, uint32_t kflags, const ident_t *id, const char *link,
           size_t linklen)
{
    uint64_t h = 0x243F6A8885A308D3ULL;
    h = mix(h, token);
    h = mix(h, kflags);
    h = mix(h, id->dev);
    h = mix(h, id->ino);
    h = mix(h, (uint64_t)id->size);
    h = mix(h, (uint64_t)id->mtime ^ ((uint64_t)id->mtime_ns << 34));
    h = mix(h, (uint64_t)id->ctime ^ ((uint64_t)id->ctime_ns << 34));
    h = mix(h, id->mode | (id->uid << 20) | (id->gid << 42));
    for (size_t i = 0; i < linklen; i++)
        h = (h ^ (unsigned char)link[i]) * 0x100000001B3ULL;
    h = mix(h, linklen);
    return h ? h : 1;
}

static void
ident_of(const struct stat *st, ident_t *id)
{
    id->dev = st->st_dev;
    id->ino = st->st_ino;
    id->mode = st->st_mode;
    id->uid = st->st_uid;
    id->gid = st->st_gid;
    id->size = st->st_size;
    id->mtime = st->st_mtim.tv_sec;
    id->mtime_ns = st->st_mtim.tv_nsec;
    id->ctime = st->st_ctim.tv_sec;
    id->ctime_ns = st->st_ctim.tv_nsec;
}

static int
ident_eq(const ident_t *a, const ident_t *b)
{
    return a->dev == b->dev && a->ino == b->ino && a->mode == b->mode && a->uid == b->uid
        && a->gid == b->gid && a->size == b->size && a->mtime == b->mtime
        && a->mtime_ns == b->mtime_ns && a->ctime == b->ctime && a->ctime_ns == b->ctime_ns;
}

static void
clear_entries(Fast *f)
{
    if (f->entries == NULL)
        return;
    for (Py_ssize_t k = 0; k < f->nentries; k++) {
        entry_t *e = &f->entries[f->used[k]];
        free(e->link);
        e->link = NULL;
        e->hash = 0;
    }
    f->nentries = 0;
}

static uint64_t
path_hash(const char *p, size_t len)
{
    uint64_t h = 0xCBF29CE484222325ULL;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)p[i]) * 0x100000001B3ULL;
    h = mix(h, len);
    return h ? h : 1;
}

static int
path_seen(Fast *f, uint64_t h, int insert)
{
    uint32_t i = (uint32_t)h & (PATH_SLOTS - 1);
    for (;;) {
        if (f->paths[i] == h)
            return 1;
        if (f->paths[i] == 0) {
            if (!insert)
                return 0;
            if (f->npaths >= PATH_SLOTS / 2) {
                memset(f->paths, 0, sizeof(f->paths));
                f->npaths = 0;
                return path_seen(f, h, 1);
            }
            f->paths[i] = h;
            f->npaths++;
            return 1;
        }
        i = (i + 1) & (PATH_SLOTS - 1);
    }
}

/* Is h in the set (inserting it with insert)? A full set starts over. */
static int
hash_seen(uint64_t *set, Py_ssize_t *n, uint64_t h, int insert)
{
    uint32_t i = (uint32_t)h & (PATH_SLOTS - 1);
    for (;;) {
        if (set[i] == h)
            return 1;
        if (set[i] == 0) {
            if (!insert)
                return 0;
            if (*n >= PATH_SLOTS / 2) {
                memset(set, 0, PATH_SLOTS * sizeof(uint64_t));
                *n = 0;
                i = (uint32_t)h & (PATH_SLOTS - 1);
            }
            set[i] = h;
            (*n)++;
            return 0;
        }
        i = (i + 1) & (PATH_SLOTS - 1);
    }
}

static void
drop_roots(Fast *f)
{
    for (Py_ssize_t i = 0; i < THREAD_SLOTS; i++) {
        if (f->threads[i].tid != 0 && f->threads[i].root >= 0) {
            close(f->threads[i].root);
            f->threads[i].root = -1;
        }
    }
}

static void
clear_threads(Fast *f)
{
    drop_roots(f);
    memset(f->threads, 0, sizeof(f->threads));
    f->nthreads = 0;
}

static thread_t *
thread_slot(Fast *f, int tid, int insert)
{
    uint32_t i = ((uint32_t)tid * 2654435761u) & (THREAD_SLOTS - 1);
    for (int n = 0; n < THREAD_SLOTS; n++, i = (i + 1) & (THREAD_SLOTS - 1)) {
        if (f->threads[i].tid == tid)
            return &f->threads[i];
        if (f->threads[i].tid == 0) {
            if (!insert)
                return NULL;
            if (f->nthreads >= THREAD_SLOTS / 2) {
                clear_threads(f);
                return thread_slot(f, tid, 1);
            }
            f->nthreads++;
            f->threads[i].tid = tid;
            f->threads[i].root = -1;
            return &f->threads[i];
        }
    }
    return NULL;
}

static const entry_t *
find_entry(Fast *f, uint64_t token, uint32_t kflags, const ident_t *id, const char *link,
           size_t linklen)
{
    uint64_t h = entry_hash(token, kflags, id, link, linklen);
    uint32_t i = (uint32_t)h & (ENTRY_SLOTS - 1);
    for (;;) {
        const entry_t *e = &f->entries[i];
        if (e->hash == 0)
            return NULL;
        if (e->hash == h && e->token == token && e->kflags == kflags && e->linklen == linklen
                && ident_eq(&e->id, id) && memcmp(e->link, link, linklen) == 0)
            return e;
        i = (i + 1) & (ENTRY_SLOTS - 1);
    }
}

static uint32_t
fs_magic(Fast *f, int fd, uint64_t dev, int *ok)
{
    uint32_t i = (uint32_t)(dev * 0x9E3779B97F4A7C15ULL >> 56) & (DEV_SLOTS - 1);
    for (int n = 0; n < DEV_SLOTS; n++, i = (i + 1) & (DEV_SLOTS - 1)) {
        if (f->devs[i].used && f->devs[i].dev == dev) {
            *ok = 1;
            return f->devs[i].magic;
        }
        if (!f->devs[i].used) {
            struct statfs sfs;
            if (fstatfs(fd, &sfs) != 0) {
                *ok = 0;
                return 0;
            }
            f->devs[i].used = 1;
            f->devs[i].dev = dev;
            f->devs[i].magic = (uint32_t)sfs.f_type;
            *ok = 1;
            return f->devs[i].magic;
        }
    }
    *ok = 0;  /* table full: let Python decide */
    return 0;
}

/* ------------------------------------------------------- first-seen opens */

static int
firstseen_on(const Fast *f)
{
    return f->emulate && f->max_hash > 0 && f->npoints > 0 && !f->created_full;
}

static const devrec_t *
devrec_find(const Fast *f, uint64_t dev)
{
    uint32_t i = (uint32_t)(dev * 0x9E3779B97F4A7C15ULL >> 56) & (DEV_SLOTS - 1);
    for (int n = 0; n < DEV_SLOTS; n++, i = (i + 1) & (DEV_SLOTS - 1)) {
        if (!f->devrecs[i].used)
            return NULL;
        if (f->devrecs[i].dev == dev)
            return &f->devrecs[i];
    }
    return NULL;
}

static const point_t *
point_find(const Fast *f, const unsigned char *co)
{
    if (f->pointcap == 0)
        return NULL;
    uint64_t h;
    memcpy(&h, co, sizeof(h));
    Py_ssize_t i = (Py_ssize_t)(h & (uint64_t)(f->pointcap - 1));
    for (;;) {
        const point_t *p = &f->points[i];
        if (!p->used)
            return NULL;
        if (memcmp(p->co, co, 32) == 0)
            return p;
        i = (i + 1) & (f->pointcap - 1);
    }
}

static uint64_t
key_hash(uint64_t dev, uint64_t ino)
{
    uint64_t h = mix(mix(0x452821E638D01377ULL, dev), ino);
    return h ? h : 1;
}

/* Is h in the open-addressed set of `slots` entries (a power of two, never full)? */
static int
set_has(const uint64_t *set, uint32_t slots, uint64_t h)
{
    uint32_t i = (uint32_t)h & (slots - 1);
    for (;;) {
        if (set[i] == h)
            return 1;
        if (set[i] == 0)
            return 0;
        i = (i + 1) & (slots - 1);
    }
}

static int
created_has(const Fast *f, uint64_t h)
{
    return f->created != NULL && set_has(f->created, CREATED_SLOTS, h);
}

static int
cdir_has(const Fast *f, uint64_t h)
{
    return set_has(f->cdirs, CDIR_SLOTS, h);
}

/* Is a prefix of the task-view name (cut before a '/', as CreatedTable.dirs_above
 * walks it) the name of a created directory? Then Python describes it. */
static int
under_created_dir(const Fast *f, const char *shown, size_t len)
{
    if (f->ncdirs == 0)
        return 0;
    for (size_t i = 1; i < len; i++)
        if (shown[i] == '/' && cdir_has(f, path_hash(shown, i)))
            return 1;
    return 0;
}

static void
put_u32(unsigned char *b, uint32_t v)
{
    b[0] = (unsigned char)v;
    b[1] = (unsigned char)(v >> 8);
    b[2] = (unsigned char)(v >> 16);
    b[3] = (unsigned char)(v >> 24);
}

/* SHA-256 of the content read through fd (pread: no offset moves), as fileinfo's
 * digest; -1 when the file is not at most max bytes to its end, or a read fails. */
static int
hash_content(int fd, int64_t max, unsigned char *md)
{
    static unsigned char buf[HASH_CHUNK];
    SHA256_CTX ctx;
    SHA256_Init(&ctx);
    int64_t off = 0;
    for (;;) {
        ssize_t n = pread(fd, buf, sizeof(buf), off);
        if (n < 0)
            return -1;
        if (n == 0)
            break;
        SHA256_Update(&ctx, buf, (size_t)n);
        off += n;
        if (off > max)
            return -1;
    }
    SHA256_Final(md, &ctx);
    return 0;
}

/* The file_open coefficient of the object open on fd, exactly as Python's describe()
 * and event_coefficient() make it for a pre-existing object:
 *   H("file_open" || task_id || H(COE) || H(u32 flags || u32 uid || u32 gid || u16 mode
 *     || u32 magic || s_id[32] || uuid[16] || lstr("root") || lstr(name) || digest)).
 * 0 on success; -1 when anything is Python's (the caller checked every other rule). */
static int
file_open_coefficient(const Fast *f, const tokinfo_t *tk, const devrec_t *dr, int fd,
                      const struct stat *st, uint32_t kflags, const char *shown,
                      size_t shownlen, unsigned char *co)
{
    unsigned char digest[32], cell[32], head[14], u[4];
    if (S_ISREG(st->st_mode)) {
        if (hash_content(fd, f->max_hash, digest) != 0)
            return -1;
    } else {
        SHA256((const unsigned char *)"", 0, digest);  /* a directory: nothing hashed */
    }
    SHA256_CTX ctx;
    SHA256_Init(&ctx);
    put_u32(u, kflags);
    SHA256_Update(&ctx, u, 4);
    put_u32(head, (uint32_t)st->st_uid);
    put_u32(head + 4, (uint32_t)st->st_gid);
    head[8] = (unsigned char)st->st_mode;
    head[9] = (unsigned char)(st->st_mode >> 8);
    put_u32(head + 10, dr->magic);
    SHA256_Update(&ctx, head, 14);
    SHA256_Update(&ctx, dr->tail, dr->taillen);
    put_u32(u, 4);
    SHA256_Update(&ctx, u, 4);
    SHA256_Update(&ctx, "root", 4);
    put_u32(u, (uint32_t)shownlen);
    SHA256_Update(&ctx, u, 4);
    SHA256_Update(&ctx, shown, shownlen);
    SHA256_Update(&ctx, digest, 32);
    SHA256_Final(cell, &ctx);
    SHA256_Init(&ctx);
    SHA256_Update(&ctx, "file_open", 9);
    SHA256_Update(&ctx, tk->task_id, 32);
    SHA256_Update(&ctx, tk->coe, 32);
    SHA256_Update(&ctx, cell, 32);
    SHA256_Final(co, &ctx);
    return 0;
}

/* The name Python's description uses (the kernel's name with the task root taken
 * off), when Python describes it as a plain pre-existing object; NULL when the
 * object is Python's (procfs, a device name, deleted, created or under a created
 * directory, a pseudonym). */
static const char *
plain_name(const Fast *f, const tokinfo_t *tk, const char *link, size_t ll,
           const struct stat *st, size_t *outlen)
{
    static const char deleted[] = " (deleted)";
    if (ll == 0 || link[0] != '/' || strncmp(link, "/proc/", 6) == 0
            || (ll >= 5 && strncmp(link, "/proc", 5) == 0 && (ll == 5 || link[5] == '/'))
            || strncmp(link, "/dev/pts/", 9) == 0
            || (ll >= sizeof(deleted) - 1
                && memcmp(link + ll - (sizeof(deleted) - 1), deleted, sizeof(deleted) - 1) == 0))
        return NULL;
    const char *shown = link;
    size_t len = ll;
    if (tk->root != NULL && ll >= tk->rootlen && memcmp(link, tk->root, tk->rootlen) == 0
            && (ll == tk->rootlen || link[tk->rootlen] == '/')) {
        shown = link + tk->rootlen;
        len = ll - tk->rootlen;
        if (len == 0) {
            shown = "/";
            len = 1;
        }
    }
    if (created_has(f, key_hash(st->st_dev, st->st_ino)) || under_created_dir(f, shown, len))
        return NULL;
    if (f->npseudo > 0) {
        unsigned char u[4], md[32];
        SHA256_CTX ctx;
        SHA256_Init(&ctx);
        put_u32(u, (uint32_t)len);
        SHA256_Update(&ctx, u, 4);
        SHA256_Update(&ctx, shown, len);
        SHA256_Final(md, &ctx);
        for (Py_ssize_t k = 0; k < f->npseudo; k++)
            if (memcmp(f->pseudo + 32 * k, md, 32) == 0)
                return NULL;
    }
    *outlen = len;
    return shown;
}

/* The NUL-terminated path at addr in the task, read as Python reads it (chunks that
 * do not cross a page). 0 on success; -1 for anything Python must look at. */
static int
read_path(pid_t tid, uint64_t addr, char *out)
{
    size_t got = 0;
    if (addr == 0)
        return -1;
    while (got < PATH_MAX_) {
        size_t size = 256;
        size_t room = 4096 - (addr % 4096);
        if (room < size)
            size = room;
        if (got + size > PATH_MAX_)
            size = PATH_MAX_ - got;
        struct iovec local = {out + got, size};
        struct iovec remote = {(void *)(uintptr_t)addr, size};
        ssize_t n = process_vm_readv(tid, &local, 1, &remote, 1, 0);
        if (n <= 0)
            return -1;
        char *nul = memchr(out + got, 0, (size_t)n);
        if (nul != NULL)
            return 0;
        got += (size_t)n;
        addr += (uint64_t)n;
    }
    return -1;
}

static int
open_proc(pid_t tid, const char *what)
{
    char p[64];
    snprintf(p, sizeof(p), "/proc/%d/%s", (int)tid, what);
    return open(p, O_PATH | O_CLOEXEC);
}

static int
send_error(Fast *f, uint64_t id, int err)
{
    struct seccomp_notif_resp r = {.id = id, .val = 0, .error = -err, .flags = 0};
    return ioctl(f->lfd, SECCOMP_IOCTL_NOTIF_SEND, &r);
}

static int
send_continue(Fast *f, uint64_t id)
{
    struct seccomp_notif_resp r = {.id = id, .val = 0, .error = 0,
                                   .flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE};
    return ioctl(f->lfd, SECCOMP_IOCTL_NOTIF_SEND, &r);
}

/* Try to answer a notification here: 1 answered, 0 hand it to Python. Nothing with a
 * side effect happens before the decision is known to be Python's (the open through
 * the O_PATH descriptor comes after the lookup). */
static int
try_fast(Fast *f, const struct seccomp_notif *n, int64_t t0, char *path, int *have_path)
{
    int nr = n->data.nr;
    int dirfd;
    uint64_t paddr;
    uint32_t flags;
    int firstseen = firstseen_on(f);
    if (n->data.arch != AUDIT_ARCH_X86_64) {
        f->why[0]++;
        return 0;
    }
    int mkdir_call = 0;
    if (nr == NR_OPEN || nr == NR_MKDIR) {
        dirfd = AT_FDCWD_;
        paddr = n->data.args[0];
        flags = (uint32_t)n->data.args[1];
    } else if (nr == NR_OPENAT || nr == NR_MKDIRAT) {
        dirfd = (int)(int32_t)(uint32_t)n->data.args[0];
        paddr = n->data.args[1];
        flags = (uint32_t)n->data.args[2];
    } else {
        f->why[0]++;
        return 0;
    }
    if ((nr == NR_OPEN || nr == NR_OPENAT) && f->nentries == 0 && !firstseen) {
        f->why[0]++;  /* nothing recorded (or computed) to answer an open from */
        return 0;
    }
    pid_t tid = (pid_t)n->pid;
    thread_t *t = thread_slot(f, tid, 0);
    if (t == NULL || t->token == 0) {
        f->why[1]++;
        return 0;
    }
    if (nr == NR_MKDIR || nr == NR_MKDIRAT) {
        mkdir_call = 1;
        flags = O_NOFOLLOW;  /* the arguments are a mode; the last name is not followed */
    }
    flags &= VALID_FLAGS;
    if (flags & (O_CREAT | TMPFILE_BIT | O_PATH | O_TRUNC)) {
        f->why[2]++;
        return 0;
    }
    if (read_path(tid, paddr, path) != 0) {
        f->why[3]++;
        return 0;
    }
    *have_path = 1;  /* handed over with the notification: Python need not read it */
    /* A read-only open may be first-seen (computed below); otherwise a path Python
     * never decided has no entry: handed over without resolving it here. */
    firstseen = firstseen && !mkdir_call && (flags & O_ACCMODE) == O_RDONLY;
    if (path[0] == 0 || strstr(path, "..") != NULL
            || (!mkdir_call && !firstseen && !path_seen(f, path_hash(path, strlen(path)), 0))) {
        f->why[3]++;
        return 0;
    }
    if (!f->emulate && ioctl(f->lfd, SECCOMP_IOCTL_NOTIF_ID_VALID, &n->id) != 0)
        return 0;  /* what we read may not be the task's: Python sorts it out */
    int base, res = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    int own_base = 1;
    if (path[0] == '/') {
        /* The root is kept per thread while no call that may change a root is in
         * flight (Python says so: chroot, pivot_root, setns, unshare, mounts). */
        if (f->roots_ok && t->root >= 0) {
            base = t->root;
            own_base = 0;
        } else {
            base = open_proc(tid, "root");
            if (base >= 0 && f->roots_ok) {
                t->root = base;
                own_base = 0;
            }
        }
        res |= RESOLVE_IN_ROOT;
    } else if (dirfd == AT_FDCWD_) {
        base = open_proc(tid, "cwd");
    } else {
        char what[32];
        if (dirfd < 0)
            return 0;
        snprintf(what, sizeof(what), "fd/%d", dirfd);
        base = open_proc(tid, what);
    }
    if (base < 0)
        return 0;
    struct open_how how = {.flags = O_PATH | O_CLOEXEC | (flags & O_NOFOLLOW), .mode = 0,
                           .resolve = (uint64_t)res};
    int obj = (int)syscall(SYS_openat2, base, path, &how, sizeof(how));
    int err = errno;
    if (own_base)
        close(base);
    if (mkdir_call) {
        /* Only "it exists" is answered here; the object is not looked at further
         * (the kernel fails mkdir on any existing name, a dangling symlink too). */
        if (obj < 0) {
            f->why[5]++;
            return 0;
        }
        close(obj);
        int64_t t1 = now_ns();
        if (send_error(f, n->id, EEXIST) != 0 && errno != ENOENT)
            return 0;
        f->answered++;
        if (f->nlat < MAX_LAT)
            f->lat[f->nlat++] = t1 - t0;
        return 1;
    }
    if (obj < 0) {
        /* A name that is not there (a search path probed): Python's one-step lookup
         * fails the call with the kernel's error and models nothing; so does this. Any
         * other error (a symlink on the way: ELOOP) is Python's. */
        if (err != ENOENT && err != ENOTDIR) {
            f->why[4]++;
            return 0;
        }
        int64_t t1 = now_ns();
        if (send_error(f, n->id, err) != 0 && errno != ENOENT)
            return 0;
        f->answered++;
        if (f->nlat < MAX_LAT)
            f->lat[f->nlat++] = t1 - t0;
        return 1;
    }
    int fd = -1, done = 0;
    struct stat st;
    char self[48], link[LINK_MAX_];
    if (fstat(obj, &st) != 0)
        goto out;
    if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode))
        goto out;
    if ((flags & O_DIRECTORY) && !S_ISDIR(st.st_mode))
        goto out;
    int ok;
    uint32_t magic = fs_magic(f, obj, st.st_dev, &ok);
    if (!ok || magic == PROC_MAGIC)
        goto out;
    snprintf(self, sizeof(self), "/proc/self/fd/%d", obj);
    ssize_t ll = readlink(self, link, sizeof(link));
    if (ll <= 0 || ll >= (ssize_t)sizeof(link))
        goto out;
    ident_t id;
    ident_of(&st, &id);
    uint32_t kflags = (flags | LARGEFILE) & ~(uint32_t)(O_CREAT | O_EXCL | O_NOCTTY | O_TRUNC | O_CLOEXEC);
    const entry_t *e = f->nentries ? find_entry(f, t->token, kflags, &id, link, (size_t)ll)
                                   : NULL;
    const tokinfo_t *tk = NULL;
    const devrec_t *dr = NULL;
    const char *shown = NULL;
    size_t shownlen = 0;
    if (e == NULL) {
        /* First seen: computed here when Python would describe it as a plain
         * pre-existing object, from facts it pushed (else Python's). */
        if (firstseen && t->token <= MAX_TOKENS_ && f->tokens[t->token].set)
            tk = &f->tokens[t->token];
        if (tk != NULL && !(S_ISREG(st.st_mode) && st.st_size > f->max_hash))
            dr = devrec_find(f, st.st_dev);
        if (dr != NULL)
            shown = plain_name(f, tk, link, (size_t)ll, &st, &shownlen);
        if (shown == NULL) {
            f->why[6]++;
            goto out;
        }
    }
    uint32_t slot = e != NULL ? e->slot : UINT32_MAX;
    int64_t t1;
    if (f->emulate) {
        int rflags = (int)((flags | O_NOCTTY | O_CLOEXEC) & ~(uint32_t)(O_CREAT | O_EXCL | O_NOFOLLOW));
        fd = open(self, rflags);
        if (fd < 0)
            goto out;  /* Python opens again and fails the call with the kernel's error */
        struct stat st2;
        ident_t id2;
        if (fstat(fd, &st2) != 0)
            goto out;
        ident_of(&st2, &id2);
        if (!ident_eq(&id, &id2))
            goto out;  /* changed between the check and the open: Python decides */
        if (e == NULL) {
            /* The very descriptor injected is the one described and hashed; its name
             * and state must be the ones the checks above were made on. */
            char link2[LINK_MAX_], self2[48];
            unsigned char co[32];
            snprintf(self2, sizeof(self2), "/proc/self/fd/%d", fd);
            ssize_t ll2 = readlink(self2, link2, sizeof(link2));
            if (ll2 != ll || memcmp(link, link2, (size_t)ll) != 0)
                goto out;
            if (file_open_coefficient(f, tk, dr, fd, &st2, kflags, shown, shownlen, co) != 0)
                goto out;
            if (fstat(fd, &st2) != 0)
                goto out;
            ident_of(&st2, &id2);
            if (!ident_eq(&id, &id2))
                goto out;  /* changed while hashed */
            const point_t *pt = point_find(f, co);
            if (pt == NULL) {
                f->why[6]++;  /* not a valid point: Python records it and denies */
                goto out;
            }
            slot = pt->slot;
        }
        struct seccomp_notif_addfd a = {.id = n->id, .flags = SECCOMP_ADDFD_FLAG_SEND,
                                        .srcfd = (uint32_t)fd, .newfd = 0,
                                        .newfd_flags = (flags & O_CLOEXEC) ? O_CLOEXEC : 0};
        t1 = now_ns();
        if (ioctl(f->lfd, SECCOMP_IOCTL_NOTIF_ADDFD, &a) < 0 && errno != ENOENT)
            goto out;  /* an unexpected failure: Python's path reports it */
    } else {
        t1 = now_ns();
        if (send_continue(f, n->id) != 0 && errno != ENOENT)
            goto out;
    }
    done = 1;
    f->why[7]--;  /* not handed after all (see out:) */
    f->answered++;
    if (e == NULL) {
        f->computed++;
        if (!hash_seen(f->described, &f->ndescribed,
                       entry_hash((uint64_t)(uint32_t)tid | (t->token << 32), kflags, &id,
                                  link, (size_t)ll), 1))
            f->numbered++;
    }
    if (slot < (uint32_t)f->nhits && f->hits[slot]++ == 0)
        f->dirty[f->ndirty++] = slot;
    if (f->nlat < MAX_LAT)
        f->lat[f->nlat++] = t1 - t0;
out:
    f->why[7]++;  /* object-level reasons (type, procfs, name, open): not counted above */
    if (fd >= 0)
        close(fd);
    close(obj);
    return done;
}

/* ------------------------------------------------------------------ Python */

static int
Fast_init(Fast *self, PyObject *args, PyObject *kw)
{
    int lfd, wake;
    if (!PyArg_ParseTuple(args, "ii", &lfd, &wake))
        return -1;
    self->lfd = lfd;
    self->wake = wake;
    self->emulate = 0;
    self->roots_ok = 0;
    if (self->entries == NULL) {
        self->entries = calloc(ENTRY_SLOTS, sizeof(entry_t));
        self->used = calloc(MAX_ENTRIES, sizeof(uint32_t));
        if (self->entries == NULL || self->used == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    clear_entries(self);
    clear_threads(self);
    memset(self->devs, 0, sizeof(self->devs));
    memset(self->paths, 0, sizeof(self->paths));
    self->npaths = 0;
    memset(self->described, 0, sizeof(self->described));
    self->ndescribed = 0;
    return 0;
}

static void
Fast_dealloc(Fast *self)
{
    clear_entries(self);
    clear_threads(self);
    free(self->entries);
    free(self->used);
    free(self->hits);
    free(self->dirty);
    free(self->points);
    free(self->pseudo);
    free(self->created);
    for (Py_ssize_t k = 0; k <= MAX_TOKENS_; k++)
        free(self->tokens[k].root);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
Fast_run(Fast *self, PyObject *arg)
{
    /* Answer what can be answered here until a notification needs Python (returned
     * as a tuple, with the path argument of an open when it was read here), the wakeup descriptor is readable (1), the listener hung up (2),
     * nothing came within the timeout or a signal arrived (0). */
    int timeout = (int)PyLong_AsLong(arg);
    if (timeout == -1 && PyErr_Occurred())
        return NULL;
    struct pollfd p[2] = {{self->lfd, POLLIN, 0}, {self->wake, POLLIN, 0}};
    int np = self->wake >= 0 ? 2 : 1;
    for (;;) {
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = poll(p, (nfds_t)np, timeout);
        Py_END_ALLOW_THREADS
        if (rc < 0) {
            if (errno == EINTR) {
                if (PyErr_CheckSignals() != 0)
                    return NULL;
                return PyLong_FromLong(0);
            }
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        if (rc == 0)
            return PyLong_FromLong(0);
        if (np == 2 && (p[1].revents & POLLIN))
            return PyLong_FromLong(1);
        if (p[0].revents & POLLIN) {
            struct seccomp_notif n;
            memset(&n, 0, sizeof(n));
            int r;
            Py_BEGIN_ALLOW_THREADS
            r = ioctl(self->lfd, SECCOMP_IOCTL_NOTIF_RECV, &n);
            Py_END_ALLOW_THREADS
            if (r != 0) {
                if (errno == ENOENT || errno == EINTR || errno == EAGAIN)
                    continue;
                return PyErr_SetFromErrno(PyExc_OSError);
            }
            int64_t t0 = now_ns();
            char path[PATH_MAX_ + 1];
            int have_path = 0;
            if (try_fast(self, &n, t0, path, &have_path))
                continue;
            self->handed++;
            PyObject *pobj;
            if (have_path) {
                pobj = PyBytes_FromString(path);
                if (pobj == NULL)
                    return NULL;
            } else {
                pobj = Py_NewRef(Py_None);
            }
            return Py_BuildValue("(KIiI(KKKKKK)LN)", (unsigned long long)n.id, n.pid,
                                 n.data.nr, n.data.arch,
                                 (unsigned long long)n.data.args[0],
                                 (unsigned long long)n.data.args[1],
                                 (unsigned long long)n.data.args[2],
                                 (unsigned long long)n.data.args[3],
                                 (unsigned long long)n.data.args[4],
                                 (unsigned long long)n.data.args[5], (long long)t0, pobj);
        }
        if (p[0].revents & (POLLHUP | POLLERR | POLLNVAL))
            return PyLong_FromLong(2);
    }
}

static PyObject *
Fast_register(Fast *self, PyObject *args)
{
    int tid;
    unsigned long long token;
    if (!PyArg_ParseTuple(args, "iK", &tid, &token))
        return NULL;
    if (tid <= 0)
        Py_RETURN_NONE;
    thread_t *t = thread_slot(self, tid, 1);
    if (t != NULL)
        t->token = token;
    Py_RETURN_NONE;
}

static PyObject *
Fast_forget_thread(Fast *self, PyObject *arg)
{
    int tid = (int)PyLong_AsLong(arg);
    if (tid == -1 && PyErr_Occurred())
        return NULL;
    thread_t *t = thread_slot(self, tid, 0);
    if (t != NULL) {
        t->token = 0;
        if (t->root >= 0) {
            close(t->root);
            t->root = -1;
        }
    }
    Py_RETURN_NONE;
}

static PyObject *
Fast_drop_roots(Fast *self, PyObject *unused)
{
    drop_roots(self);
    Py_RETURN_NONE;
}

static PyObject *
Fast_forget_threads(Fast *self, PyObject *unused)
{
    clear_threads(self);
    Py_RETURN_NONE;
}

static PyObject *
Fast_clear(Fast *self, PyObject *unused)
{
    clear_entries(self);
    clear_threads(self);
    Py_RETURN_NONE;
}

/* Room for counting hits of point slot ``slot``; -1 with a Python error. */
static int
ensure_slot(Fast *self, uint32_t slot)
{
    if ((Py_ssize_t)slot < self->nhits)
        return 0;
    Py_ssize_t n = self->nhits ? self->nhits : 1024;
    while (n <= (Py_ssize_t)slot)
        n *= 2;
    uint32_t *h = realloc(self->hits, (size_t)n * sizeof(uint32_t));
    if (h == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memset(h + self->nhits, 0, (size_t)(n - self->nhits) * sizeof(uint32_t));
    self->hits = h;
    uint32_t *d = realloc(self->dirty, (size_t)n * sizeof(uint32_t));
    if (d == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->dirty = d;
    self->nhits = n;
    return 0;
}

static PyObject *
Fast_token_info(Fast *self, PyObject *args)
{
    unsigned long long token;
    const char *tid, *coe, *root;
    Py_ssize_t ntid, ncoe, nroot;
    if (!PyArg_ParseTuple(args, "Ky#y#y#", &token, &tid, &ntid, &coe, &ncoe, &root, &nroot))
        return NULL;
    if (token == 0 || token > MAX_TOKENS_ || ntid != 32 || ncoe != 32) {
        PyErr_SetString(PyExc_ValueError, "token 1..4096, task id and COE digest of 32 bytes");
        return NULL;
    }
    tokinfo_t *tk = &self->tokens[token];
    free(tk->root);
    tk->root = NULL;
    tk->rootlen = 0;
    tk->set = 0;
    memcpy(tk->task_id, tid, 32);
    memcpy(tk->coe, coe, 32);
    if (nroot > 0) {
        tk->root = malloc((size_t)nroot);
        if (tk->root == NULL)
            return PyErr_NoMemory();
        memcpy(tk->root, root, (size_t)nroot);
        tk->rootlen = (size_t)nroot;
    }
    tk->set = 1;
    Py_RETURN_NONE;
}

static PyObject *
Fast_add_device(Fast *self, PyObject *args)
{
    unsigned long long dev;
    unsigned int magic;
    const char *tail;
    Py_ssize_t ntail;
    if (!PyArg_ParseTuple(args, "KIy#", &dev, &magic, &tail, &ntail))
        return NULL;
    if (ntail > DEVTAIL_MAX)
        Py_RETURN_FALSE;  /* an unusual s_id: that device stays Python's */
    uint32_t i = (uint32_t)(dev * 0x9E3779B97F4A7C15ULL >> 56) & (DEV_SLOTS - 1);
    for (int n = 0; n < DEV_SLOTS; n++, i = (i + 1) & (DEV_SLOTS - 1)) {
        devrec_t *d = &self->devrecs[i];
        if (d->used && d->dev != dev)
            continue;
        d->used = 1;
        d->dev = dev;
        d->magic = magic;
        d->taillen = (uint32_t)ntail;
        memcpy(d->tail, tail, (size_t)ntail);
        Py_RETURN_TRUE;
    }
    Py_RETURN_FALSE;  /* full: further devices stay Python's */
}

static PyObject *
Fast_add_point(Fast *self, PyObject *args)
{
    const char *co;
    Py_ssize_t nco;
    unsigned int slot;
    if (!PyArg_ParseTuple(args, "y#I", &co, &nco, &slot))
        return NULL;
    if (nco != 32) {
        PyErr_SetString(PyExc_ValueError, "a coefficient has 32 bytes");
        return NULL;
    }
    if (ensure_slot(self, slot) != 0)
        return NULL;
    if ((self->npoints + 1) * 2 > self->pointcap) {
        Py_ssize_t cap = self->pointcap ? self->pointcap * 2 : 1024;
        point_t *np = calloc((size_t)cap, sizeof(point_t));
        if (np == NULL)
            return PyErr_NoMemory();
        for (Py_ssize_t k = 0; k < self->pointcap; k++) {
            if (!self->points[k].used)
                continue;
            uint64_t h;
            memcpy(&h, self->points[k].co, sizeof(h));
            Py_ssize_t i = (Py_ssize_t)(h & (uint64_t)(cap - 1));
            while (np[i].used)
                i = (i + 1) & (cap - 1);
            np[i] = self->points[k];
        }
        free(self->points);
        self->points = np;
        self->pointcap = cap;
    }
    if (point_find(self, (const unsigned char *)co) != NULL)
        Py_RETURN_NONE;
    uint64_t h;
    memcpy(&h, co, sizeof(h));
    Py_ssize_t i = (Py_ssize_t)(h & (uint64_t)(self->pointcap - 1));
    while (self->points[i].used)
        i = (i + 1) & (self->pointcap - 1);
    memcpy(self->points[i].co, co, 32);
    self->points[i].slot = slot;
    self->points[i].used = 1;
    self->npoints++;
    Py_RETURN_NONE;
}

static PyObject *
Fast_set_pseudonyms(Fast *self, PyObject *arg)
{
    char *p;
    Py_ssize_t len;
    if (PyBytes_AsStringAndSize(arg, &p, &len) < 0)
        return NULL;
    if (len % 32 != 0) {
        PyErr_SetString(PyExc_ValueError, "pseudonyms of 32 bytes each");
        return NULL;
    }
    unsigned char *copy = NULL;
    if (len > 0) {
        copy = malloc((size_t)len);
        if (copy == NULL)
            return PyErr_NoMemory();
        memcpy(copy, p, (size_t)len);
    }
    free(self->pseudo);
    self->pseudo = copy;
    self->npseudo = len / 32;
    Py_RETURN_NONE;
}

static PyObject *
Fast_add_created(Fast *self, PyObject *args)
{
    unsigned long long dev, ino;
    if (!PyArg_ParseTuple(args, "KK", &dev, &ino))
        return NULL;
    if (self->created == NULL) {
        self->created = calloc(CREATED_SLOTS, sizeof(uint64_t));
        if (self->created == NULL)
            return PyErr_NoMemory();
    }
    uint64_t h = key_hash(dev, ino);
    if (created_has(self, h))
        Py_RETURN_NONE;
    if (self->ncreated >= CREATED_SLOTS / 2) {
        self->created_full = 1;  /* kept a superset no longer: none computed here */
        Py_RETURN_NONE;
    }
    uint32_t i = (uint32_t)h & (CREATED_SLOTS - 1);
    while (self->created[i] != 0)
        i = (i + 1) & (CREATED_SLOTS - 1);
    self->created[i] = h;
    self->ncreated++;
    Py_RETURN_NONE;
}

static PyObject *
Fast_set_created_dirs(Fast *self, PyObject *arg)
{
    /* The names (task view) of the created directories now indexed; replaces the set. */
    PyObject *it = PyObject_GetIter(arg);
    if (it == NULL)
        return NULL;
    memset(self->cdirs, 0, sizeof(self->cdirs));
    self->ncdirs = 0;
    int full = 0;
    PyObject *item;
    while ((item = PyIter_Next(it)) != NULL) {
        char *p;
        Py_ssize_t len;
        if (PyBytes_AsStringAndSize(item, &p, &len) < 0) {
            Py_DECREF(item);
            Py_DECREF(it);
            return NULL;
        }
        uint64_t h = path_hash(p, (size_t)len);
        Py_DECREF(item);
        if (cdir_has(self, h))
            continue;
        if (self->ncdirs >= CDIR_SLOTS / 2) {
            full = 1;
            continue;
        }
        uint32_t i = (uint32_t)h & (CDIR_SLOTS - 1);
        while (self->cdirs[i] != 0)
            i = (i + 1) & (CDIR_SLOTS - 1);
        self->cdirs[i] = h;
        self->ncdirs++;
    }
    Py_DECREF(it);
    if (PyErr_Occurred())
        return NULL;
    if (full)
        self->created_full = 1;
    Py_RETURN_NONE;
}

static PyObject *
Fast_learn(Fast *self, PyObject *args)
{
    unsigned long long token, dev, ino, mode, uid, gid;
    long long size, mtime_ns, ctime_ns;
    unsigned int kflags, slot;
    const char *link;
    Py_ssize_t linklen;
    if (!PyArg_ParseTuple(args, "KIKKLLLKKKy#I", &token, &kflags, &dev, &ino, &size,
                          &mtime_ns, &ctime_ns, &mode, &uid, &gid, &link, &linklen, &slot))
        return NULL;
    if (token == 0 || linklen <= 0 || linklen >= LINK_MAX_)
        Py_RETURN_FALSE;
    if (self->nentries >= MAX_ENTRIES)
        clear_entries(self);  /* bounded: start over */
    ident_t id = {.dev = dev, .ino = ino, .mode = mode, .uid = uid, .gid = gid,
                  .size = size, .mtime = mtime_ns / 1000000000LL,
                  .mtime_ns = mtime_ns % 1000000000LL, .ctime = ctime_ns / 1000000000LL,
                  .ctime_ns = ctime_ns % 1000000000LL};
    if (find_entry(self, token, kflags, &id, link, (size_t)linklen) != NULL)
        Py_RETURN_TRUE;
    if (ensure_slot(self, slot) != 0)
        return NULL;
    char *copy = malloc((size_t)linklen);
    if (copy == NULL)
        return PyErr_NoMemory();
    memcpy(copy, link, (size_t)linklen);
    uint64_t h = entry_hash(token, kflags, &id, link, (size_t)linklen);
    uint32_t i = (uint32_t)h & (ENTRY_SLOTS - 1);
    while (self->entries[i].hash != 0)
        i = (i + 1) & (ENTRY_SLOTS - 1);
    entry_t *e = &self->entries[i];
    e->hash = h;
    e->token = token;
    e->kflags = kflags;
    e->slot = slot;
    e->id = id;
    e->linklen = (uint32_t)linklen;
    e->link = copy;
    self->used[self->nentries++] = i;
    Py_RETURN_TRUE;
}

static PyObject *
Fast_described(Fast *self, PyObject *args)
{
    /* Python described this state of an object for thread tid, while it stood for
     * token (see numbered). */
    int tid;
    unsigned long long token, dev, ino, mode, uid, gid;
    long long size, mtime_ns, ctime_ns;
    unsigned int kflags;
    const char *link;
    Py_ssize_t linklen;
    if (!PyArg_ParseTuple(args, "iKIKKLLLKKKy#", &tid, &token, &kflags, &dev, &ino, &size,
                          &mtime_ns, &ctime_ns, &mode, &uid, &gid, &link, &linklen))
        return NULL;
    ident_t id = {.dev = dev, .ino = ino, .mode = mode, .uid = uid, .gid = gid,
                  .size = size, .mtime = mtime_ns / 1000000000LL,
                  .mtime_ns = mtime_ns % 1000000000LL, .ctime = ctime_ns / 1000000000LL,
                  .ctime_ns = ctime_ns % 1000000000LL};
    hash_seen(self->described, &self->ndescribed,
              entry_hash((uint64_t)(uint32_t)tid | (token << 32), kflags, &id, link,
                         (size_t)linklen), 1);
    Py_RETURN_NONE;
}

static PyObject *
Fast_note_path(Fast *self, PyObject *arg)
{
    char *p;
    Py_ssize_t len;
    if (PyBytes_AsStringAndSize(arg, &p, &len) < 0)
        return NULL;
    uint64_t h = path_hash(p, (size_t)len);
    if (path_seen(self, h, 0))
        Py_RETURN_TRUE;
    path_seen(self, h, 1);
    Py_RETURN_FALSE;
}

static PyObject *
Fast_drain(Fast *self, PyObject *unused)
{
    /* (latencies in ns as bytes of int64, [(slot, hits)...]) since the last drain. */
    PyObject *lat = PyBytes_FromStringAndSize((const char *)self->lat,
                                              self->nlat * (Py_ssize_t)sizeof(int64_t));
    if (lat == NULL)
        return NULL;
    self->nlat = 0;
    PyObject *hits = PyList_New(0);
    if (hits == NULL) {
        Py_DECREF(lat);
        return NULL;
    }
    for (Py_ssize_t k = 0; k < self->ndirty; k++) {
        uint32_t i = self->dirty[k];
        PyObject *t = Py_BuildValue("(II)", i, self->hits[i]);
        if (t == NULL || PyList_Append(hits, t) != 0) {
            Py_XDECREF(t);
            Py_DECREF(hits);
            Py_DECREF(lat);
            return NULL;
        }
        Py_DECREF(t);
        self->hits[i] = 0;
    }
    self->ndirty = 0;
    return Py_BuildValue("(NN)", lat, hits);
}

static PyObject *
Fast_get_emulate(Fast *self, void *c)
{
    return PyBool_FromLong(self->emulate);
}

static int
Fast_set_emulate(Fast *self, PyObject *v, void *c)
{
    int b = PyObject_IsTrue(v);
    if (b < 0)
        return -1;
    self->emulate = b;
    return 0;
}

static PyObject *
Fast_get_roots_ok(Fast *self, void *c)
{
    return PyBool_FromLong(self->roots_ok);
}

static int
Fast_set_roots_ok(Fast *self, PyObject *v, void *c)
{
    int b = PyObject_IsTrue(v);
    if (b < 0)
        return -1;
    self->roots_ok = b;
    if (!b)
        drop_roots(self);
    return 0;
}

static PyObject *
Fast_get_answered(Fast *self, void *c)
{
    return PyLong_FromUnsignedLongLong(self->answered);
}

static PyObject *
Fast_get_handed(Fast *self, void *c)
{
    /* (total, other call or no entries, thread not registered, flags, path, resolution,
     * mkdir of a name not there, no entry for the object, object-level) -- for profiling the native path. */
    return Py_BuildValue("(KKKKKKKKK)", (unsigned long long)self->handed,
                         (unsigned long long)self->why[0], (unsigned long long)self->why[1],
                         (unsigned long long)self->why[2], (unsigned long long)self->why[3],
                         (unsigned long long)self->why[4], (unsigned long long)self->why[5],
                         (unsigned long long)self->why[6], (unsigned long long)self->why[7]);
}

static PyObject *
Fast_get_computed(Fast *self, void *c)
{
    return PyLong_FromUnsignedLongLong(self->computed);
}

static PyObject *
Fast_get_numbered(Fast *self, void *c)
{
    return PyLong_FromUnsignedLongLong(self->numbered);
}

static PyObject *
Fast_get_max_hash(Fast *self, void *c)
{
    return PyLong_FromLongLong(self->max_hash);
}

static int
Fast_set_max_hash(Fast *self, PyObject *v, void *c)
{
    long long b = PyLong_AsLongLong(v);
    if (b == -1 && PyErr_Occurred())
        return -1;
    self->max_hash = b < 0 ? 0 : b;
    return 0;
}

static PyObject *
Fast_get_entries(Fast *self, void *c)
{
    return PyLong_FromSsize_t(self->nentries);
}

static PyGetSetDef Fast_getset[] = {
    {"emulate", (getter)Fast_get_emulate, (setter)Fast_set_emulate,
     "enforcing: open the object and inject it (else the call continues)", NULL},
    {"roots_ok", (getter)Fast_get_roots_ok, (setter)Fast_set_roots_ok,
     "may a thread's root be kept (False also closes the kept ones)", NULL},
    {"answered", (getter)Fast_get_answered, NULL, "decisions answered here", NULL},
    {"entries", (getter)Fast_get_entries, NULL, "known decisions held", NULL},
    {"computed", (getter)Fast_get_computed, NULL,
     "first-seen decisions answered here (coefficient computed)", NULL},
    {"numbered", (getter)Fast_get_numbered, NULL,
     "of those, descriptions new to their thread (event numbers)", NULL},
    {"max_hash", (getter)Fast_get_max_hash, (setter)Fast_set_max_hash,
     "largest file a first-seen open hashes here (0: none)", NULL},
    {"handed", (getter)Fast_get_handed, NULL, "notifications handed to Python, by reason", NULL},
    {NULL},
};

static PyMethodDef Fast_methods[] = {
    {"run", (PyCFunction)Fast_run, METH_O, "serve until Python is needed"},
    {"register", (PyCFunction)Fast_register, METH_VARARGS, "answer a thread's opens here"},
    {"forget_thread", (PyCFunction)Fast_forget_thread, METH_O, "stop answering a thread"},
    {"forget_threads", (PyCFunction)Fast_forget_threads, METH_NOARGS, "no thread answered"},
    {"clear", (PyCFunction)Fast_clear, METH_NOARGS, "forget every decision and thread"},
    {"drop_roots", (PyCFunction)Fast_drop_roots, METH_NOARGS, "close every kept root"},
    {"learn", (PyCFunction)Fast_learn, METH_VARARGS, "record one of Python's decisions"},
    {"drain", (PyCFunction)Fast_drain, METH_NOARGS, "latencies and point counts"},
    {"note_path", (PyCFunction)Fast_note_path, METH_O, "a path Python decided"},
    {"token_info", (PyCFunction)Fast_token_info, METH_VARARGS,
     "what a token stands for: task id, COE digest, root"},
    {"add_device", (PyCFunction)Fast_add_device, METH_VARARGS, "a device's inode part"},
    {"described", (PyCFunction)Fast_described, METH_VARARGS,
     "Python described an object's state for a thread"},
    {"add_point", (PyCFunction)Fast_add_point, METH_VARARGS, "a valid point and its slot"},
    {"set_pseudonyms", (PyCFunction)Fast_set_pseudonyms, METH_O, "the loaded pseudonyms"},
    {"add_created", (PyCFunction)Fast_add_created, METH_VARARGS, "an object the domain made"},
    {"set_created_dirs", (PyCFunction)Fast_set_created_dirs, METH_O,
     "the names of the created directories"},
    {NULL},
};

static PyTypeObject FastType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "semtrust.orchestrator._decide.FastPath",
    .tp_basicsize = sizeof(Fast),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Fast_init,
    .tp_dealloc = (destructor)Fast_dealloc,
    .tp_methods = Fast_methods,
    .tp_getset = Fast_getset,
    .tp_doc = "Known-point decisions answered natively (see the module docstring).",
};

static PyObject *
serve_continue(PyObject *module, PyObject *arg)
{
    /* The floor of supervision, for benchmarks: answer every notification on the
     * listener with CONTINUE until no task uses the filter; returns how many. */
    int lfd = (int)PyLong_AsLong(arg);
    if (lfd == -1 && PyErr_Occurred())
        return NULL;
    unsigned long long count = 0;
    int err = 0;
    Py_BEGIN_ALLOW_THREADS
    struct pollfd p = {lfd, POLLIN, 0};
    for (;;) {
        if (poll(&p, 1, -1) < 0) {
            if (errno == EINTR)
                continue;
            err = errno;
            break;
        }
        if (!(p.revents & POLLIN))
            break;  /* hung up: the supervised tasks are gone */
        struct seccomp_notif n;
        memset(&n, 0, sizeof(n));
        if (ioctl(lfd, SECCOMP_IOCTL_NOTIF_RECV, &n) != 0)
            continue;
        struct seccomp_notif_resp r = {.id = n.id, .val = 0, .error = 0,
                                       .flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE};
        if (ioctl(lfd, SECCOMP_IOCTL_NOTIF_SEND, &r) == 0)
            count++;
    }
    Py_END_ALLOW_THREADS
    if (err) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromUnsignedLongLong(count);
}

static PyObject *
py_openat2(PyObject *module, PyObject *args)
{
    /* openat2(2) for the Python path's resolution (ctypes costs a microsecond more). */
    int dirfd;
    const char *path;
    Py_ssize_t plen;
    unsigned long long flags, mode, resolve;
    if (!PyArg_ParseTuple(args, "iy#KKK", &dirfd, &path, &plen, &flags, &mode, &resolve))
        return NULL;
    struct open_how how = {.flags = flags, .mode = mode, .resolve = resolve};
    long fd;
    Py_BEGIN_ALLOW_THREADS
    fd = syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
    Py_END_ALLOW_THREADS
    if (fd < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    return PyLong_FromLong(fd);
}

static PyMethodDef module_methods[] = {
    {"openat2", (PyCFunction)py_openat2, METH_VARARGS, "openat2(dirfd, path, flags, mode, resolve)"},
    {"serve_continue", (PyCFunction)serve_continue, METH_O,
     "answer every notification with CONTINUE (the benchmark's floor)"},
    {NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_decide",
    "Known-point open decisions answered without Python.", -1, module_methods,
};

PyMODINIT_FUNC
PyInit__decide(void)
{
    if (PyType_Ready(&FastType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&FastType);
    if (PyModule_AddObject(m, "FastPath", (PyObject *)&FastType) < 0) {
        Py_DECREF(&FastType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
