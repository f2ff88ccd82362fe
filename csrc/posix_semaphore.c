/* posix_semaphore.c -- POSIX semaphores: named (sem_open) and unnamed ones
 * placed inside a writable buffer (sem_init with pshared=1).
 *
 * In Python terms:
 *     SEM_NAME_MAX: int        # longest name, in bytes, after the slash
 *     def sem_unlink(name: str) -> None
 *
 *     class NamedSemaphore:                     # one named semaphore handle
 *         def __new__(cls, name: str, flags=0, mode=0o600, value=0)
 *         name: str; closed: bool; value: int; _inflight: int
 *         owner_uid: int | None     # fstat() st_uid of the opened file
 *
 * A new semaphore (O_CREAT|O_EXCL) comes from sem_open(), which initialises
 * the file before it appears under the name.  An existing one is opened
 * here, not by sem_open(): open("/dev/shm/sem.NAME", O_RDWR|O_NOFOLLOW|
 * O_CLOEXEC), fstat() on that descriptor (a regular file at least
 * sizeof(sem_t) long, else EINVAL), then mmap() of that descriptor, so the
 * file whose owner the facade checks (owner_uid) is the file mapped.
 * glibc's sem_open() maps whatever file has the name without any check.
 *         def acquire(self, timeout=None) -> bool
 *         def release(self) -> None
 *         def close(self) -> None               # sem_close(), idempotent
 *         __enter__ (acquire) / __exit__ (release)
 *
 *     class SharedSemaphore:                    # a sem_t inside a buffer
 *         SIZE: int; ALIGN: int                 # sizeof / alignof(sem_t)
 *         def __new__(cls, buffer, offset, value=None)  # None: attach
 *         obj; offset: int; closed: bool; value: int; _inflight: int
 *         def acquire(self, timeout=None) -> bool
 *         def release(self, n=1) -> None
 *         def close(self) -> None               # drops the buffer export
 *         __enter__ (acquire) / __exit__ (release)
 *
 * acquire() tries sem_trywait() first (a user-space atomic: no system call
 * when the semaphore is free), then waits with the GIL released on a
 * CLOCK_MONOTONIC deadline, retrying after EINTR once PyErr_CheckSignals()
 * has run.  `_inflight` counts this process's threads blocked in acquire():
 * close() refuses (RuntimeError) while it is non-zero, because sem_close()
 * or dropping the export under a waiter would pull the memory away.
 *
 * The memory of a sem_t is shared with other processes and so untrusted.
 * glibc aborts the process if a futex call fails unexpectedly, which a
 * garbage futex-flags word provokes; on glibc/64-bit the word is checked
 * before every operation (see sem_layout_ok) and a mismatch raises
 * ValueError instead.
 */
#include "shmipc.h"

#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdalign.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Where glibc keeps named semaphores: open existing ones ourselves. */
#if defined(__linux__)
#define SHMIPC_HAVE_DEV_SHM_SEM 1
#define SHMIPC_SEM_DIR "/dev/shm/sem."
#endif

#ifndef SEM_VALUE_MAX
#define SEM_VALUE_MAX INT_MAX
#endif

#ifndef NAME_MAX
#define NAME_MAX 255
#endif
/* glibc opens /dev/shm/sem.<name without its slash>: NAME_MAX - 4 bytes. */
#define SHMIPC_SEM_NAME_MAX (NAME_MAX - 4)

/* ---- layout check (glibc, 64-bit atomics) ------------------------------
 * glibc's struct new_sem is { uint64_t data; int private; int pad; }:
 * `private` is XORed into the futex operation, 0x80 (FUTEX_PRIVATE_FLAG)
 * for a process-shared semaphore.  Checked at import against sem_init()
 * itself; if this libc disagrees, the check is switched off. */
#if defined(__GLIBC__) && defined(__LP64__)
#define SHMIPC_SEM_LAYOUT_CHECK 1
#define SHMIPC_SEM_PRIVATE_OFFSET 8
static int sem_private_shared = -1;   /* -1: check off */
#endif

static inline int
sem_layout_ok(sem_t *sem)
{
#ifdef SHMIPC_SEM_LAYOUT_CHECK
    if (sem_private_shared >= 0) {
        int priv = __atomic_load_n(
            (int *)((char *)sem + SHMIPC_SEM_PRIVATE_OFFSET), __ATOMIC_RELAXED);
        return priv == sem_private_shared;
    }
#endif
    return 1;
}

static void
probe_sem_layout(void)
{
#ifdef SHMIPC_SEM_LAYOUT_CHECK
    sem_t shared, private_;
    int a, b;
    memset(&shared, 0, sizeof(shared));
    memset(&private_, 0, sizeof(private_));
    if (sizeof(sem_t) < SHMIPC_SEM_PRIVATE_OFFSET + sizeof(int) ||
        sem_init(&shared, 1, 0) != 0 || sem_init(&private_, 0, 0) != 0) {
        return;
    }
    memcpy(&a, (char *)&shared + SHMIPC_SEM_PRIVATE_OFFSET, sizeof(int));
    memcpy(&b, (char *)&private_ + SHMIPC_SEM_PRIVATE_OFFSET, sizeof(int));
    sem_destroy(&shared);
    sem_destroy(&private_);
    if (a != b && a >= 0) {
        sem_private_shared = a;
    }
#endif
}

/* ---- errors ----------------------------------------------------------- */

/* OSError(err, msg[, filename]) with our own message. */
static PyObject *
raise_oserror(int err, PyObject *filename, const char *format, ...)
{
    va_list va;
    PyObject *msg, *args;
    va_start(va, format);
    msg = PyUnicode_FromFormatV(format, va);
    va_end(va);
    if (msg == NULL) {
        return NULL;
    }
    if (filename != NULL) {
        args = Py_BuildValue("(iNO)", err, msg, filename);
    }
    else {
        args = Py_BuildValue("(iN)", err, msg);
    }
    if (args != NULL) {
        shmipc_raise_oserror(args);  /* the errno's subclass on 3.9/3.10 too */
        Py_DECREF(args);
    }
    return NULL;
}

static PyObject *
raise_post_error(int err)
{
    if (err == EOVERFLOW) {
        return raise_oserror(err, NULL,
                             "sem_post() failed: the semaphore is at its "
                             "maximum value (SEM_VALUE_MAX = %d)",
                             (int)SEM_VALUE_MAX);
    }
    return shmipc_raise_errno(err, "sem_post");
}

static PyObject *
raise_bad_layout(void)
{
    PyErr_SetString(PyExc_ValueError,
                    "the memory does not hold an initialised process-shared "
                    "semaphore (never created, or overwritten)");
    return NULL;
}

/* ---- the shared acquire loop -------------------------------------------
 * Returns 1 (acquired), 0 (timed out) or -1 (exception set).  *inflight is
 * raised while the GIL may be released. */
static int
sem_acquire(sem_t *sem, double timeout, int *inflight)
{
    shmipc_deadline d;
    int rc, err, result = -1;

    if (!sem_layout_ok(sem)) {
        raise_bad_layout();
        return -1;
    }
    if (sem_trywait(sem) == 0) {
        return 1;
    }
    err = errno;
    if (err != EAGAIN && err != EINTR) {
        return shmipc_raise_errno_int(err, "sem_trywait");
    }
    if (timeout == 0.0) {
        return 0;
    }
    shmipc_deadline_start(&d, timeout);
    (*inflight)++;
    for (;;) {
        struct timespec abs = {0, 0};
        /* A signal that arrived before we block must not be slept over. */
        if (PyErr_CheckSignals() < 0) {
            goto done;
        }
        if (!sem_layout_ok(sem)) {
            raise_bad_layout();
            goto done;
        }
        if (!d.infinite) {
#ifdef SHMIPC_HAVE_SEM_CLOCKWAIT
            abs = d.deadline;
#else
            shmipc_deadline_realtime(&d, &abs);
#endif
        }
        Py_BEGIN_ALLOW_THREADS
        if (d.infinite) {
            rc = sem_wait(sem);
        }
        else {
#ifdef SHMIPC_HAVE_SEM_CLOCKWAIT
            rc = sem_clockwait(sem, CLOCK_MONOTONIC, &abs);
#else
            rc = sem_timedwait(sem, &abs);
#endif
        }
        err = rc == 0 ? 0 : errno;
        Py_END_ALLOW_THREADS
        if (rc == 0) {
            result = 1;
            goto done;
        }
        if (err == EINTR) {
            continue;  /* the loop head runs the signal handlers */
        }
        if (err == ETIMEDOUT) {
            struct timespec left;
            if (!shmipc_deadline_left(&d, &left)) {
                result = 0;
                goto done;
            }
            continue;  /* the realtime clock jumped: wait out the rest */
        }
        shmipc_raise_errno(err, "sem_timedwait");
        goto done;
    }
done:
    (*inflight)--;
    return result;
}

/* acquire(timeout=None) argument parsing for METH_FASTCALL|METH_KEYWORDS.
 * *timeout < 0 means forever. */
static int
parse_one_arg(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
              const char *kw, const char *fname, PyObject **out)
{
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    *out = NULL;
    if (nargs + nkw > 1) {
        PyErr_Format(PyExc_TypeError,
                     "%s() takes at most 1 argument (%zd given)", fname,
                     nargs + nkw);
        return -1;
    }
    if (nkw == 1 &&
        PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0), kw) != 0) {
        PyErr_Format(PyExc_TypeError,
                     "%s() got an unexpected keyword argument '%U'", fname,
                     PyTuple_GET_ITEM(kwnames, 0));
        return -1;
    }
    if (nargs + nkw == 1) {
        *out = args[0];
    }
    return 0;
}

static int
parse_timeout(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
              double *timeout)
{
    PyObject *obj;
    if (parse_one_arg(args, nargs, kwnames, "timeout", "acquire", &obj) < 0) {
        return -1;
    }
    if (obj == NULL || obj == Py_None) {
        *timeout = -1.0;
        return 0;
    }
    return shmipc_timeout_converter(obj, timeout) ? 0 : -1;
}

static int
check_init_value(PyObject *obj, unsigned int *value)
{
    long v;
    if (PyBool_Check(obj) || !PyLong_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "value must be an int, not %.100s",
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    v = PyLong_AsLong(obj);
    if (v == -1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) {
            return -1;
        }
        PyErr_Clear();
        v = -1;
    }
    if (v < 0 || v > SEM_VALUE_MAX) {
        PyErr_Format(PyExc_ValueError,
                     "initial value must be in 0..SEM_VALUE_MAX (%d)",
                     (int)SEM_VALUE_MAX);
        return -1;
    }
    *value = (unsigned int)v;
    return 0;
}

/* ======================================================================
 * NamedSemaphore
 * ====================================================================== */

typedef struct {
    PyObject_HEAD
    sem_t *sem;          /* the mapping; NULL once closed */
    PyObject *name;      /* str, with its leading slash */
    int inflight;        /* threads blocked in acquire() */
    int mapped;          /* 1: our mmap() (munmap it), 0: sem_open() */
    long long owner_uid; /* st_uid at open (our euid if we created it); -1: unknown */
} NamedSemaphoreObject;

/* Unmap or sem_close() *sem*, however it was obtained. */
static int
named_unmap(sem_t *sem, int mapped)
{
    if (mapped) {
        return munmap((void *)sem, sizeof(sem_t));
    }
    return sem_close(sem);
}

#ifdef SHMIPC_HAVE_DEV_SHM_SEM
/* Open the existing semaphore file for *bname* ("/NAME"), check it on the
 * descriptor and map it.  NULL with an OSError set on failure. */
static sem_t *
open_existing(PyObject *name, const char *bname, long long *owner_uid)
{
    char path[sizeof(SHMIPC_SEM_DIR) + NAME_MAX + 1];
    struct stat st;
    void *addr;
    int fd, err;

    (void)snprintf(path, sizeof(path), "%s%s", SHMIPC_SEM_DIR, bname + 1);
    fd = open(path, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        err = errno;
        if (err == ELOOP) {
            raise_oserror(err, name, "%R is not a POSIX semaphore: %s is a "
                          "symbolic link", name, path);
        }
        else {
            raise_oserror(err, name, "open(%s) failed: %s", path,
                          strerror(err));
        }
        return NULL;
    }
    if (fstat(fd, &st) != 0) {
        err = errno;
        (void)close(fd);
        raise_oserror(err, name, "fstat(%s) failed: %s", path, strerror(err));
        return NULL;
    }
    /* An empty or short file would kill us with SIGBUS at the first touch. */
    if (!S_ISREG(st.st_mode) || st.st_size < (off_t)sizeof(sem_t)) {
        (void)close(fd);
        raise_oserror(EINVAL, name, "%R is not a POSIX semaphore: %s is %s "
                      "of %lld bytes, not a sem_t", name, path,
                      S_ISREG(st.st_mode) ? "a file" : "not a regular file",
                      (long long)st.st_size);
        return NULL;
    }
    addr = mmap(NULL, sizeof(sem_t), PROT_READ | PROT_WRITE, MAP_SHARED, fd,
                0);
    err = errno;
    (void)close(fd);
    if (addr == MAP_FAILED) {
        raise_oserror(err, name, "mmap(%s) failed: %s", path, strerror(err));
        return NULL;
    }
    *owner_uid = (long long)st.st_uid;
    return (sem_t *)addr;
}
#endif

/* The name as bytes for sem_open(), checked; NULL with an error set. */
static PyObject *
encode_name(PyObject *name)
{
    PyObject *bytes;
    const char *s;
    Py_ssize_t n;

    if (!PyUnicode_Check(name)) {
        PyErr_Format(PyExc_TypeError, "name must be a str, not %.100s",
                     Py_TYPE(name)->tp_name);
        return NULL;
    }
    bytes = PyUnicode_EncodeFSDefault(name);
    if (bytes == NULL) {
        return NULL;
    }
    s = PyBytes_AS_STRING(bytes);
    n = PyBytes_GET_SIZE(bytes);
    if (n < 2 || s[0] != '/' || memchr(s + 1, '/', (size_t)n - 1) != NULL ||
        (Py_ssize_t)strlen(s) != n) {
        PyErr_Format(PyExc_ValueError,
                     "invalid semaphore name %R: it must be '/' followed by "
                     "at least one character, with no other '/' and no NUL",
                     name);
        goto error;
    }
    if (n - 1 > SHMIPC_SEM_NAME_MAX) {
        PyErr_Format(PyExc_ValueError,
                     "semaphore name too long: %zd bytes after the slash, at "
                     "most %d allowed", n - 1, SHMIPC_SEM_NAME_MAX);
        goto error;
    }
    return bytes;

error:
    Py_DECREF(bytes);
    return NULL;
}

static int
named_check_open(NamedSemaphoreObject *self)
{
    if (self->sem == NULL) {
        PyErr_SetString(PyExc_ValueError, "operation on a closed semaphore");
        return -1;
    }
    return 0;
}

static PyObject *
NamedSemaphore_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"name", "flags", "mode", "value", NULL};
    PyObject *name = NULL, *value_obj = NULL, *bytes = NULL;
    int flags = 0, mode = 0600, err;
    unsigned int value = 0;
    NamedSemaphoreObject *self = NULL;
    sem_t *sem;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "U|iiO:NamedSemaphore",
                                     kwlist, &name, &flags, &mode,
                                     &value_obj)) {
        return NULL;
    }
    if ((flags & ~(O_CREAT | O_EXCL)) != 0 ||
        ((flags & O_EXCL) && !(flags & O_CREAT))) {
        PyErr_SetString(PyExc_ValueError,
                        "flags must be 0, O_CREAT or O_CREAT|O_EXCL");
        return NULL;
    }
    if (mode < 0 || mode > 0777) {
        PyErr_SetString(PyExc_ValueError, "mode must be in 0..0o777");
        return NULL;
    }
    if (value_obj != NULL && check_init_value(value_obj, &value) < 0) {
        return NULL;
    }
    bytes = encode_name(name);
    if (bytes == NULL) {
        return NULL;
    }
    self = (NamedSemaphoreObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        goto error;
    }
    self->sem = NULL;
    self->inflight = 0;
    self->mapped = 0;
    self->owner_uid = -1;
    Py_INCREF(name);
    self->name = name;
#ifdef SHMIPC_HAVE_DEV_SHM_SEM
    /* Only a new semaphore comes from sem_open(); O_CREAT alone is "create,
     * or else open the existing one", and the existing one is opened here. */
    sem = SEM_FAILED;
    err = EEXIST;
    if (flags & O_CREAT) {
        sem = sem_open(PyBytes_AS_STRING(bytes), O_CREAT | O_EXCL,
                       (mode_t)mode, value);
        err = errno;
        if (sem != SEM_FAILED) {
            self->owner_uid = (long long)geteuid();
        }
    }
    if (sem == SEM_FAILED && err == EEXIST && !(flags & O_EXCL)) {
        sem = open_existing(name, PyBytes_AS_STRING(bytes), &self->owner_uid);
        if (sem == NULL) {
            goto error;
        }
        self->mapped = 1;
    }
#else
    if (flags & O_CREAT) {
        sem = sem_open(PyBytes_AS_STRING(bytes), flags, (mode_t)mode, value);
    }
    else {
        sem = sem_open(PyBytes_AS_STRING(bytes), 0);
    }
    err = errno;
#endif
    if (sem == SEM_FAILED) {
        raise_oserror(err, name, "sem_open() failed: %s", strerror(err));
        goto error;
    }
    self->sem = sem;
    if (!sem_layout_ok(sem)) {
        raise_bad_layout();
        goto error;  /* dealloc closes it */
    }
    Py_DECREF(bytes);
    return (PyObject *)self;

error:
    Py_XDECREF(bytes);
    Py_XDECREF(self);
    return NULL;
}

static void
NamedSemaphore_dealloc(NamedSemaphoreObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    if (self->sem != NULL) {
        sem_t *sem = self->sem;
        self->sem = NULL;
        (void)named_unmap(sem, self->mapped);
    }
    Py_CLEAR(self->name);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyObject *
NamedSemaphore_acquire(NamedSemaphoreObject *self, PyObject *const *args,
                       Py_ssize_t nargs, PyObject *kwnames)
{
    double timeout;
    int rc;
    if (parse_timeout(args, nargs, kwnames, &timeout) < 0 ||
        named_check_open(self) < 0) {
        return NULL;
    }
    rc = sem_acquire(self->sem, timeout, &self->inflight);
    if (rc < 0) {
        return NULL;
    }
    return PyBool_FromLong(rc);
}

static PyObject *
NamedSemaphore_release(NamedSemaphoreObject *self, PyObject *Py_UNUSED(ignored))
{
    if (named_check_open(self) < 0) {
        return NULL;
    }
    if (!sem_layout_ok(self->sem)) {
        return raise_bad_layout();
    }
    if (sem_post(self->sem) != 0) {
        return raise_post_error(errno);
    }
    Py_RETURN_NONE;
}

static PyObject *
NamedSemaphore_enter(NamedSemaphoreObject *self, PyObject *Py_UNUSED(ignored))
{
    int rc;
    if (named_check_open(self) < 0) {
        return NULL;
    }
    rc = sem_acquire(self->sem, -1.0, &self->inflight);
    if (rc < 0) {
        return NULL;
    }
    Py_INCREF(self);
    return (PyObject *)self;
}

static PyObject *
NamedSemaphore_exit(NamedSemaphoreObject *self, PyObject *args)
{
    return NamedSemaphore_release(self, NULL);
}

static PyObject *
NamedSemaphore_close(NamedSemaphoreObject *self, PyObject *Py_UNUSED(ignored))
{
    sem_t *sem = self->sem;
    if (sem == NULL) {
        Py_RETURN_NONE;  /* idempotent */
    }
    if (self->inflight > 0) {
        PyErr_Format(PyExc_RuntimeError,
                     "cannot close semaphore %R: %d thread(s) are blocked in "
                     "acquire() on it", self->name, self->inflight);
        return NULL;
    }
    self->sem = NULL;
    if (named_unmap(sem, self->mapped) != 0) {
        return shmipc_raise_errno(errno, self->mapped ? "munmap" : "sem_close");
    }
    Py_RETURN_NONE;
}

static PyObject *
NamedSemaphore_get_name(NamedSemaphoreObject *self, void *closure)
{
    Py_INCREF(self->name);
    return self->name;
}

static PyObject *
NamedSemaphore_get_closed(NamedSemaphoreObject *self, void *closure)
{
    return PyBool_FromLong(self->sem == NULL);
}

static PyObject *
get_value(sem_t *sem)
{
    int value;
    if (!sem_layout_ok(sem)) {
        return raise_bad_layout();
    }
    if (sem_getvalue(sem, &value) != 0) {
        return shmipc_raise_errno(errno, "sem_getvalue");
    }
    return PyLong_FromLong(value);
}

static PyObject *
NamedSemaphore_get_value(NamedSemaphoreObject *self, void *closure)
{
    if (named_check_open(self) < 0) {
        return NULL;
    }
    return get_value(self->sem);
}

static PyObject *
NamedSemaphore_get_owner_uid(NamedSemaphoreObject *self, void *closure)
{
    if (self->owner_uid < 0) {
        Py_RETURN_NONE;
    }
    return PyLong_FromLongLong(self->owner_uid);
}

static PyObject *
NamedSemaphore_get_inflight(NamedSemaphoreObject *self, void *closure)
{
    return PyLong_FromLong(self->inflight);
}

static PyMethodDef NamedSemaphore_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))NamedSemaphore_acquire,
     METH_FASTCALL | METH_KEYWORDS,
     "acquire($self, timeout=None)\n--\n\n"
     "sem_wait with a timeout in seconds; True "
     "when acquired, False on timeout.  timeout=0 never blocks."},
    {"release", (PyCFunction)NamedSemaphore_release, METH_NOARGS,
     "release($self)\n--\n\nsem_post."},
    {"close", (PyCFunction)NamedSemaphore_close, METH_NOARGS,
     "close($self)\n--\n\n"
     "sem_close (or munmap) this handle.  Idempotent; RuntimeError while "
     "threads are blocked in acquire()."},
    {"__enter__", (PyCFunction)NamedSemaphore_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)NamedSemaphore_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef NamedSemaphore_getset[] = {
    {"name", (getter)NamedSemaphore_get_name, NULL,
     "the semaphore's name, with its leading slash", NULL},
    {"closed", (getter)NamedSemaphore_get_closed, NULL,
     "True once close() ran", NULL},
    {"value", (getter)NamedSemaphore_get_value, NULL,
     "the current value (sem_getvalue; 0 while others wait)", NULL},
    {"_inflight", (getter)NamedSemaphore_get_inflight, NULL,
     "threads of this process blocked in acquire() on this object", NULL},
    {"owner_uid", (getter)NamedSemaphore_get_owner_uid, NULL,
     "owner uid of the semaphore's file, from fstat() on the descriptor "
     "it was mapped from (our euid if this handle created it); None where "
     "the platform gives no file", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot NamedSemaphore_slots[] = {
    {Py_tp_new, NamedSemaphore_new},
    {Py_tp_dealloc, NamedSemaphore_dealloc},
    {Py_tp_methods, NamedSemaphore_methods},
    {Py_tp_getset, NamedSemaphore_getset},
    {Py_tp_doc, "A named POSIX semaphore handle (sem_open), low level."},
    {0, NULL},
};

static PyType_Spec NamedSemaphore_spec = {
    .name = "shmipc._core.NamedSemaphore",
    .basicsize = sizeof(NamedSemaphoreObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .slots = NamedSemaphore_slots,
};

static PyObject *
core_sem_unlink(PyObject *module, PyObject *name)
{
    PyObject *bytes = encode_name(name);
    int err;
    if (bytes == NULL) {
        return NULL;
    }
    if (sem_unlink(PyBytes_AS_STRING(bytes)) != 0) {
        err = errno;
        Py_DECREF(bytes);
        return raise_oserror(err, name, "sem_unlink() failed: %s",
                             strerror(err));
    }
    Py_DECREF(bytes);
    Py_RETURN_NONE;
}

/* ======================================================================
 * SharedSemaphore
 * ====================================================================== */

typedef struct {
    PyObject_HEAD
    sem_t *sem;          /* inside view.buf; NULL once closed */
    Py_buffer view;      /* writable export held while open */
    Py_ssize_t offset;
    int inflight;        /* threads blocked in acquire() */
} SharedSemaphoreObject;

static int
shared_check_open(SharedSemaphoreObject *self)
{
    if (self->sem == NULL) {
        PyErr_SetString(PyExc_ValueError, "operation on a closed semaphore");
        return -1;
    }
    return 0;
}

static PyObject *
SharedSemaphore_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"buffer", "offset", "value", NULL};
    PyObject *buffer, *value_obj = Py_None;
    Py_ssize_t offset;
    unsigned int value = 0;
    SharedSemaphoreObject *self = NULL;
    char *addr;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "On|O:SharedSemaphore",
                                     kwlist, &buffer, &offset, &value_obj)) {
        return NULL;
    }
    if (value_obj != Py_None && check_init_value(value_obj, &value) < 0) {
        return NULL;
    }
    self = (SharedSemaphoreObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->sem = NULL;
    self->inflight = 0;
    self->offset = offset;
    if (PyObject_GetBuffer(buffer, &self->view, PyBUF_WRITABLE) < 0) {
        self->view.obj = NULL;
        goto error;
    }
    if (offset < 0 || offset > self->view.len - (Py_ssize_t)sizeof(sem_t)) {
        PyErr_Format(PyExc_ValueError,
                     "offset %zd out of range: a semaphore needs %d bytes "
                     "and the buffer has %zd", offset, (int)sizeof(sem_t),
                     self->view.len);
        goto error;
    }
    addr = (char *)self->view.buf + offset;
    if ((uintptr_t)addr % alignof(sem_t) != 0) {
        PyErr_Format(PyExc_ValueError,
                     "offset %zd is not aligned: the semaphore's address must "
                     "be a multiple of %d", offset, (int)alignof(sem_t));
        goto error;
    }
    if (value_obj != Py_None) {
        if (sem_init((sem_t *)addr, 1, value) != 0) {
            shmipc_raise_errno(errno, "sem_init");
            goto error;
        }
    }
    else if (!sem_layout_ok((sem_t *)addr)) {
        PyErr_Format(PyExc_ValueError,
                     "no initialised process-shared semaphore at offset %zd "
                     "(not created yet, or overwritten)", offset);
        goto error;
    }
    self->sem = (sem_t *)addr;
    return (PyObject *)self;

error:
    Py_DECREF(self);
    return NULL;
}

static int
SharedSemaphore_traverse(SharedSemaphoreObject *self, visitproc visit,
                         void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->view.obj);
    return 0;
}

static void
SharedSemaphore_dealloc(SharedSemaphoreObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    self->sem = NULL;
    if (self->view.obj != NULL) {
        PyBuffer_Release(&self->view);
    }
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyObject *
SharedSemaphore_acquire(SharedSemaphoreObject *self, PyObject *const *args,
                        Py_ssize_t nargs, PyObject *kwnames)
{
    double timeout = -1.0;
    int rc;
    if (nargs != 0 || kwnames != NULL) {
        if (parse_timeout(args, nargs, kwnames, &timeout) < 0) {
            return NULL;
        }
    }
    if (shared_check_open(self) < 0) {
        return NULL;
    }
    rc = sem_acquire(self->sem, timeout, &self->inflight);
    if (rc < 0) {
        return NULL;
    }
    return PyBool_FromLong(rc);
}

static PyObject *
post_n(sem_t *sem, Py_ssize_t n)
{
    Py_ssize_t i;
    if (!sem_layout_ok(sem)) {
        return raise_bad_layout();
    }
    for (i = 0; i < n; i++) {
        if (sem_post(sem) != 0) {
            int err = errno;
            if (err == EOVERFLOW && n > 1) {
                return raise_oserror(err, NULL,
                                     "sem_post() failed after %zd of %zd "
                                     "posts: the semaphore is at its maximum "
                                     "value (SEM_VALUE_MAX = %d)", i, n,
                                     (int)SEM_VALUE_MAX);
            }
            return raise_post_error(err);
        }
    }
    Py_RETURN_NONE;
}

static PyObject *
SharedSemaphore_release(SharedSemaphoreObject *self, PyObject *const *args,
                        Py_ssize_t nargs, PyObject *kwnames)
{
    Py_ssize_t n = 1;
    /* kwnames may be an empty tuple rather than NULL (PEP 590). */
    if (nargs != 0 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0)) {
        PyObject *obj;
        if (parse_one_arg(args, nargs, kwnames, "n", "release", &obj) < 0) {
            return NULL;
        }
        if (PyBool_Check(obj) || !PyLong_Check(obj)) {
            PyErr_Format(PyExc_TypeError, "n must be an int, not %.100s",
                         Py_TYPE(obj)->tp_name);
            return NULL;
        }
        n = PyLong_AsSsize_t(obj);
        if (n == -1 && PyErr_Occurred()) {
            if (!PyErr_ExceptionMatches(PyExc_OverflowError)) {
                return NULL;
            }
            PyErr_Clear();
            n = PY_SSIZE_T_MAX;
        }
        if (n < 1 || n > SEM_VALUE_MAX) {
            PyErr_Format(PyExc_ValueError,
                         "n must be in 1..SEM_VALUE_MAX (%d)",
                         (int)SEM_VALUE_MAX);
            return NULL;
        }
    }
    if (shared_check_open(self) < 0) {
        return NULL;
    }
    if (n == 1) {
        if (!sem_layout_ok(self->sem)) {
            return raise_bad_layout();
        }
        if (sem_post(self->sem) != 0) {
            return raise_post_error(errno);
        }
        Py_RETURN_NONE;
    }
    return post_n(self->sem, n);
}

static PyObject *
SharedSemaphore_enter(SharedSemaphoreObject *self, PyObject *Py_UNUSED(ignored))
{
    int rc;
    if (shared_check_open(self) < 0) {
        return NULL;
    }
    rc = sem_acquire(self->sem, -1.0, &self->inflight);
    if (rc < 0) {
        return NULL;
    }
    Py_INCREF(self);
    return (PyObject *)self;
}

static PyObject *
SharedSemaphore_exit(SharedSemaphoreObject *self, PyObject *args)
{
    return SharedSemaphore_release(self, NULL, 0, NULL);
}

static PyObject *
SharedSemaphore_close(SharedSemaphoreObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->sem == NULL) {
        Py_RETURN_NONE;  /* idempotent */
    }
    if (self->inflight > 0) {
        PyErr_Format(PyExc_RuntimeError,
                     "cannot close the semaphore at offset %zd: %d thread(s) "
                     "are blocked in acquire() on it", self->offset,
                     self->inflight);
        return NULL;
    }
    self->sem = NULL;
    PyBuffer_Release(&self->view);  /* sets view.obj to NULL */
    Py_RETURN_NONE;
}

static PyObject *
SharedSemaphore_get_value(SharedSemaphoreObject *self, void *closure)
{
    if (shared_check_open(self) < 0) {
        return NULL;
    }
    return get_value(self->sem);
}

static PyObject *
SharedSemaphore_get_closed(SharedSemaphoreObject *self, void *closure)
{
    return PyBool_FromLong(self->sem == NULL);
}

static PyObject *
SharedSemaphore_get_obj(SharedSemaphoreObject *self, void *closure)
{
    PyObject *obj = self->sem != NULL ? self->view.obj : Py_None;
    Py_INCREF(obj);
    return obj;
}

static PyObject *
SharedSemaphore_get_offset(SharedSemaphoreObject *self, void *closure)
{
    return PyLong_FromSsize_t(self->offset);
}

static PyObject *
SharedSemaphore_get_inflight(SharedSemaphoreObject *self, void *closure)
{
    return PyLong_FromLong(self->inflight);
}

static PyMethodDef SharedSemaphore_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))SharedSemaphore_acquire,
     METH_FASTCALL | METH_KEYWORDS,
     "acquire($self, timeout=None)\n--\n\n"
     "sem_wait with a timeout in seconds; True "
     "when acquired, False on timeout.  timeout=0 never blocks."},
    {"release", (PyCFunction)(void (*)(void))SharedSemaphore_release,
     METH_FASTCALL | METH_KEYWORDS,
     "release($self, n=1)\n--\n\nsem_post n times."},
    {"close", (PyCFunction)SharedSemaphore_close, METH_NOARGS,
     "close($self)\n--\n\n"
     "Drop the buffer export.  Idempotent; RuntimeError while "
     "threads are blocked in acquire()."},
    {"__enter__", (PyCFunction)SharedSemaphore_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)SharedSemaphore_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef SharedSemaphore_getset[] = {
    {"value", (getter)SharedSemaphore_get_value, NULL,
     "the current value (sem_getvalue; 0 while others wait)", NULL},
    {"closed", (getter)SharedSemaphore_get_closed, NULL,
     "True once close() ran", NULL},
    {"obj", (getter)SharedSemaphore_get_obj, NULL,
     "the buffer object holding the semaphore (None once closed)", NULL},
    {"offset", (getter)SharedSemaphore_get_offset, NULL,
     "byte offset of the sem_t in the buffer", NULL},
    {"_inflight", (getter)SharedSemaphore_get_inflight, NULL,
     "threads of this process blocked in acquire() on this object", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot SharedSemaphore_slots[] = {
    {Py_tp_new, SharedSemaphore_new},
    {Py_tp_dealloc, SharedSemaphore_dealloc},
    {Py_tp_traverse, SharedSemaphore_traverse},
    {Py_tp_methods, SharedSemaphore_methods},
    {Py_tp_getset, SharedSemaphore_getset},
    {Py_tp_doc, "A process-shared unnamed POSIX semaphore inside a writable "
                "buffer (low level)."},
    {0, NULL},
};

static PyType_Spec SharedSemaphore_spec = {
    .name = "shmipc._core.SharedSemaphore",
    .basicsize = sizeof(SharedSemaphoreObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = SharedSemaphore_slots,
};

/* ---- module ----------------------------------------------------------- */

static PyMethodDef posix_semaphore_functions[] = {
    {"sem_unlink", core_sem_unlink, METH_O,
     "sem_unlink(name, /)\n--\n\nRemove a named semaphore (its name must start "
     "with '/')."},
    {NULL, NULL, 0, NULL},
};

static int
set_type_int(PyTypeObject *type, const char *name, long value)
{
    PyObject *v = PyLong_FromLong(value);
    int rc;
    if (v == NULL) {
        return -1;
    }
    rc = PyObject_SetAttrString((PyObject *)type, name, v);
    Py_DECREF(v);
    return rc;
}

int
shmipc_add_posix_semaphore(PyObject *module, shmipc_state *st)
{
    /* Once per process: interpreters may run this concurrently. */
    static pthread_once_t probed = PTHREAD_ONCE_INIT;
    (void)pthread_once(&probed, probe_sem_layout);

    st->named_semaphore_type = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &NamedSemaphore_spec, NULL);
    if (st->named_semaphore_type == NULL ||
        PyModule_AddType(module, st->named_semaphore_type) < 0) {
        return -1;
    }
    st->shared_semaphore_type = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &SharedSemaphore_spec, NULL);
    if (st->shared_semaphore_type == NULL ||
        set_type_int(st->shared_semaphore_type, "SIZE",
                     (long)sizeof(sem_t)) < 0 ||
        set_type_int(st->shared_semaphore_type, "ALIGN",
                     (long)alignof(sem_t)) < 0 ||
        PyModule_AddType(module, st->shared_semaphore_type) < 0) {
        return -1;
    }
    if (PyModule_AddFunctions(module, posix_semaphore_functions) < 0 ||
        PyModule_AddIntConstant(module, "SEM_NAME_MAX",
                                SHMIPC_SEM_NAME_MAX) < 0 ||
        PyModule_AddIntConstant(module, "O_CREAT", O_CREAT) < 0 ||
        PyModule_AddIntConstant(module, "O_EXCL", O_EXCL) < 0) {
        return -1;
    }
    return 0;
}
