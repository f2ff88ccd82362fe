/* atomics.c -- atomic 32/64-bit operations on the memory of a writable buffer.
 *
 * In Python terms:
 *     def fence() -> None                         # seq_cst thread fence
 *
 *     class AtomicView:                           # holds a writable export
 *         def __new__(cls, buffer)
 *         closed: bool; obj; __len__
 *         def load32(self, off) -> int            # acquire
 *         def load64(self, off) -> int
 *         def store32(self, off, v) -> None       # release
 *         def store64(self, off, v) -> None
 *         def store32_seq_cst(self, off, v) -> None
 *         def store64_seq_cst(self, off, v) -> None
 *         def exchange32(self, off, v) -> int     # seq_cst; returns the old value
 *         def exchange64(self, off, v) -> int
 *         def compare_exchange32(self, off, expected, desired) -> bool  # strong
 *         def compare_exchange64(self, off, expected, desired) -> bool
 *         def fetch_add32(self, off, delta) -> int  # seq_cst, mod 2**32
 *         def fetch_add64(self, off, delta) -> int  # seq_cst, mod 2**64
 *         def fence(self) -> None
 *         def release(self) -> None; close = release   # idempotent
 *         __enter__ / __exit__ (release)
 *
 * Offsets are bytes from the start of the buffer; the address must be
 * naturally aligned (4 or 8) and the access inside the buffer, else
 * ValueError.  Values are unsigned and must fit (OverflowError); a delta
 * may be negative (-2**31 <= delta < 2**32 for 32 bits, -2**63 <= delta <
 * 2**64 for 64).  These methods are a pure-Python ring's hot path: plain
 * METH_FASTCALL, no argument parser.  The operations are the gcc/clang
 * __atomic builtins on the mapped memory; they must be lock-free, or the
 * lock would be private to each process.
 */
#include "shmipc.h"

#include <limits.h>
#include <string.h>

#if !defined(__GNUC__)
#error "atomics.c needs the gcc/clang __atomic builtins"
#endif
_Static_assert(__atomic_always_lock_free(sizeof(uint32_t), 0),
               "32-bit atomics must be lock-free to work across processes");
_Static_assert(__atomic_always_lock_free(sizeof(uint64_t), 0),
               "64-bit atomics must be lock-free to work across processes");

typedef struct {
    PyObject_HEAD
    char *buf;          /* view.buf; NULL once released */
    Py_ssize_t len;
    Py_buffer view;
    unsigned long generation;   /* fork generation of inflight */
    int inflight;               /* threads of this process in a futex wait */
} AtomicViewObject;

static PyObject *
AtomicView_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"buffer", NULL};
    PyObject *buffer;
    AtomicViewObject *self;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O:AtomicView", kwlist,
                                     &buffer)) {
        return NULL;
    }
    self = (AtomicViewObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->buf = NULL;
    self->len = 0;
    if (PyObject_GetBuffer(buffer, &self->view, PyBUF_WRITABLE) < 0) {
        self->view.obj = NULL;
        Py_DECREF(self);
        return NULL;
    }
    self->buf = (char *)self->view.buf;
    self->len = self->view.len;
    self->generation = shmipc_fork_generation();
    self->inflight = 0;
    return (PyObject *)self;
}

static int
AtomicView_traverse(AtomicViewObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->view.obj);
    return 0;
}

static void
AtomicView_dealloc(AtomicViewObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    self->buf = NULL;
    if (self->view.obj != NULL) {
        PyBuffer_Release(&self->view);
    }
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

/* ---- argument helpers (error paths out of line) ------------------------ */

static int
raise_closed(void)
{
    PyErr_SetString(PyExc_ValueError, "operation on a released AtomicView");
    return -1;
}

static void *
bad_offset(AtomicViewObject *self, Py_ssize_t off, int width)
{
    if (PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) {
            return NULL;  /* TypeError: not an int */
        }
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError,
                     "offset out of range for a %d-byte atomic in a %zd-byte "
                     "buffer", width, self->len);
        return NULL;
    }
    if (off < 0 || off > self->len - width) {
        PyErr_Format(PyExc_ValueError,
                     "offset %zd out of range for a %d-byte atomic in a "
                     "%zd-byte buffer", off, width, self->len);
        return NULL;
    }
    PyErr_Format(PyExc_ValueError,
                 "offset %zd is not %d-byte aligned (the buffer starts at "
                 "address %p; the address must be a multiple of %d)",
                 off, width, (void *)self->buf, width);
    return NULL;
}

/* The address of a `width`-byte atomic at args[0], or NULL with an error. */
static inline void *
addr_of(AtomicViewObject *self, PyObject *off_obj, int width)
{
    Py_ssize_t off;
    char *p;
    if (self->buf == NULL) {
        raise_closed();
        return NULL;
    }
    off = PyLong_AsSsize_t(off_obj);
    if (off < 0 || off > self->len - width) {
        return bad_offset(self, off, width);
    }
    p = self->buf + off;
    if (((uintptr_t)p & (uintptr_t)(width - 1)) != 0) {
        return bad_offset(self, off, width);
    }
    return p;
}

static int
bad_nargs(const char *name, Py_ssize_t expected, Py_ssize_t nargs)
{
    PyErr_Format(PyExc_TypeError, "%s() takes exactly %zd argument%s (%zd "
                 "given)", name, expected, expected == 1 ? "" : "s", nargs);
    return -1;
}

#define CHECK_NARGS(name, n)                    \
    if (nargs != (n)) {                         \
        bad_nargs(name, (n), nargs);            \
        return NULL;                            \
    }

/* An unsigned value that must fit in 32 / 64 bits. */
static inline int
value32(PyObject *obj, uint32_t *out)
{
    unsigned long v = PyLong_AsUnsignedLong(obj);
    if (v == (unsigned long)-1 && PyErr_Occurred()) {
        return -1;
    }
    if (v > UINT32_MAX) {
        PyErr_SetString(PyExc_OverflowError,
                        "value does not fit in 32 unsigned bits");
        return -1;
    }
    *out = (uint32_t)v;
    return 0;
}

static inline int
value64(PyObject *obj, uint64_t *out)
{
    unsigned long long v = PyLong_AsUnsignedLongLong(obj);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        return -1;
    }
    *out = (uint64_t)v;
    return 0;
}

/* A delta: signed or unsigned, wrapped modulo 2**bits. */
static int
delta_of(PyObject *obj, int bits, uint64_t *out)
{
    long long s;
    int overflow = 0;
    if (!PyLong_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "delta must be an int, not %.100s",
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    s = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (s == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (overflow == 0) {
        if (bits == 32 && (s < INT32_MIN || s > (long long)UINT32_MAX)) {
            goto range;
        }
        *out = (uint64_t)s;
        return 0;
    }
    if (overflow > 0 && bits == 64) {
        unsigned long long u = PyLong_AsUnsignedLongLong(obj);
        if (u == (unsigned long long)-1 && PyErr_Occurred()) {
            PyErr_Clear();
            goto range;
        }
        *out = (uint64_t)u;
        return 0;
    }
range:
    if (bits == 32) {
        PyErr_SetString(PyExc_OverflowError,
                        "delta must be in -2**31 .. 2**32-1");
    }
    else {
        PyErr_SetString(PyExc_OverflowError,
                        "delta must be in -2**63 .. 2**64-1");
    }
    return -1;
}

/* ---- the operations ---------------------------------------------------- */

static PyObject *
AtomicView_load32(AtomicViewObject *self, PyObject *const *args,
                  Py_ssize_t nargs)
{
    uint32_t *p;
    CHECK_NARGS("load32", 1);
    if ((p = addr_of(self, args[0], 4)) == NULL) {
        return NULL;
    }
    return PyLong_FromUnsignedLong(__atomic_load_n(p, __ATOMIC_ACQUIRE));
}

static PyObject *
AtomicView_load64(AtomicViewObject *self, PyObject *const *args,
                  Py_ssize_t nargs)
{
    uint64_t *p;
    CHECK_NARGS("load64", 1);
    if ((p = addr_of(self, args[0], 8)) == NULL) {
        return NULL;
    }
    return PyLong_FromUnsignedLongLong(__atomic_load_n(p, __ATOMIC_ACQUIRE));
}

#define DEFINE_STORE(NAME, BITS, ORDER)                                      \
    static PyObject *                                                        \
    AtomicView_##NAME(AtomicViewObject *self, PyObject *const *args,         \
                      Py_ssize_t nargs)                                      \
    {                                                                        \
        uint##BITS##_t *p, v;                                                \
        CHECK_NARGS(#NAME, 2);                                               \
        if ((p = addr_of(self, args[0], BITS / 8)) == NULL ||                \
            value##BITS(args[1], &v) < 0) {                                  \
            return NULL;                                                     \
        }                                                                    \
        __atomic_store_n(p, v, ORDER);                                       \
        Py_RETURN_NONE;                                                      \
    }

DEFINE_STORE(store32, 32, __ATOMIC_RELEASE)
DEFINE_STORE(store64, 64, __ATOMIC_RELEASE)
DEFINE_STORE(store32_seq_cst, 32, __ATOMIC_SEQ_CST)
DEFINE_STORE(store64_seq_cst, 64, __ATOMIC_SEQ_CST)

/* The waker's half of a Dekker handshake: publish a value, then look at a
 * flag another process raises before it sleeps.  Both accesses are seq_cst,
 * so the load cannot be satisfied before the store is visible (x86 would
 * otherwise let it pass the store through the store buffer); whichever of
 * the two processes comes second sees the other's write.  One call instead
 * of two because it sits on every message's path. */
static PyObject *
AtomicView_store64_then_load32(AtomicViewObject *self, PyObject *const *args,
                               Py_ssize_t nargs)
{
    uint64_t *p, v;
    uint32_t *flag;
    CHECK_NARGS("store64_then_load32", 3);
    if ((p = addr_of(self, args[0], 8)) == NULL || value64(args[1], &v) < 0 ||
        (flag = addr_of(self, args[2], 4)) == NULL) {
        return NULL;
    }
    __atomic_store_n(p, v, __ATOMIC_SEQ_CST);
    return PyLong_FromUnsignedLong(__atomic_load_n(flag, __ATOMIC_SEQ_CST));
}

/* The sleeper's half of the same handshake: raise my "sleeping" flag, then
 * look at the index the peer moves.  Either the peer's load sees my flag (and
 * it posts the doorbell) or my load sees its index (and I do not sleep). */
static PyObject *
AtomicView_store32_then_load64(AtomicViewObject *self, PyObject *const *args,
                               Py_ssize_t nargs)
{
    uint32_t *flag, v;
    uint64_t *p;
    CHECK_NARGS("store32_then_load64", 3);
    if ((flag = addr_of(self, args[0], 4)) == NULL || value32(args[1], &v) < 0 ||
        (p = addr_of(self, args[2], 8)) == NULL) {
        return NULL;
    }
    __atomic_store_n(flag, v, __ATOMIC_SEQ_CST);
    return PyLong_FromUnsignedLongLong(__atomic_load_n(p, __ATOMIC_SEQ_CST));
}

static PyObject *
AtomicView_exchange32(AtomicViewObject *self, PyObject *const *args,
                      Py_ssize_t nargs)
{
    uint32_t *p, v;
    CHECK_NARGS("exchange32", 2);
    if ((p = addr_of(self, args[0], 4)) == NULL || value32(args[1], &v) < 0) {
        return NULL;
    }
    return PyLong_FromUnsignedLong(__atomic_exchange_n(p, v, __ATOMIC_SEQ_CST));
}

static PyObject *
AtomicView_exchange64(AtomicViewObject *self, PyObject *const *args,
                      Py_ssize_t nargs)
{
    uint64_t *p, v;
    CHECK_NARGS("exchange64", 2);
    if ((p = addr_of(self, args[0], 8)) == NULL || value64(args[1], &v) < 0) {
        return NULL;
    }
    return PyLong_FromUnsignedLongLong(
        __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST));
}

static PyObject *
AtomicView_compare_exchange32(AtomicViewObject *self, PyObject *const *args,
                              Py_ssize_t nargs)
{
    uint32_t *p, expected, desired;
    CHECK_NARGS("compare_exchange32", 3);
    if ((p = addr_of(self, args[0], 4)) == NULL ||
        value32(args[1], &expected) < 0 || value32(args[2], &desired) < 0) {
        return NULL;
    }
    return PyBool_FromLong(__atomic_compare_exchange_n(
        p, &expected, desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST));
}

static PyObject *
AtomicView_compare_exchange64(AtomicViewObject *self, PyObject *const *args,
                              Py_ssize_t nargs)
{
    uint64_t *p, expected, desired;
    CHECK_NARGS("compare_exchange64", 3);
    if ((p = addr_of(self, args[0], 8)) == NULL ||
        value64(args[1], &expected) < 0 || value64(args[2], &desired) < 0) {
        return NULL;
    }
    return PyBool_FromLong(__atomic_compare_exchange_n(
        p, &expected, desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST));
}

static PyObject *
AtomicView_fetch_add32(AtomicViewObject *self, PyObject *const *args,
                       Py_ssize_t nargs)
{
    uint32_t *p;
    uint64_t d;
    CHECK_NARGS("fetch_add32", 2);
    if ((p = addr_of(self, args[0], 4)) == NULL || delta_of(args[1], 32, &d) < 0) {
        return NULL;
    }
    return PyLong_FromUnsignedLong(
        __atomic_fetch_add(p, (uint32_t)d, __ATOMIC_SEQ_CST));
}

static PyObject *
AtomicView_fetch_add64(AtomicViewObject *self, PyObject *const *args,
                       Py_ssize_t nargs)
{
    uint64_t *p, d;
    CHECK_NARGS("fetch_add64", 2);
    if ((p = addr_of(self, args[0], 8)) == NULL || delta_of(args[1], 64, &d) < 0) {
        return NULL;
    }
    return PyLong_FromUnsignedLongLong(
        __atomic_fetch_add(p, d, __ATOMIC_SEQ_CST));
}

static PyObject *
AtomicView_fence(AtomicViewObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->buf == NULL) {
        raise_closed();
        return NULL;
    }
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    Py_RETURN_NONE;
}

/* ---- futex(2) on words of the buffer ------------------------------------
 * A word here is a doorbell: a counter bumped by whoever wakes, watched by
 * whoever sleeps.  Its value carries no meaning beyond "changed", so a peer
 * that rewrites it costs spurious or missed wake-ups (bounded by the
 * caller's timeout slices), nothing else. */

static void
sync_generation(AtomicViewObject *self)
{
    unsigned long gen = shmipc_fork_generation();
    if (self->generation != gen) {
        self->generation = gen;
        self->inflight = 0;   /* the parent's threads are not here */
    }
}

/* Sleep on the 32-bit word at bell while it holds expected, at most
 * timeout seconds (< 0: no limit).  Returns 1 if woken or the word moved
 * (or any other futex result: the caller looks again), 0 on timeout, -1
 * with an exception when a signal handler raised. */
static int
futex_sleep(AtomicViewObject *self, uint32_t *bell, uint32_t expected,
            double timeout)
{
    shmipc_deadline deadline;
    struct timespec left;
    int err;

    shmipc_deadline_start(&deadline, timeout);
    sync_generation(self);
    self->inflight++;
    for (;;) {
        if (!shmipc_deadline_left(&deadline, &left)) {
            err = ETIMEDOUT;
            break;
        }
        Py_BEGIN_ALLOW_THREADS
        err = shmipc_futex_wait(bell, expected,
                                deadline.infinite ? NULL : &left);
        Py_END_ALLOW_THREADS
        if (err != EINTR) {
            break;
        }
        if (PyErr_CheckSignals() < 0) {
            self->inflight--;
            return -1;
        }
    }
    self->inflight--;
    if (err == EFAULT || err == EINVAL || err == ENOSYS) {
        /* Not a peer's doing (the address is checked): say so. */
        shmipc_raise_errno(err, "futex(FUTEX_WAIT)");
        return -1;
    }
    return err == ETIMEDOUT ? 0 : 1;
}

static int
timeout_arg(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t i,
            double *timeout)
{
    *timeout = -1.0;
    return nargs > i ? (shmipc_timeout_converter(args[i], timeout) ? 0 : -1)
                     : 0;
}

static PyObject *
AtomicView_wait32(AtomicViewObject *self, PyObject *const *args,
                  Py_ssize_t nargs)
{
    uint32_t *p, expected;
    double timeout;
    int r;
    if (nargs < 2 || nargs > 3) {
        bad_nargs("wait32", 3, nargs);
        return NULL;
    }
    /* The timeout first: nothing after addr_of() may run Python code
     * (which could release this view and unmap the address). */
    if (timeout_arg(args, nargs, 2, &timeout) < 0 ||
        (p = addr_of(self, args[0], 4)) == NULL ||
        value32(args[1], &expected) < 0) {
        return NULL;
    }
    r = futex_sleep(self, p, expected, timeout);
    return r < 0 ? NULL : PyBool_FromLong(r);
}

/* The sleeper's side of a doorbell, in one call: raise the flag, read the
 * bell, then look at the index the peer moves (all seq_cst, in that order);
 * sleep on the bell only if the index still holds `seen`; lower the flag.
 * A waker publishes the index before it looks at the flag (publish64), so
 * either it sees the flag and bumps the bell after we read it (our sleep
 * returns at once), or we see its index and do not sleep. */
static PyObject *
AtomicView_wait_change64(AtomicViewObject *self, PyObject *const *args,
                         Py_ssize_t nargs)
{
    uint32_t *flag, *bell, ring;
    uint64_t *p, seen, now;
    double timeout;
    int r = 1;
    if (nargs < 4 || nargs > 5) {
        bad_nargs("wait_change64", 5, nargs);
        return NULL;
    }
    if (timeout_arg(args, nargs, 4, &timeout) < 0 ||  /* first: see wait32 */
        (flag = addr_of(self, args[0], 4)) == NULL ||
        (bell = addr_of(self, args[1], 4)) == NULL ||
        (p = addr_of(self, args[2], 8)) == NULL ||
        value64(args[3], &seen) < 0) {
        return NULL;
    }
    __atomic_store_n(flag, 1, __ATOMIC_SEQ_CST);
    ring = __atomic_load_n(bell, __ATOMIC_SEQ_CST);
    now = __atomic_load_n(p, __ATOMIC_SEQ_CST);
    if (now == seen) {
        r = futex_sleep(self, bell, ring, timeout);
        now = __atomic_load_n(p, __ATOMIC_ACQUIRE);
    }
    __atomic_store_n(flag, 0, __ATOMIC_SEQ_CST);
    if (r < 0) {
        return NULL;
    }
    return PyLong_FromUnsignedLongLong(now);
}

/* Bump the bell and wake every sleeper on it. */
static void
ring_bell(uint32_t *bell)
{
    __atomic_add_fetch(bell, 1, __ATOMIC_SEQ_CST);
    shmipc_futex_wake(bell, INT_MAX);
}

static PyObject *
AtomicView_wake32(AtomicViewObject *self, PyObject *const *args,
                  Py_ssize_t nargs)
{
    uint32_t *bell;
    CHECK_NARGS("wake32", 1);
    if ((bell = addr_of(self, args[0], 4)) == NULL) {
        return NULL;
    }
    ring_bell(bell);
    Py_RETURN_NONE;
}

/* The waker's side: optionally add delta to a 64-bit counter, publish the
 * 64-bit index, then look at the sleeper's flag (seq_cst after the store)
 * and ring the bell if it is up.  Returns whether it rang.  Never fails
 * once its arguments are valid: the message is committed by the store,
 * and the wake-up is advisory. */
static PyObject *
AtomicView_publish64(AtomicViewObject *self, PyObject *const *args,
                     Py_ssize_t nargs)
{
    uint64_t *p, v, *count = NULL, delta = 0;
    uint32_t *flag, *bell;
    if (nargs != 4 && nargs != 6) {
        bad_nargs("publish64", 4, nargs);
        return NULL;
    }
    if ((p = addr_of(self, args[0], 8)) == NULL || value64(args[1], &v) < 0 ||
        (flag = addr_of(self, args[2], 4)) == NULL ||
        (bell = addr_of(self, args[3], 4)) == NULL) {
        return NULL;
    }
    if (nargs == 6 && ((count = addr_of(self, args[4], 8)) == NULL ||
                       delta_of(args[5], 64, &delta) < 0)) {
        return NULL;
    }
    if (count != NULL) {
        /* Not a locked read-modify-write: the caller is the one writer of
         * the counter (it holds the lock that publishes the index), and
         * readers only want a snapshot.  Half the cost of fetch_add. */
        __atomic_store_n(count, __atomic_load_n(count, __ATOMIC_RELAXED) + delta,
                         __ATOMIC_RELAXED);
    }
    __atomic_store_n(p, v, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(flag, __ATOMIC_SEQ_CST) == 0) {
        Py_RETURN_FALSE;
    }
    ring_bell(bell);
    Py_RETURN_TRUE;
}

static PyObject *
AtomicView_release(AtomicViewObject *self, PyObject *Py_UNUSED(ignored))
{
    sync_generation(self);
    if (self->buf != NULL && self->inflight > 0) {
        PyErr_Format(PyExc_BufferError,
                     "%d thread(s) of this process are waiting on this "
                     "buffer", self->inflight);
        return NULL;
    }
    if (self->buf != NULL) {
        self->buf = NULL;
        self->len = 0;
        PyBuffer_Release(&self->view);
    }
    Py_RETURN_NONE;
}

static PyObject *
AtomicView_enter(AtomicViewObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->buf == NULL) {
        raise_closed();
        return NULL;
    }
    Py_INCREF(self);
    return (PyObject *)self;
}

static PyObject *
AtomicView_exit(AtomicViewObject *self, PyObject *args)
{
    return AtomicView_release(self, NULL);
}

static Py_ssize_t
AtomicView_length(AtomicViewObject *self)
{
    if (self->buf == NULL) {
        return raise_closed();
    }
    return self->len;
}

static PyObject *
AtomicView_get_closed(AtomicViewObject *self, void *closure)
{
    return PyBool_FromLong(self->buf == NULL);
}

static PyObject *
AtomicView_get_obj(AtomicViewObject *self, void *closure)
{
    PyObject *obj = self->buf != NULL ? self->view.obj : Py_None;
    Py_INCREF(obj);
    return obj;
}

#define FASTCALL(name, doc)                                                  \
    {#name, (PyCFunction)(void (*)(void))AtomicView_##name, METH_FASTCALL, doc}

static PyMethodDef AtomicView_methods[] = {
    FASTCALL(load32, "load32($self, off, /)\n--\n\n"
                     "Atomic 32-bit load (acquire)."),
    FASTCALL(load64, "load64($self, off, /)\n--\n\n"
                     "Atomic 64-bit load (acquire)."),
    FASTCALL(store32, "store32($self, off, v, /)\n--\n\n"
                      "Atomic 32-bit store (release)."),
    FASTCALL(store64, "store64($self, off, v, /)\n--\n\n"
                      "Atomic 64-bit store (release)."),
    FASTCALL(store32_seq_cst,
             "store32_seq_cst($self, off, v, /)\n--\n\n"
             "Atomic 32-bit store (seq_cst)."),
    FASTCALL(store64_seq_cst,
             "store64_seq_cst($self, off, v, /)\n--\n\n"
             "Atomic 64-bit store (seq_cst)."),
    FASTCALL(store64_then_load32,
             "store64_then_load32($self, off, v, flag_off, /)\n--\n\n"
             "Store v at off, then load the 32-bit value at flag_off, both "
             "seq_cst: the load is not reordered before the store."),
    FASTCALL(store32_then_load64,
             "store32_then_load64($self, flag_off, v, off, /)\n--\n\n"
             "Store the 32-bit v at flag_off, then load the 64-bit value at "
             "off, both seq_cst: the load is not reordered before the store."),
    FASTCALL(exchange32,
             "exchange32($self, off, v, /)\n--\n\n"
             "Store v, return the old value "
             "(seq_cst)."),
    FASTCALL(exchange64,
             "exchange64($self, off, v, /)\n--\n\n"
             "Store v, return the old value "
             "(seq_cst)."),
    FASTCALL(compare_exchange32,
             "compare_exchange32($self, off, expected, desired, /)\n--\n\n"
             "If the value "
             "is expected, store desired and return True; else False "
             "(strong, seq_cst)."),
    FASTCALL(compare_exchange64,
             "compare_exchange64($self, off, expected, desired, /)\n--\n\n"
             "If the value "
             "is expected, store desired and return True; else False "
             "(strong, seq_cst)."),
    FASTCALL(fetch_add32,
             "fetch_add32($self, off, delta, /)\n--\n\n"
             "Add delta modulo 2**32, return "
             "the old value (seq_cst)."),
    FASTCALL(fetch_add64,
             "fetch_add64($self, off, delta, /)\n--\n\n"
             "Add delta modulo 2**64, return "
             "the old value (seq_cst)."),
    FASTCALL(wait32,
             "wait32($self, off, expected, timeout=None, /)\n--\n\n"
             "futex(2) wait while the 32-bit word at off holds expected, at "
             "most timeout seconds.  False on timeout, else True (woken, "
             "moved, or spurious: look again).  Releases the GIL."),
    FASTCALL(wait_change64,
             "wait_change64($self, flag_off, bell_off, off, seen, "
             "timeout=None, /)\n--\n\n"
             "Raise the 32-bit flag, read the bell, and if the 64-bit word "
             "at off still holds seen, sleep on the bell (at most timeout "
             "seconds); lower the flag.  Returns the word at off."),
    FASTCALL(wake32,
             "wake32($self, off, /)\n--\n\n"
             "Add 1 to the 32-bit bell at off and wake every waiter on it."),
    FASTCALL(publish64,
             "publish64($self, off, v, flag_off, bell_off, "
             "count_off=None, delta=None, /)\n--\n\n"
             "[Add delta to the 64-bit counter at count_off (one writer at "
             "a time: not a locked add),] store v at off, then if the 32-bit "
             "flag is up ring the bell (wake32).  Store and load seq_cst.  "
             "Returns whether it rang."),
    {"fence", (PyCFunction)AtomicView_fence, METH_NOARGS,
     "fence($self)\n--\n\nA seq_cst thread fence."},
    {"release", (PyCFunction)AtomicView_release, METH_NOARGS,
     "release($self)\n--\n\nDrop the buffer export.  Idempotent."},
    {"close", (PyCFunction)AtomicView_release, METH_NOARGS,
     "close($self)\n--\n\nSame as release()."},
    {"__enter__", (PyCFunction)AtomicView_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)AtomicView_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef AtomicView_getset[] = {
    {"closed", (getter)AtomicView_get_closed, NULL,
     "True once released", NULL},
    {"obj", (getter)AtomicView_get_obj, NULL,
     "the buffer object (None once released)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot AtomicView_slots[] = {
    {Py_tp_new, AtomicView_new},
    {Py_tp_dealloc, AtomicView_dealloc},
    {Py_tp_traverse, AtomicView_traverse},
    {Py_tp_methods, AtomicView_methods},
    {Py_tp_getset, AtomicView_getset},
    {Py_sq_length, AtomicView_length},
    {Py_tp_doc, "Atomic loads, stores and read-modify-writes on the memory "
                "of a writable buffer (low level)."},
    {0, NULL},
};

static PyType_Spec AtomicView_spec = {
    .name = "shmipc._core.AtomicView",
    .basicsize = sizeof(AtomicViewObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = AtomicView_slots,
};

static PyObject *
core_fence(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    Py_RETURN_NONE;
}

static PyMethodDef atomics_functions[] = {
    {"fence", core_fence, METH_NOARGS,
     "fence()\n--\n\nA seq_cst thread fence."},
    {NULL, NULL, 0, NULL},
};

int
shmipc_add_atomics(PyObject *module, shmipc_state *st)
{
    st->atomic_view_type = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &AtomicView_spec, NULL);
    if (st->atomic_view_type == NULL ||
        PyModule_AddType(module, st->atomic_view_type) < 0 ||
        PyModule_AddFunctions(module, atomics_functions) < 0) {
        return -1;
    }
    return 0;
}
