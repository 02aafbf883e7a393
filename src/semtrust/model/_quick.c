/*
 * semtrust.model._quick: the per-object work of the quick coefficient path.
 *
 * On a trajectory whose COE and inode objects are all distinct (a long-running
 * host's export) no digest can come from a cache, and decoding each object
 * with orjson, converting its nine numbers with the Python strtoll and packing
 * them costs about ten microseconds a line, more than decoding the line. Here
 * the raw JSON text of one object is scanned, its numbers converted with the
 * reference's C strtoll rules and the result hashed or packed, in one call.
 *
 * These functions only ever answer for the plain shape: a JSON object whose
 * keys and values are all strings of printable ASCII without escapes. For
 * anything else (nesting, non-string values, escapes, non-ASCII text, missing
 * keys, out-of-range numbers, malformed JSON) they return None and the Python
 * code (semtrust.model.quick, semtrust.events.numbers) decides, so an answer
 * from here is always the answer the Python code gives;
 * tests/unit/test_quick.py holds the two to that.
 */
#define PY_SSIZE_T_CLEAN
#define OPENSSL_SUPPRESS_DEPRECATED
#include <Python.h>
#include <openssl/sha.h>
#include <stdint.h>
#include <string.h>

#define TMPFS_MAGIC 0x01021994u

typedef struct {
    const char *p;
    Py_ssize_t n;
} span;

static int
json_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* A string without escapes starting at *pp (on the opening quote). */
static int
plain_string(const char **pp, const char *end, span *out)
{
    const char *p = *pp + 1;
    const char *start = p;

    while (p < end) {
        unsigned char c = (unsigned char)*p;
        if (c == '"') {
            out->p = start;
            out->n = p - start;
            *pp = p + 1;
            return 1;
        }
        if (c == '\\' || c < 0x20 || c >= 0x80)
            return 0;
        p++;
    }
    return 0;
}

/*
 * Scan a flat object of string values; the value of keys[i] goes to vals[i]
 * (the last one wins for a repeated key, as in the JSON decoders). Returns 1
 * only if the shape is plain and every key is present.
 */
static int
scan_object(const char *p, Py_ssize_t len, const char *const *keys, int nkeys, span *vals)
{
    const char *end = p + len;
    unsigned int seen = 0;
    int i;

    while (p < end && json_space(*p))
        p++;
    if (p >= end || *p != '{')
        return 0;
    p++;
    while (p < end && json_space(*p))
        p++;
    if (p < end && *p == '}')
        return 0; /* empty: keys are missing */
    for (;;) {
        span key, value;
        if (p >= end || *p != '"' || !plain_string(&p, end, &key))
            return 0;
        while (p < end && json_space(*p))
            p++;
        if (p >= end || *p != ':')
            return 0;
        p++;
        while (p < end && json_space(*p))
            p++;
        if (p >= end || *p != '"' || !plain_string(&p, end, &value))
            return 0;
        for (i = 0; i < nkeys; i++) {
            if ((Py_ssize_t)strlen(keys[i]) == key.n && memcmp(keys[i], key.p, (size_t)key.n) == 0) {
                vals[i] = value;
                seen |= 1u << i;
                break;
            }
        }
        while (p < end && json_space(*p))
            p++;
        if (p >= end)
            return 0;
        if (*p == '}') {
            p++;
            break;
        }
        if (*p != ',')
            return 0;
        p++;
        while (p < end && json_space(*p))
            p++;
    }
    while (p < end && json_space(*p))
        p++;
    return p == end && seen == (1u << nkeys) - 1;
}

static int
digit_value(char c, int base)
{
    int d;
    if (c >= '0' && c <= '9')
        d = c - '0';
    else if (c >= 'a' && c <= 'f')
        d = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F')
        d = c - 'A' + 10;
    else
        return -1;
    return d < base ? d : -1;
}

/*
 * C strtoll(s, NULL, 0) on n bytes: leading white space, a sign, then a
 * hexadecimal ("0x" and at least one hex digit), octal (leading 0) or decimal
 * number, read up to the first character that does not belong; no digits is
 * 0. Returns 0 on ERANGE, 1 with *out set otherwise.
 */
static int
c_strtoll(const char *s, Py_ssize_t n, int64_t *out)
{
    const char *end = s + n;
    int negative = 0, base = 10, d;
    uint64_t mag = 0;

    while (s < end && (*s == ' ' || (*s >= '\t' && *s <= '\r')))
        s++;
    if (s < end && (*s == '+' || *s == '-')) {
        negative = *s == '-';
        s++;
    }
    if (s < end && *s == '0') {
        if (s + 2 < end && (s[1] == 'x' || s[1] == 'X') && digit_value(s[2], 16) >= 0) {
            base = 16;
            s += 2;
        } else {
            base = 8;
        }
    }
    for (; s < end && (d = digit_value(*s, base)) >= 0; s++) {
        if (mag > (UINT64_MAX - (uint64_t)d) / (uint64_t)base)
            return 0;
        mag = mag * (uint64_t)base + (uint64_t)d;
    }
    if (negative) {
        if (mag > (uint64_t)INT64_MAX + 1u)
            return 0;
        *out = mag == (uint64_t)INT64_MAX + 1u ? INT64_MIN : -(int64_t)mag;
    } else {
        if (mag > (uint64_t)INT64_MAX)
            return 0;
        *out = (int64_t)mag;
    }
    return 1;
}

static int
unsigned_field(span v, uint64_t max, uint64_t *out)
{
    int64_t value;
    if (!c_strtoll(v.p, v.n, &value) || value < 0 || (uint64_t)value > max)
        return 0;
    *out = (uint64_t)value;
    return 1;
}

static void
put32(unsigned char *b, uint64_t v)
{
    b[0] = (unsigned char)v;
    b[1] = (unsigned char)(v >> 8);
    b[2] = (unsigned char)(v >> 16);
    b[3] = (unsigned char)(v >> 24);
}

static int
bytes_arg(PyObject *arg, const char **p, Py_ssize_t *n)
{
    if (!PyBytes_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "expected bytes, not %.100s", Py_TYPE(arg)->tp_name);
        return 0;
    }
    *p = PyBytes_AS_STRING(arg);
    *n = PyBytes_GET_SIZE(arg);
    return 1;
}

static const char *const COE_KEYS[] = {
    "uid", "euid", "suid", "gid", "egid", "sgid", "fsuid", "fsgid", "capeff",
};

/* coe_id(raw) -> H(COE) or None; the reference hashes fsuid in the fsgid slot. */
static PyObject *
coe_id(PyObject *module, PyObject *arg)
{
    const char *p;
    Py_ssize_t n;
    span vals[9];
    uint64_t ids[8];
    int64_t capeff;
    unsigned char pre[40], md[SHA256_DIGEST_LENGTH];
    int i;

    (void)module;
    if (!bytes_arg(arg, &p, &n))
        return NULL;
    if (!scan_object(p, n, COE_KEYS, 9, vals))
        Py_RETURN_NONE;
    for (i = 0; i < 8; i++) {
        if (!unsigned_field(vals[i], 0xFFFFFFFFu, &ids[i]))
            Py_RETURN_NONE;
    }
    if (!c_strtoll(vals[8].p, vals[8].n, &capeff))
        Py_RETURN_NONE;
    ids[7] = ids[6];
    for (i = 0; i < 8; i++)
        put32(pre + 4 * i, ids[i]);
    put32(pre + 32, (uint64_t)capeff);
    put32(pre + 36, (uint64_t)capeff >> 32);
    SHA256(pre, sizeof pre, md);
    return PyBytes_FromStringAndSize((const char *)md, SHA256_DIGEST_LENGTH);
}

static const char *const INODE_KEYS[] = {"uid", "gid", "mode", "s_magic", "s_id", "s_uuid"};

/* inode_preimage(raw) -> the inode's 62 bytes of a file description, or None. */
static PyObject *
inode_preimage(PyObject *module, PyObject *arg)
{
    const char *p;
    Py_ssize_t n;
    span vals[6];
    uint64_t uid, gid, mode, magic;
    unsigned char pre[62];
    int i;

    (void)module;
    if (!bytes_arg(arg, &p, &n))
        return NULL;
    if (!scan_object(p, n, INODE_KEYS, 6, vals))
        Py_RETURN_NONE;
    if (!unsigned_field(vals[0], 0xFFFFFFFFu, &uid) || !unsigned_field(vals[1], 0xFFFFFFFFu, &gid)
        || !unsigned_field(vals[2], 0xFFFFu, &mode)
        || !unsigned_field(vals[3], 0xFFFFFFFFu, &magic))
        Py_RETURN_NONE;
    if (vals[4].n > 31 || vals[5].n != 32)
        Py_RETURN_NONE;
    memset(pre, 0, sizeof pre);
    put32(pre, uid);
    put32(pre + 4, gid);
    pre[8] = (unsigned char)mode;
    pre[9] = (unsigned char)(mode >> 8);
    put32(pre + 10, magic);
    memcpy(pre + 14, vals[4].p, (size_t)vals[4].n);
    for (i = 0; i < 16; i++) {
        int hi = digit_value(vals[5].p[2 * i], 16), lo = digit_value(vals[5].p[2 * i + 1], 16);
        if (hi < 0 || lo < 0)
            Py_RETURN_NONE;
        if (magic != TMPFS_MAGIC)
            pre[46 + i] = (unsigned char)(hi << 4 | lo);
    }
    return PyBytes_FromStringAndSize((const char *)pre, sizeof pre);
}

/* strtoll(text) -> int, or None when out of range or not plain text. */
static PyObject *
strtoll_text(PyObject *module, PyObject *arg)
{
    const char *s;
    Py_ssize_t n;
    int64_t value;

    (void)module;
    if (!PyUnicode_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "expected str, not %.100s", Py_TYPE(arg)->tp_name);
        return NULL;
    }
    s = PyUnicode_AsUTF8AndSize(arg, &n);
    if (s == NULL) { /* lone surrogates: the Python rules decide */
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    if (!c_strtoll(s, n, &value))
        Py_RETURN_NONE;
    return PyLong_FromLongLong((long long)value);
}

static PyMethodDef quick_methods[] = {
    {"coe_id", coe_id, METH_O,
     "coe_id(raw: bytes) -> bytes | None\n\n"
     "H(COE) of a COE object's JSON text; None unless it is a plain, valid COE."},
    {"inode_preimage", inode_preimage, METH_O,
     "inode_preimage(raw: bytes) -> bytes | None\n\n"
     "The inode's bytes of a file description from its JSON text; None unless plain and valid."},
    {"strtoll", strtoll_text, METH_O,
     "strtoll(text: str) -> int | None\n\n"
     "C strtoll(text, NULL, 0); None when out of range."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef quick_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "semtrust.model._quick",
    .m_doc = "Native digests of plain COE and inode objects for the quick coefficient path.",
    .m_size = 0,
    .m_methods = quick_methods,
};

PyMODINIT_FUNC
PyInit__quick(void)
{
    return PyModuleDef_Init(&quick_module);
}
