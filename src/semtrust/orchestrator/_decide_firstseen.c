/* First-seen opens (enforcing): the file_open coefficient computed here from what
 * Python pushed, and the Python methods that push it. */
#include "_decide.h"

int
firstseen_on(const Fast *f)
{
    return f->emulate && f->max_hash > 0 && f->npoints > 0 && !f->created_full;
}

const devrec_t *
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

const point_t *
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

uint64_t
key_hash(uint64_t dev, uint64_t ino)
{
    uint64_t h = mix(mix(0x452821E638D01377ULL, dev), ino);
    return h ? h : 1;
}

/* Is h in the open-addressed set of `slots` entries (a power of two, never full)? */
int
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

int
created_has(const Fast *f, uint64_t h)
{
    return f->created != NULL && set_has(f->created, CREATED_SLOTS, h);
}

int
cdir_has(const Fast *f, uint64_t h)
{
    return set_has(f->cdirs, CDIR_SLOTS, h);
}

/* Is a prefix of the task-view name (cut before a '/', as CreatedTable.dirs_above
 * walks it) the name of a created directory? Then Python describes it. */
int
under_created_dir(const Fast *f, const char *shown, size_t len)
{
    if (f->ncdirs == 0)
        return 0;
    for (size_t i = 1; i < len; i++)
        if (shown[i] == '/' && cdir_has(f, path_hash(shown, i)))
            return 1;
    return 0;
}

void
put_u32(unsigned char *b, uint32_t v)
{
    b[0] = (unsigned char)v;
    b[1] = (unsigned char)(v >> 8);
    b[2] = (unsigned char)(v >> 16);
    b[3] = (unsigned char)(v >> 24);
}

/* SHA-256 of the content read through fd (pread: no offset moves), as fileinfo's
 * digest; -1 when the file is not at most max bytes to its end, or a read fails. */
int
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
int
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
const char *
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

PyObject *
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

PyObject *
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

PyObject *
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

PyObject *
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

PyObject *
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

PyObject *
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
