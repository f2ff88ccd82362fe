/* mutex.c -- a robust, process-shared pthread mutex inside a writable buffer.
 *
 * In Python terms:
 *     class OwnerDiedError(RuntimeError): ...   # raised with the lock held
 *
 *     class RobustMutex:          # PTHREAD_PROCESS_SHARED, PTHREAD_MUTEX_ROBUST,
 *                                 # PTHREAD_MUTEX_ERRORCHECK
 *         SIZE: int; ALIGN: int                 # sizeof / alignof(pthread_mutex_t)
 *         def __new__(cls, buffer, offset, init=False)  # init: pthread_mutex_init
 *         obj; offset: int; closed: bool; _inflight: int; _held: bool
 *         def acquire(self, timeout=None) -> bool   # OwnerDiedError: lock held
 *         def release(self) -> None
 *         def mark_consistent(self) -> None         # pthread_mutex_consistent
 *         def close(self) -> None                   # drops the buffer export
 *         __enter__ (acquire) / __exit__ (release)
 *
 * acquire() first tries to lock without blocking (see try_lock), then
 * waits with the GIL released.  pthread_mutex_clocklock() never returns EINTR (glibc restarts
 * the futex wait), so the wait is cut into slices of SHMIPC_MUTEX_SLICE_NS
 * and PyErr_CheckSignals() runs between them: Ctrl-C raises
 * KeyboardInterrupt within a slice.
 *
 * Lifetime: while a thread holds a robust mutex, glibc keeps it on that
 * thread's robust list, a linked list threaded through the mutexes
 * themselves.  Unmapping the memory of a held mutex makes the next lock or
 * unlock of any robust mutex in that thread write into unmapped memory.  So
 * the object keeps a buffer export for its whole life, close() refuses while
 * this object holds the lock or a thread is blocked in acquire(), and
 * dealloc unlocks a lock it still holds (or, if another thread holds it
 * through this object, keeps the export forever rather than risk a crash).
 */
#include "shmipc.h"

#include <pthread.h>
#include <stdalign.h>
#include <string.h>

/* Longest uninterrupted wait: the Ctrl-C latency of a blocked acquire(). */
#define SHMIPC_MUTEX_SLICE_NS (20 * 1000 * 1000L)

/* glibc keeps the mutex type in __data.__kind; a mutex we did not initialise
 * (zeroed, garbage, overwritten) would take another code path, some of which
 * assert.  The expected value comes from pthread_mutex_init itself. */
#if defined(__GLIBC__)
#define SHMIPC_MUTEX_KIND_CHECK 1
static int expected_kind = -1;  /* -1: check off */
#endif

typedef struct {
    PyObject_HEAD
    pthread_mutex_t *mutex;     /* inside view.buf; NULL once closed */
    Py_buffer view;             /* writable export held while open */
    Py_ssize_t offset;
    PyObject *owner_died_error; /* the module's OwnerDiedError */
    pthread_t holder;           /* valid while held */
    int held;                   /* locked through this object */
    int inflight;               /* threads blocked in acquire() */
    unsigned long generation;   /* fork generation of held/inflight */
} RobustMutexObject;

/* A forked child has none of its parent's threads: none of them waits or
 * holds through this object there (the lock word itself is the parent's). */
static void
sync_generation(RobustMutexObject *self)
{
    unsigned long gen = shmipc_fork_generation();
    if (self->generation != gen) {
        self->generation = gen;
        self->inflight = 0;
        self->held = 0;
    }
}

static int
init_attr(pthread_mutexattr_t *attr)
{
    int rc = pthread_mutexattr_init(attr);
    if (rc != 0) {
        return rc;
    }
    if ((rc = pthread_mutexattr_setpshared(attr, PTHREAD_PROCESS_SHARED)) != 0 ||
        (rc = pthread_mutexattr_setrobust(attr, PTHREAD_MUTEX_ROBUST)) != 0 ||
        (rc = pthread_mutexattr_settype(attr, PTHREAD_MUTEX_ERRORCHECK)) != 0) {
        pthread_mutexattr_destroy(attr);
        return rc;
    }
    return 0;
}

static void
probe_mutex_kind(void)
{
#ifdef SHMIPC_MUTEX_KIND_CHECK
    pthread_mutexattr_t attr;
    pthread_mutex_t m;
    if (init_attr(&attr) != 0) {
        return;
    }
    memset(&m, 0, sizeof(m));
    if (pthread_mutex_init(&m, &attr) == 0) {
        if (m.__data.__kind != 0) {
            expected_kind = m.__data.__kind;
        }
        pthread_mutex_destroy(&m);
    }
    pthread_mutexattr_destroy(&attr);
#endif
}

static inline int
kind_ok(pthread_mutex_t *m)
{
#ifdef SHMIPC_MUTEX_KIND_CHECK
    if (expected_kind >= 0) {
        return __atomic_load_n(&m->__data.__kind, __ATOMIC_RELAXED) ==
               expected_kind;
    }
#endif
    return 1;
}

static PyObject *
raise_bad_kind(RobustMutexObject *self)
{
    PyErr_Format(PyExc_ValueError,
                 "no initialised robust mutex at offset %zd (not created "
                 "yet, or overwritten)", self->offset);
    return NULL;
}

static int
check_open(RobustMutexObject *self)
{
    if (self->mutex == NULL) {
        PyErr_SetString(PyExc_ValueError, "operation on a closed mutex");
        return -1;
    }
    if (!kind_ok(self->mutex)) {
        raise_bad_kind(self);
        return -1;
    }
    return 0;
}

/* The module state, from our base type in the MRO (subclasses have none). */
static void RobustMutex_dealloc(RobustMutexObject *self);

static shmipc_state *
state_from_type(PyTypeObject *type)
{
    PyObject *mro = type->tp_mro;
    Py_ssize_t i;
    if (mro != NULL) {
        for (i = 0; i < PyTuple_GET_SIZE(mro); i++) {
            PyTypeObject *t = (PyTypeObject *)PyTuple_GET_ITEM(mro, i);
            if (t->tp_dealloc == (destructor)RobustMutex_dealloc) {
                PyObject *module = PyType_GetModule(t);
                return module == NULL ? NULL : shmipc_get_state(module);
            }
        }
    }
    PyErr_SetString(PyExc_TypeError, "not a RobustMutex type");
    return NULL;
}

static PyObject *
RobustMutex_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"buffer", "offset", "init", NULL};
    PyObject *buffer;
    Py_ssize_t offset;
    int init = 0, rc;
    RobustMutexObject *self = NULL;
    shmipc_state *st;
    char *addr;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "On|p:RobustMutex", kwlist,
                                     &buffer, &offset, &init)) {
        return NULL;
    }
    st = state_from_type(type);
    if (st == NULL) {
        return NULL;
    }
    self = (RobustMutexObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->mutex = NULL;
    self->held = 0;
    self->inflight = 0;
    self->generation = shmipc_fork_generation();
    self->offset = offset;
    Py_INCREF(st->owner_died_error);
    self->owner_died_error = st->owner_died_error;
    if (PyObject_GetBuffer(buffer, &self->view, PyBUF_WRITABLE) < 0) {
        self->view.obj = NULL;
        goto error;
    }
    if (offset < 0 ||
        offset > self->view.len - (Py_ssize_t)sizeof(pthread_mutex_t)) {
        PyErr_Format(PyExc_ValueError,
                     "offset %zd out of range: a mutex needs %d bytes and "
                     "the buffer has %zd", offset,
                     (int)sizeof(pthread_mutex_t), self->view.len);
        goto error;
    }
    addr = (char *)self->view.buf + offset;
    if ((uintptr_t)addr % alignof(pthread_mutex_t) != 0) {
        PyErr_Format(PyExc_ValueError,
                     "offset %zd is not aligned: the mutex's address must be "
                     "a multiple of %d", offset, (int)alignof(pthread_mutex_t));
        goto error;
    }
    if (init) {
        pthread_mutexattr_t attr;
        rc = init_attr(&attr);
        if (rc != 0) {
            shmipc_raise_errno(rc, "pthread_mutexattr_init");
            goto error;
        }
        rc = pthread_mutex_init((pthread_mutex_t *)addr, &attr);
        pthread_mutexattr_destroy(&attr);
        if (rc != 0) {
            shmipc_raise_errno(rc, "pthread_mutex_init");
            goto error;
        }
    }
    else if (!kind_ok((pthread_mutex_t *)addr)) {
        raise_bad_kind(self);
        goto error;
    }
    self->mutex = (pthread_mutex_t *)addr;
    return (PyObject *)self;

error:
    Py_DECREF(self);
    return NULL;
}

static int
RobustMutex_traverse(RobustMutexObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->view.obj);
    Py_VISIT(self->owner_died_error);
    return 0;
}

static void
RobustMutex_dealloc(RobustMutexObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    int keep_mapped = 0;

    PyObject_GC_UnTrack(self);
    if (self->mutex != NULL && self->held) {
        /* Nobody can release it through this object any more. */
        if (pthread_equal(self->holder, pthread_self())) {
            int rc = pthread_mutex_unlock(self->mutex);
            /* EPERM: not ours after all (released elsewhere, or a forked
             * child): not on our robust list either. */
            keep_mapped = rc != 0 && rc != EPERM;
        }
        else {
            keep_mapped = 1;  /* on another thread's robust list */
        }
    }
    self->mutex = NULL;
    if (self->view.obj != NULL && !keep_mapped) {
        PyBuffer_Release(&self->view);
    }
    Py_CLEAR(self->owner_died_error);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

/* The outcome of a lock call that did not time out. */
static PyObject *
lock_result(RobustMutexObject *self, int rc, const char *call)
{
    switch (rc) {
    case 0:
        self->held = 1;
        self->holder = pthread_self();
        Py_RETURN_TRUE;
    case EOWNERDEAD:
        self->held = 1;
        self->holder = pthread_self();
        PyErr_SetString(self->owner_died_error,
                        "the previous owner of the mutex died while holding "
                        "it; the lock is now held by this thread: repair the "
                        "state it protects, call mark_consistent(), then "
                        "release()");
        return NULL;
    case ENOTRECOVERABLE: {
        PyObject *args = Py_BuildValue(
            "(is)", ENOTRECOVERABLE,
            "the mutex is unrecoverable: an owner died holding it and the "
            "next owner released it without mark_consistent(); it can only "
            "be re-created");
        if (args != NULL) {
            shmipc_raise_oserror(args);
            Py_DECREF(args);
        }
        return NULL;
    }
    case EDEADLK:
        PyErr_SetString(PyExc_RuntimeError,
                        "the mutex is already held by this thread (it is "
                        "not recursive)");
        return NULL;
    default:
        return shmipc_raise_errno(rc, call);
    }
}

/* A lock attempt that never blocks.  Not pthread_mutex_trylock(): glibc's
 * (2.36 at least) returns ENOTRECOVERABLE for a robust mutex yet leaves it
 * locked by the caller (it tests `oldval == id` after a CAS that left
 * oldval 0), so the next call says EDEADLK and every other locker waits
 * forever.  A timed lock with a deadline in the past takes the same fast
 * path (one CAS when free; measured 15 ns against 13) and unlocks properly;
 * it answers ETIMEDOUT when the mutex is busy. */
static inline int
try_lock(pthread_mutex_t *m)
{
    static const struct timespec past = {0, 0};
#ifdef SHMIPC_HAVE_PTHREAD_CLOCKLOCK
    return pthread_mutex_clocklock(m, CLOCK_MONOTONIC, &past);
#else
    return pthread_mutex_timedlock(m, &past);
#endif
}

static PyObject *
mutex_acquire(RobustMutexObject *self, double timeout)
{
    shmipc_deadline d;
    int rc;
    PyObject *result = NULL;

    rc = try_lock(self->mutex);
    if (rc != ETIMEDOUT) {
        return lock_result(self, rc, "pthread_mutex_clocklock");
    }
    if (timeout == 0.0) {
        Py_RETURN_FALSE;
    }
    shmipc_deadline_start(&d, timeout);
    self->inflight++;
    for (;;) {
        struct timespec left, abs;
        long slice = SHMIPC_MUTEX_SLICE_NS;
        if (PyErr_CheckSignals() < 0) {
            goto done;
        }
        if (!kind_ok(self->mutex)) {
            raise_bad_kind(self);
            goto done;
        }
        if (!d.infinite) {
            if (!shmipc_deadline_left(&d, &left)) {
                Py_INCREF(Py_False);
                result = Py_False;
                goto done;
            }
            if (left.tv_sec == 0 && left.tv_nsec < slice) {
                slice = left.tv_nsec;
            }
        }
#ifdef SHMIPC_HAVE_PTHREAD_CLOCKLOCK
        clock_gettime(CLOCK_MONOTONIC, &abs);
#else
        clock_gettime(CLOCK_REALTIME, &abs);
#endif
        abs.tv_nsec += slice;
        if (abs.tv_nsec >= 1000000000L) {
            abs.tv_sec += 1;
            abs.tv_nsec -= 1000000000L;
        }
        Py_BEGIN_ALLOW_THREADS
#ifdef SHMIPC_HAVE_PTHREAD_CLOCKLOCK
        rc = pthread_mutex_clocklock(self->mutex, CLOCK_MONOTONIC, &abs);
#else
        rc = pthread_mutex_timedlock(self->mutex, &abs);
#endif
        Py_END_ALLOW_THREADS
        if (rc != ETIMEDOUT && rc != EINTR) {
            result = lock_result(self, rc, "pthread_mutex_clocklock");
            goto done;
        }
    }
done:
    self->inflight--;
    return result;
}

static PyObject *
RobustMutex_acquire(RobustMutexObject *self, PyObject *const *args,
                    Py_ssize_t nargs, PyObject *kwnames)
{
    double timeout = -1.0;
    /* kwnames may be an empty tuple rather than NULL (PEP 590). */
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    if (nargs + nkw != 0) {
        PyObject *obj;
        if (nargs + nkw != 1) {
            PyErr_Format(PyExc_TypeError,
                         "acquire() takes at most 1 argument (%zd given)",
                         nargs + nkw);
            return NULL;
        }
        if (nkw == 1 &&
            PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0),
                                             "timeout") != 0) {
            PyErr_Format(PyExc_TypeError,
                         "acquire() got an unexpected keyword argument '%U'",
                         PyTuple_GET_ITEM(kwnames, 0));
            return NULL;
        }
        obj = args[0];  /* the one argument, positional or keyword */
        if (!shmipc_timeout_converter(obj, &timeout)) {
            return NULL;
        }
    }
    if (check_open(self) < 0) {
        return NULL;
    }
    return mutex_acquire(self, timeout);
}

static PyObject *
RobustMutex_release(RobustMutexObject *self, PyObject *Py_UNUSED(ignored))
{
    int rc;
    if (check_open(self) < 0) {
        return NULL;
    }
    rc = pthread_mutex_unlock(self->mutex);
    if (rc == 0) {
        self->held = 0;
        Py_RETURN_NONE;
    }
    if (rc == EPERM) {
        if (self->held && pthread_equal(self->holder, pthread_self())) {
            self->held = 0;  /* it was released through another object */
        }
        PyErr_SetString(PyExc_RuntimeError,
                        "release() of a mutex this thread does not hold");
        return NULL;
    }
    return shmipc_raise_errno(rc, "pthread_mutex_unlock");
}

static PyObject *
RobustMutex_mark_consistent(RobustMutexObject *self,
                            PyObject *Py_UNUSED(ignored))
{
    int rc;
    if (check_open(self) < 0) {
        return NULL;
    }
    if (!self->held || !pthread_equal(self->holder, pthread_self())) {
        PyErr_SetString(PyExc_RuntimeError,
                        "mark_consistent() needs the lock held by this "
                        "thread, taken through this object (acquire() raised "
                        "OwnerDiedError)");
        return NULL;
    }
    rc = pthread_mutex_consistent(self->mutex);
    if (rc == EINVAL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "mark_consistent(): the mutex is not in the "
                        "owner-died state");
        return NULL;
    }
    if (rc != 0) {
        return shmipc_raise_errno(rc, "pthread_mutex_consistent");
    }
    Py_RETURN_NONE;
}

static PyObject *
RobustMutex_enter(RobustMutexObject *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *r;
    if (check_open(self) < 0) {
        return NULL;
    }
    r = mutex_acquire(self, -1.0);
    if (r == NULL) {
        if (PyErr_ExceptionMatches(self->owner_died_error) && self->held) {
            /* A with-block whose __enter__ raises never reaches __exit__:
             * holding the lock here would keep it from every process, and
             * releasing it inconsistent would make it unrecoverable.  So
             * the block gives it back consistent, and says so. */
            PyErr_Clear();
            (void)pthread_mutex_consistent(self->mutex);
            (void)pthread_mutex_unlock(self->mutex);
            self->held = 0;
            PyErr_SetString(self->owner_died_error,
                            "the previous owner of the mutex died while "
                            "holding it; `with` marked it consistent and "
                            "released it.  To repair the state it protects "
                            "while holding the lock, use acquire(), which "
                            "raises this with the lock held");
        }
        return NULL;
    }
    Py_DECREF(r);
    Py_INCREF(self);
    return (PyObject *)self;
}

static PyObject *
RobustMutex_exit(RobustMutexObject *self, PyObject *args)
{
    return RobustMutex_release(self, NULL);
}

static PyObject *
RobustMutex_close(RobustMutexObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->mutex == NULL) {
        Py_RETURN_NONE;  /* idempotent */
    }
    sync_generation(self);
    if (self->inflight > 0) {
        PyErr_Format(PyExc_RuntimeError,
                     "cannot close the mutex at offset %zd: %d thread(s) are "
                     "blocked in acquire() on it", self->offset,
                     self->inflight);
        return NULL;
    }
    if (self->held) {
        PyErr_Format(PyExc_RuntimeError,
                     "cannot close the mutex at offset %zd while it is held "
                     "through this object: release() it first", self->offset);
        return NULL;
    }
    self->mutex = NULL;
    PyBuffer_Release(&self->view);
    Py_RETURN_NONE;
}

static PyObject *
RobustMutex_get_closed(RobustMutexObject *self, void *closure)
{
    return PyBool_FromLong(self->mutex == NULL);
}

static PyObject *
RobustMutex_get_obj(RobustMutexObject *self, void *closure)
{
    PyObject *obj = self->mutex != NULL ? self->view.obj : Py_None;
    Py_INCREF(obj);
    return obj;
}

static PyObject *
RobustMutex_get_offset(RobustMutexObject *self, void *closure)
{
    return PyLong_FromSsize_t(self->offset);
}

static PyObject *
RobustMutex_get_inflight(RobustMutexObject *self, void *closure)
{
    return PyLong_FromLong(self->inflight);
}

static PyObject *
RobustMutex_get_held(RobustMutexObject *self, void *closure)
{
    return PyBool_FromLong(self->held);
}

static PyMethodDef RobustMutex_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))RobustMutex_acquire,
     METH_FASTCALL | METH_KEYWORDS,
     "acquire($self, timeout=None)\n--\n\nLock; True when acquired, False on "
     "timeout.  Raises OwnerDiedError, with the lock held, when the previous "
     "owner died holding it."},
    {"release", (PyCFunction)RobustMutex_release, METH_NOARGS,
     "release($self)\n--\n\nUnlock (RuntimeError if this thread does not hold "
     "it)."},
    {"mark_consistent", (PyCFunction)RobustMutex_mark_consistent,
     METH_NOARGS,
     "mark_consistent($self)\n--\n\n"
     "After OwnerDiedError: declare the protected "
     "state repaired (pthread_mutex_consistent)."},
    {"close", (PyCFunction)RobustMutex_close, METH_NOARGS,
     "close($self)\n--\n\n"
     "Drop the buffer export.  Idempotent; RuntimeError while "
     "held through this object or while threads wait in acquire()."},
    {"__enter__", (PyCFunction)RobustMutex_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)RobustMutex_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef RobustMutex_getset[] = {
    {"closed", (getter)RobustMutex_get_closed, NULL,
     "True once close() ran", NULL},
    {"obj", (getter)RobustMutex_get_obj, NULL,
     "the buffer object holding the mutex (None once closed)", NULL},
    {"offset", (getter)RobustMutex_get_offset, NULL,
     "byte offset of the pthread_mutex_t in the buffer", NULL},
    {"_inflight", (getter)RobustMutex_get_inflight, NULL,
     "threads of this process blocked in acquire() on this object", NULL},
    {"_held", (getter)RobustMutex_get_held, NULL,
     "True while locked through this object", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot RobustMutex_slots[] = {
    {Py_tp_new, RobustMutex_new},
    {Py_tp_dealloc, RobustMutex_dealloc},
    {Py_tp_traverse, RobustMutex_traverse},
    {Py_tp_methods, RobustMutex_methods},
    {Py_tp_getset, RobustMutex_getset},
    {Py_tp_doc, "A robust process-shared pthread mutex inside a writable "
                "buffer (low level)."},
    {0, NULL},
};

static PyType_Spec RobustMutex_spec = {
    .name = "shmipc._core.RobustMutex",
    .basicsize = sizeof(RobustMutexObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = RobustMutex_slots,
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
shmipc_add_mutex(PyObject *module, shmipc_state *st)
{
    /* Once per process: interpreters may run this concurrently. */
    static pthread_once_t probed = PTHREAD_ONCE_INIT;
    (void)pthread_once(&probed, probe_mutex_kind);

    st->owner_died_error = PyErr_NewExceptionWithDoc(
        "shmipc.OwnerDiedError",
        "The previous owner of a RobustMutex died while holding it.\n\n"
        "Raised by acquire() WITH THE LOCK HELD: repair the protected state, "
        "call mark_consistent(), then release().  Releasing without "
        "mark_consistent() makes the mutex unrecoverable.  In a with-block,\n"
        "__enter__ marks it consistent and releases it before raising.",
        PyExc_RuntimeError, NULL);
    if (st->owner_died_error == NULL ||
        PyModule_AddObjectRef(module, "OwnerDiedError",
                              st->owner_died_error) < 0) {
        return -1;
    }
    st->robust_mutex_type = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &RobustMutex_spec, NULL);
    if (st->robust_mutex_type == NULL ||
        set_type_int(st->robust_mutex_type, "SIZE",
                     (long)sizeof(pthread_mutex_t)) < 0 ||
        set_type_int(st->robust_mutex_type, "ALIGN",
                     (long)alignof(pthread_mutex_t)) < 0 ||
        PyModule_AddType(module, st->robust_mutex_type) < 0) {
        return -1;
    }
    return 0;
}
