/* What Python recorded for the native path: threads, known decisions (entries),
 * decided paths, devices; and the Python methods that keep them. */
#include "_decide.h"

int64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

uint64_t
mix(uint64_t h, uint64_t v)
{
    h ^= v + 0x9E3779B97F4A7C15ULL + (h << 6) + (h >> 2);
    h *= 0xFF51AFD7ED558CCDULL;
    return h ^ (h >> 33);
}

uint64_t
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

void
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

int
ident_eq(const ident_t *a, const ident_t *b)
{
    return a->dev == b->dev && a->ino == b->ino && a->mode == b->mode && a->uid == b->uid
        && a->gid == b->gid && a->size == b->size && a->mtime == b->mtime
        && a->mtime_ns == b->mtime_ns && a->ctime == b->ctime && a->ctime_ns == b->ctime_ns;
}

void
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

uint64_t
path_hash(const char *p, size_t len)
{
    uint64_t h = 0xCBF29CE484222325ULL;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)p[i]) * 0x100000001B3ULL;
    h = mix(h, len);
    return h ? h : 1;
}

int
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
int
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

void
drop_roots(Fast *f)
{
    for (Py_ssize_t i = 0; i < THREAD_SLOTS; i++) {
        if (f->threads[i].tid != 0 && f->threads[i].root >= 0) {
            close(f->threads[i].root);
            f->threads[i].root = -1;
        }
    }
}

void
clear_threads(Fast *f)
{
    drop_roots(f);
    memset(f->threads, 0, sizeof(f->threads));
    f->nthreads = 0;
}

thread_t *
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

const entry_t *
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

uint32_t
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

/* Room for counting hits of point slot ``slot``; -1 with a Python error. */
int
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

PyObject *
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

PyObject *
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

PyObject *
Fast_drop_roots(Fast *self, PyObject *unused)
{
    drop_roots(self);
    Py_RETURN_NONE;
}

PyObject *
Fast_forget_threads(Fast *self, PyObject *unused)
{
    clear_threads(self);
    Py_RETURN_NONE;
}

PyObject *
Fast_clear(Fast *self, PyObject *unused)
{
    clear_entries(self);
    clear_threads(self);
    Py_RETURN_NONE;
}

PyObject *
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

PyObject *
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

PyObject *
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

PyObject *
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
