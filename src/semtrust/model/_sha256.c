/*
 * semtrust.model._sha256: SHA-256 of a few short byte strings, in one call.
 *
 * Every security event costs four to six SHA-256 computations over 32 to
 * 200 bytes (COE, CELL, coefficient, measurement extension, state). Through
 * hashlib each one allocates a hash object and an OpenSSL EVP context, looks
 * the algorithm up in the provider, and copies the context to finish: about
 * 450 ns, of which the compression itself is a fifth. This calls libcrypto's
 * SHA256_Init/Update/Final on a stack context (the same SHA-NI code hashlib
 * reaches), and hashes the concatenation of its arguments without building
 * it, so `name + task_id + coe_id + cell_id` costs no temporary objects.
 *
 * Only the hashing is here; what is hashed stays in Python
 * (semtrust.model.coefficient), and semtrust.model.digest falls back to
 * hashlib when this module is not built.
 */
#define PY_SSIZE_T_CLEAN
/* SHA256_Init/Update/Final are deprecated in OpenSSL 3 in favour of EVP, whose
 * per-call set-up is exactly the cost this module removes; they remain part of
 * the 3.x API. */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <Python.h>
#include <openssl/sha.h>

static PyObject *
sha256_parts(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    SHA256_CTX ctx;
    unsigned char md[SHA256_DIGEST_LENGTH];
    Py_ssize_t i;

    (void)module;
    for (i = 0; i < nargs; i++) {
        if (!PyBytes_Check(args[i])) {
            PyErr_Format(PyExc_TypeError,
                         "sha256() argument %zd must be bytes, not %.100s",
                         i + 1, Py_TYPE(args[i])->tp_name);
            return NULL;
        }
    }
    if (!SHA256_Init(&ctx)) {
        PyErr_SetString(PyExc_RuntimeError, "SHA256_Init failed");
        return NULL;
    }
    for (i = 0; i < nargs; i++) {
        if (!SHA256_Update(&ctx, PyBytes_AS_STRING(args[i]),
                           (size_t)PyBytes_GET_SIZE(args[i]))) {
            PyErr_SetString(PyExc_RuntimeError, "SHA256_Update failed");
            return NULL;
        }
    }
    if (!SHA256_Final(md, &ctx)) {
        PyErr_SetString(PyExc_RuntimeError, "SHA256_Final failed");
        return NULL;
    }
    return PyBytes_FromStringAndSize((const char *)md, SHA256_DIGEST_LENGTH);
}

static PyMethodDef sha256_methods[] = {
    {"sha256", (PyCFunction)(void (*)(void))sha256_parts, METH_FASTCALL,
     "sha256(*parts: bytes) -> bytes\n\n"
     "The SHA-256 digest of the concatenation of the arguments."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef sha256_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "semtrust.model._sha256",
    .m_doc = "SHA-256 of concatenated byte strings, one call per digest.",
    .m_size = 0,
    .m_methods = sha256_methods,
};

PyMODINIT_FUNC
PyInit__sha256(void)
{
    return PyModuleDef_Init(&sha256_module);
}
