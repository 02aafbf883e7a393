/*
 * Shared by the _decide extension's parts: _decide.c (the loop, the decision and the
 * Python type), _decide_tables.c (what Python recorded: threads, entries, paths) and
 * _decide_firstseen.c (first-seen opens: the coefficient computed here).
 */
#ifndef SEMTRUST_DECIDE_H
#define SEMTRUST_DECIDE_H
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
    int selffd;          /* /proc/self/fd (O_PATH), for our descriptors' names */
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

/* Shared between the parts, not exported from the module. */
#define DECIDE_HIDDEN __attribute__((visibility("hidden")))

DECIDE_HIDDEN int64_t now_ns(void);
DECIDE_HIDDEN uint64_t mix(uint64_t h, uint64_t v);
DECIDE_HIDDEN uint64_t entry_hash(uint64_t token, uint32_t kflags, const ident_t *id, const char *link, size_t linklen);
DECIDE_HIDDEN void ident_of(const struct stat *st, ident_t *id);
DECIDE_HIDDEN int ident_eq(const ident_t *a, const ident_t *b);
DECIDE_HIDDEN void clear_entries(Fast *f);
DECIDE_HIDDEN uint64_t path_hash(const char *p, size_t len);
DECIDE_HIDDEN int path_seen(Fast *f, uint64_t h, int insert);
DECIDE_HIDDEN int hash_seen(uint64_t *set, Py_ssize_t *n, uint64_t h, int insert);
DECIDE_HIDDEN void drop_roots(Fast *f);
DECIDE_HIDDEN void clear_threads(Fast *f);
DECIDE_HIDDEN thread_t * thread_slot(Fast *f, int tid, int insert);
DECIDE_HIDDEN const entry_t * find_entry(Fast *f, uint64_t token, uint32_t kflags, const ident_t *id, const char *link, size_t linklen);
DECIDE_HIDDEN uint32_t fs_magic(Fast *f, int fd, uint64_t dev, int *ok);
DECIDE_HIDDEN int ensure_slot(Fast *self, uint32_t slot);
DECIDE_HIDDEN PyObject * Fast_register(Fast *self, PyObject *args);
DECIDE_HIDDEN PyObject * Fast_forget_thread(Fast *self, PyObject *arg);
DECIDE_HIDDEN PyObject * Fast_drop_roots(Fast *self, PyObject *unused);
DECIDE_HIDDEN PyObject * Fast_forget_threads(Fast *self, PyObject *unused);
DECIDE_HIDDEN PyObject * Fast_clear(Fast *self, PyObject *unused);
DECIDE_HIDDEN PyObject * Fast_learn(Fast *self, PyObject *args);
DECIDE_HIDDEN PyObject * Fast_described(Fast *self, PyObject *args);
DECIDE_HIDDEN PyObject * Fast_note_path(Fast *self, PyObject *arg);
DECIDE_HIDDEN PyObject * Fast_drain(Fast *self, PyObject *unused);

DECIDE_HIDDEN int firstseen_on(const Fast *f);
DECIDE_HIDDEN const devrec_t * devrec_find(const Fast *f, uint64_t dev);
DECIDE_HIDDEN const point_t * point_find(const Fast *f, const unsigned char *co);
DECIDE_HIDDEN uint64_t key_hash(uint64_t dev, uint64_t ino);
DECIDE_HIDDEN int set_has(const uint64_t *set, uint32_t slots, uint64_t h);
DECIDE_HIDDEN int created_has(const Fast *f, uint64_t h);
DECIDE_HIDDEN int cdir_has(const Fast *f, uint64_t h);
DECIDE_HIDDEN int under_created_dir(const Fast *f, const char *shown, size_t len);
DECIDE_HIDDEN void put_u32(unsigned char *b, uint32_t v);
DECIDE_HIDDEN int hash_content(int fd, int64_t max, unsigned char *md);
DECIDE_HIDDEN int file_open_coefficient(const Fast *f, const tokinfo_t *tk, const devrec_t *dr, int fd, const struct stat *st, uint32_t kflags, const char *shown, size_t shownlen, unsigned char *co);
DECIDE_HIDDEN const char * plain_name(const Fast *f, const tokinfo_t *tk, const char *link, size_t ll, const struct stat *st, size_t *outlen);
DECIDE_HIDDEN PyObject * Fast_token_info(Fast *self, PyObject *args);
DECIDE_HIDDEN PyObject * Fast_add_device(Fast *self, PyObject *args);
DECIDE_HIDDEN PyObject * Fast_add_point(Fast *self, PyObject *args);
DECIDE_HIDDEN PyObject * Fast_set_pseudonyms(Fast *self, PyObject *arg);
DECIDE_HIDDEN PyObject * Fast_add_created(Fast *self, PyObject *args);
DECIDE_HIDDEN PyObject * Fast_set_created_dirs(Fast *self, PyObject *arg);

#endif
