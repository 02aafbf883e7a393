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
#include "_decide.h"

/* ------------------------------------------------------------ the decision */

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
    snprintf(self, sizeof(self), "%d", obj);
    ssize_t ll = readlinkat(f->selffd, self, link, sizeof(link));
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
        fd = openat(f->selffd, self, rflags);
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
            snprintf(self2, sizeof(self2), "%d", fd);
            ssize_t ll2 = readlinkat(f->selffd, self2, link2, sizeof(link2));
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
    /* Our own descriptors' names and reopens go through this directory: one lookup
     * of "N" instead of a walk through /proc and the "self" link every time. */
    if (self->selffd <= 0)
        self->selffd = open("/proc/self/fd", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (self->selffd < 0) {
        PyErr_SetFromErrnoWithFilename(PyExc_OSError, "/proc/self/fd");
        return -1;
    }
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
    if (self->selffd > 0)
        close(self->selffd);
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
