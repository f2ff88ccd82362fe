/* futex.c -- futex(2) on plain 32-bit words in shared memory, and a lock
 * made of such words that a hostile peer cannot turn against its users.
 *
 * In Python terms:
 *     class FutexLock:                  # holds a writable export of buffer
 *         def __new__(cls, buffer, offset)    # 8 bytes at offset, 8-aligned
 *         def acquire(self, timeout=None) -> int
 *             # 0: timed out; 1: taken; 2: taken from a holder that died
 *         def release(self) -> bool     # True if this thread held it here
 *         held: bool                    # by the calling thread, through self
 *         owner: int                    # tid in the word (0: free), advisory
 *         offset: int; closed: bool
 *         def close(self) -> None       # BufferError while held or waited on
 *
 *     class LockedBlock:                # base of a with-block that holds a lock
 *         _lock: FutexLock              # set by the subclass
 *         def __enter__(self):          # self._enter(); on error release _lock
 *         def __exit__(self, *exc):     # self._exit(*exc); then release _lock
 *
 * LockedBlock exists because a Python __enter__/__exit__ can be interrupted
 * at its first bytecode (a signal handler runs there): its C methods call
 * the subclass's Python part and then give the lock back whatever that part
 * did, with no bytecode in between.
 *
 * The lock is one 64-bit word: the low 32 bits are the futex word (the
 * holder's thread id, plus WAITERS while someone sleeps on it), the high 32
 * bits the low bits of the holder's start time (field 22 of
 * /proc/<tid>/stat), written together with one compare-and-swap.  Nothing
 * read from the word is ever used as an address: a waiter whose timed wait
 * expires reads /proc/<tid>/stat of the tid it found, and if that thread is
 * gone, a zombie, or started at another time (tid reused), takes the lock
 * over with a compare-and-swap.  A forged word costs a wrongly stolen or a
 * wrongly held lock -- corrupted or delayed messages, never this process.
 *
 * Which thread of this process holds the lock through this object is kept
 * here, in process memory, and set by the same C call that takes the lock:
 * no Python code runs in between, so a signal handler that raises cannot
 * leave the lock taken but unrecorded.  release() gives the lock back only
 * if this thread holds it through this object, so callers write
 *
 *     try:
 *         lock.acquire(timeout)
 *         ...
 *     finally:
 *         lock.release()
 *
 * and an exception at any bytecode leaves nothing held.  A nested acquire
 * from the holding thread raises RuntimeError and is counted, so that the
 * nested call's own release() does not give back the outer hold.
 *
 * Per-process state (the holder, threads blocked in acquire) is reset in a
 * forked child, as CPython resets its own locks: the child's copy is free of
 * its parent's threads.
 */
#include "shmipc.h"

#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <stddef.h>
#include <unistd.h>
#include <structmember.h>

#define WAITERS 0x80000000u
#define OWNER_MASK 0x3fffffffu      /* PID_MAX_LIMIT is 2**22 */
/* How long a waiter sleeps before it looks whether the holder still lives:
 * the bound on recovering a lock from a holder killed with SIGKILL. */
#define DEAD_CHECK_NS 20000000L     /* 20 ms */

/* ---- per-thread identity, reset in a forked child ---------------------- */

/* initial-exec: read straight off the thread pointer, with no call to
 * __tls_get_addr (these are read on every lock and unlock). */
#define SHMIPC_TLS __thread __attribute__((tls_model("initial-exec")))
static SHMIPC_TLS uint32_t my_tid;     /* 0: not known yet */
static SHMIPC_TLS uint32_t my_start;   /* low 32 bits of my start time */
static unsigned long fork_generation;

static void
after_fork_child(void)
{
    my_tid = 0;
    __atomic_add_fetch(&fork_generation, 1, __ATOMIC_RELAXED);
}

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void
register_atfork(void)
{
    (void)pthread_atfork(NULL, NULL, after_fork_child);
}

unsigned long
shmipc_fork_generation(void)
{
    return __atomic_load_n(&fork_generation, __ATOMIC_RELAXED);
}

/* Read state and start time of a thread from /proc/<tid>/stat.
 * Returns 1 and fills them, 0 if there is no such thread, -1 if it could
 * not be read for another reason (then nothing is concluded). */
static int
read_thread_stat(uint32_t tid, char *state, unsigned long long *start)
{
    char path[48], buf[1024];
    const char *p;
    ssize_t n;
    int fd, field, err;

    snprintf(path, sizeof(path), "/proc/%u/stat", (unsigned)tid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return (errno == ENOENT || errno == ESRCH) ? 0 : -1;
    }
    do {
        n = read(fd, buf, sizeof(buf) - 1);
        err = errno;
    } while (n < 0 && err == EINTR);
    close(fd);
    if (n <= 0) {
        return n == 0 ? 0 : (err == ESRCH ? 0 : -1);
    }
    buf[n] = '\0';
    /* The command name may hold anything, ')' included: the fields start
     * after the last ')'. */
    p = strrchr(buf, ')');
    if (p == NULL || p[1] != ' ' || p[2] == '\0') {
        return -1;
    }
    *state = p[2];
    /* p[2] is field 3; walk to field 22 (starttime). */
    p += 2;
    for (field = 3; field < 22; field++) {
        p = strchr(p, ' ');
        if (p == NULL) {
            return -1;
        }
        p++;
    }
    *start = strtoull(p, NULL, 10);
    return 1;
}

/* This thread's id and start time, cached per thread. */
static uint32_t
current_tid(uint32_t *start)
{
    if (my_tid == 0) {
        char state;
        unsigned long long st = 0;
        uint32_t tid = (uint32_t)syscall(SYS_gettid);
        (void)read_thread_stat(tid, &state, &st);
        my_start = (uint32_t)st;
        my_tid = tid;
    }
    *start = my_start;
    return my_tid;
}

/* True when the thread the lock word names is certainly gone. */
static int
holder_dead(uint32_t tid, uint32_t start)
{
    char state;
    unsigned long long st;
    int r;
    if (tid == 0 || tid > (1u << 22)) {
        return 1;   /* no thread has that id: a forged word */
    }
    r = read_thread_stat(tid, &state, &st);
    if (r == 0) {
        return 1;
    }
    if (r < 0) {
        return 0;
    }
    return state == 'Z' || state == 'X' || (uint32_t)st != start;
}

/* ---- raw futex calls (shared, not FUTEX_PRIVATE: other processes) ------ */

int
shmipc_futex_wait(uint32_t *word, uint32_t expected,
                  const struct timespec *rel)
{
    if (syscall(SYS_futex, word, FUTEX_WAIT, expected, rel, NULL, 0) == 0) {
        return 0;
    }
    return errno;
}

void
shmipc_futex_wake(uint32_t *word, int count)
{
    /* Advisory: a failed wake costs the sleeper a timed-out slice. */
    (void)syscall(SYS_futex, word, FUTEX_WAKE, count, NULL, NULL, 0);
}

/* ---- the lock object --------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    uint64_t *word;             /* inside view.buf; NULL once closed */
    uint32_t *futex;            /* its low 32 bits */
    Py_buffer view;             /* writable export held while open */
    Py_ssize_t offset;
    unsigned long generation;   /* fork generation of the fields below */
    uint32_t holder;            /* tid holding it through this object, or 0 */
    int refused;                /* nested acquires whose release is a no-op */
    int inflight;               /* threads blocked in acquire() */
} FutexLockObject;

static void
sync_generation(FutexLockObject *self)
{
    unsigned long gen = shmipc_fork_generation();
    if (self->generation != gen) {
        self->generation = gen;
        self->holder = 0;
        self->refused = 0;
        self->inflight = 0;
    }
}

static PyObject *
FutexLock_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"buffer", "offset", NULL};
    PyObject *buffer;
    Py_ssize_t offset;
    FutexLockObject *self;
    char *p;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "On:FutexLock", kwlist,
                                     &buffer, &offset)) {
        return NULL;
    }
    self = (FutexLockObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->word = NULL;
    self->view.obj = NULL;
    if (PyObject_GetBuffer(buffer, &self->view, PyBUF_WRITABLE) < 0) {
        self->view.obj = NULL;
        goto error;
    }
    if (offset < 0 || offset > self->view.len - 8) {
        PyErr_Format(PyExc_ValueError,
                     "offset %zd out of range for an 8-byte lock in a "
                     "%zd-byte buffer", offset, self->view.len);
        goto error;
    }
    p = (char *)self->view.buf + offset;
    if (((uintptr_t)p & 7u) != 0) {
        PyErr_Format(PyExc_ValueError,
                     "lock offset %zd is not 8-byte aligned", offset);
        goto error;
    }
    self->word = (uint64_t *)p;
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    self->futex = (uint32_t *)p;
#else
    self->futex = (uint32_t *)(p + 4);
#endif
    self->offset = offset;
    self->generation = shmipc_fork_generation();
    return (PyObject *)self;

error:
    Py_DECREF(self);
    return NULL;
}

static int
FutexLock_traverse(FutexLockObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->view.obj);
    return 0;
}

static void
FutexLock_dealloc(FutexLockObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    self->word = NULL;
    if (self->view.obj != NULL) {
        PyBuffer_Release(&self->view);
    }
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static int
check_open(FutexLockObject *self)
{
    if (self->word == NULL) {
        PyErr_SetString(PyExc_ValueError, "operation on a closed FutexLock");
        return -1;
    }
    return 0;
}

static inline uint64_t
word_of(uint32_t tid, uint32_t start, uint32_t flags)
{
    return ((uint64_t)start << 32) | tid | flags;
}

enum { TAKEN = 1, TAKEN_FROM_DEAD = 2, TIMED_OUT = 0, INTERRUPTED = -1 };

/* The waiting part of acquire(), with the GIL released.  Returns TAKEN,
 * TAKEN_FROM_DEAD, TIMED_OUT or INTERRUPTED (EINTR: the caller runs the
 * signal handlers and calls again). */
static int
lock_slow(uint64_t *word, uint32_t *futex, uint32_t tid, uint32_t start,
          const shmipc_deadline *deadline)
{
    for (;;) {
        uint64_t w = __atomic_load_n(word, __ATOMIC_ACQUIRE);
        uint32_t low = (uint32_t)w;
        uint32_t owner = low & OWNER_MASK;
        struct timespec left, slice;
        int err;

        if (owner == 0) {
            /* Free: take it with WAITERS set, since others may sleep. */
            if (__atomic_compare_exchange_n(word, &w,
                                            word_of(tid, start, WAITERS), 0,
                                            __ATOMIC_ACQUIRE,
                                            __ATOMIC_RELAXED)) {
                return TAKEN;
            }
            continue;
        }
        if (owner == tid && (uint32_t)(w >> 32) != start) {
            /* Our id with another start time: a thread that ended holding
             * it, its id since reused by us.  (Our id with our start time
             * is a hold through another object of this thread, or a
             * forgery: waited for like any live holder, so a nested use
             * times out as a foreign holder would make it.) */
            if (__atomic_compare_exchange_n(word, &w,
                                            word_of(tid, start, WAITERS), 0,
                                            __ATOMIC_ACQUIRE,
                                            __ATOMIC_RELAXED)) {
                return TAKEN_FROM_DEAD;
            }
            continue;
        }
        if (!shmipc_deadline_left(deadline, &left)) {
            /* Out of time (or a zero timeout): one look at the holder, so
             * that callers that never block still recover a dead one. */
            if (holder_dead(owner, (uint32_t)(w >> 32)) &&
                __atomic_compare_exchange_n(word, &w,
                                            word_of(tid, start, low & WAITERS),
                                            0, __ATOMIC_ACQUIRE,
                                            __ATOMIC_RELAXED)) {
                return TAKEN_FROM_DEAD;
            }
            return TIMED_OUT;
        }
        if (!(low & WAITERS)) {
            uint64_t want = w | WAITERS;
            if (!__atomic_compare_exchange_n(word, &w, want, 0,
                                             __ATOMIC_RELAXED,
                                             __ATOMIC_RELAXED)) {
                continue;
            }
            w = want;
            low = (uint32_t)w;
        }
        slice.tv_sec = 0;
        slice.tv_nsec = DEAD_CHECK_NS;
        if (!deadline->infinite &&
            (left.tv_sec == 0 && left.tv_nsec < slice.tv_nsec)) {
            slice = left;
        }
        err = shmipc_futex_wait(futex, low, &slice);
        if (err == EINTR) {
            return INTERRUPTED;
        }
        if (err == ETIMEDOUT &&
            __atomic_load_n(word, __ATOMIC_ACQUIRE) == w &&
            holder_dead(owner, (uint32_t)(w >> 32))) {
            if (__atomic_compare_exchange_n(word, &w,
                                            word_of(tid, start, WAITERS), 0,
                                            __ATOMIC_ACQUIRE,
                                            __ATOMIC_RELAXED)) {
                return TAKEN_FROM_DEAD;
            }
        }
        /* 0 (woken), EAGAIN (the word moved), ETIMEDOUT, or anything else
         * (a word a peer made odd): look again; the deadline bounds it. */
    }
}

static PyObject *
FutexLock_acquire(FutexLockObject *self, PyObject *const *args,
                  Py_ssize_t nargs, PyObject *kwnames)
{
    double timeout = -1.0;
    shmipc_deadline deadline;
    uint32_t tid, start;
    uint64_t expected = 0;
    int r;
    /* kwnames may be an empty tuple rather than NULL (PEP 590). */
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);

    /* On every message's path: no argument parser. */
    if (nargs + nkw > 1) {
        PyErr_Format(PyExc_TypeError,
                     "acquire() takes at most 1 argument (%zd given)",
                     nargs + nkw);
        return NULL;
    }
    if (nkw == 1 && PyUnicode_CompareWithASCIIString(
                        PyTuple_GET_ITEM(kwnames, 0), "timeout") != 0) {
        PyErr_Format(PyExc_TypeError,
                     "acquire() got an unexpected keyword argument '%U'",
                     PyTuple_GET_ITEM(kwnames, 0));
        return NULL;
    }
    if (nargs + nkw == 1 &&
        !shmipc_timeout_converter(args[0], &timeout)) {
        return NULL;
    }
    if (check_open(self) < 0) {
        return NULL;
    }
    sync_generation(self);
    tid = current_tid(&start);
    if (self->holder == tid) {
        self->refused++;
        PyErr_Format(PyExc_RuntimeError,
                     "this thread already holds the lock at offset %zd "
                     "(waiting for it would wait for ever)", self->offset);
        return NULL;
    }
    if (__atomic_compare_exchange_n(self->word, &expected,
                                    word_of(tid, start, 0), 0,
                                    __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
        self->holder = tid;
        return PyLong_FromLong(TAKEN);
    }
    shmipc_deadline_start(&deadline, timeout);
    self->inflight++;
    for (;;) {
        Py_BEGIN_ALLOW_THREADS
        r = lock_slow(self->word, self->futex, tid, start, &deadline);
        Py_END_ALLOW_THREADS
        if (r != INTERRUPTED) {
            break;
        }
        if (PyErr_CheckSignals() < 0) {
            self->inflight--;
            return NULL;
        }
    }
    self->inflight--;
    if (r != TIMED_OUT) {
        self->holder = tid;
    }
    return PyLong_FromLong(r);
}

static PyObject *
FutexLock_release(FutexLockObject *self, PyObject *Py_UNUSED(ignored))
{
    uint32_t tid, start;
    uint64_t w;

    if (check_open(self) < 0) {
        return NULL;
    }
    sync_generation(self);
    tid = current_tid(&start);
    if (self->holder != tid) {
        Py_RETURN_FALSE;
    }
    if (self->refused > 0) {
        self->refused--;
        Py_RETURN_FALSE;
    }
    self->holder = 0;
    w = __atomic_load_n(self->word, __ATOMIC_RELAXED);
    while (((uint32_t)w & OWNER_MASK) == tid) {
        if (__atomic_compare_exchange_n(self->word, &w, 0, 0,
                                        __ATOMIC_RELEASE, __ATOMIC_RELAXED)) {
            if ((uint32_t)w & WAITERS) {
                shmipc_futex_wake(self->futex, 1);
            }
            Py_RETURN_TRUE;
        }
    }
    /* A peer rewrote the word while we held it: it is theirs now. */
    Py_RETURN_FALSE;
}

/* guard(fn, *args, **kwargs): call fn, then give back a hold that fn took
 * and left (whatever fn did, with no bytecode in between).  CPython 3.9 and
 * 3.10 run signal handlers when an exception reaches an except/finally
 * handler and when a try block is left, so a Python-level release can be
 * skipped there; 3.11+ do not, and call the functions directly. */
static PyObject *
FutexLock_guard(FutexLockObject *self, PyObject *const *args,
                size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    uint32_t tid, start;
    int held_before;
    PyObject *result, *type, *value, *tb;

    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError, "guard() needs a function to call");
        return NULL;
    }
    if (check_open(self) < 0) {
        return NULL;
    }
    sync_generation(self);
    tid = current_tid(&start);
    held_before = self->holder == tid;
    result = PyObject_Vectorcall(args[0], args + 1, nargs - 1, kwnames);
    if (held_before || self->word == NULL) {
        return result;
    }
    sync_generation(self);
    if (self->holder == current_tid(&start) && self->refused == 0) {
        PyObject *r;
        PyErr_Fetch(&type, &value, &tb);
        r = FutexLock_release(self, NULL);
        Py_XDECREF(r);
        if (r == NULL) {
            PyErr_Clear();
        }
        PyErr_Restore(type, value, tb);
    }
    return result;
}

static PyObject *
FutexLock_close(FutexLockObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->word == NULL) {
        Py_RETURN_NONE;
    }
    sync_generation(self);
    if (self->inflight > 0) {
        PyErr_Format(PyExc_BufferError,
                     "%d thread(s) of this process are waiting for the lock",
                     self->inflight);
        return NULL;
    }
    if (self->holder != 0) {
        PyErr_SetString(PyExc_BufferError,
                        "a thread of this process holds the lock");
        return NULL;
    }
    self->word = NULL;
    self->futex = NULL;
    PyBuffer_Release(&self->view);
    self->view.obj = NULL;
    Py_RETURN_NONE;
}

static PyObject *
FutexLock_get_held(FutexLockObject *self, void *closure)
{
    uint32_t start;
    if (self->word == NULL) {
        Py_RETURN_FALSE;
    }
    sync_generation(self);
    return PyBool_FromLong(self->holder != 0 &&
                           self->holder == current_tid(&start));
}

static PyObject *
FutexLock_get_owner(FutexLockObject *self, void *closure)
{
    if (check_open(self) < 0) {
        return NULL;
    }
    return PyLong_FromUnsignedLong(
        __atomic_load_n(self->futex, __ATOMIC_ACQUIRE) & OWNER_MASK);
}

static PyObject *
FutexLock_get_offset(FutexLockObject *self, void *closure)
{
    return PyLong_FromSsize_t(self->offset);
}

static PyObject *
FutexLock_get_closed(FutexLockObject *self, void *closure)
{
    return PyBool_FromLong(self->word == NULL);
}

static PyMethodDef FutexLock_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))FutexLock_acquire,
     METH_FASTCALL | METH_KEYWORDS,
     "acquire(timeout=None)\n--\n\n"
     "Take the lock; wait at most timeout seconds (None: for ever).\n"
     "Returns 0 if the timeout passed, 1 when taken, 2 when taken over\n"
     "from a holder that died (repair what it protected).  The hold is\n"
     "recorded for this thread in the same call.  RuntimeError if this\n"
     "thread holds it already (the matching release() is then a no-op)."},
    {"release", (PyCFunction)FutexLock_release, METH_NOARGS,
     "release()\n--\n\n"
     "Give the lock back if this thread holds it through this object;\n"
     "return whether it did.  Safe to call when not held."},
    {"guard", (PyCFunction)(void (*)(void))FutexLock_guard,
     METH_FASTCALL | METH_KEYWORDS,
     "guard(fn, /, *args, **kwargs)\n--\n\n"
     "Call fn(*args, **kwargs); then, in the same C call, release a hold\n"
     "of this thread that fn took and did not give back."},
    {"close", (PyCFunction)FutexLock_close, METH_NOARGS,
     "close()\n--\n\n"
     "Drop the buffer export.  BufferError while a thread of this process\n"
     "holds or waits for the lock.  Idempotent."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef FutexLock_getset[] = {
    {"held", (getter)FutexLock_get_held, NULL,
     "True while the calling thread holds the lock through this object",
     NULL},
    {"owner", (getter)FutexLock_get_owner, NULL,
     "the thread id in the lock word (0: free); advisory", NULL},
    {"offset", (getter)FutexLock_get_offset, NULL, "offset in the buffer",
     NULL},
    {"closed", (getter)FutexLock_get_closed, NULL, "True once closed", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot FutexLock_slots[] = {
    {Py_tp_new, FutexLock_new},
    {Py_tp_dealloc, FutexLock_dealloc},
    {Py_tp_traverse, FutexLock_traverse},
    {Py_tp_methods, FutexLock_methods},
    {Py_tp_getset, FutexLock_getset},
    {Py_tp_doc, "A lock in one 64-bit word of shared memory (futex(2)); "
                "a dead holder is detected and the lock taken over."},
    {0, NULL},
};

static PyType_Spec FutexLock_spec = {
    .name = "shmipc._core.FutexLock",
    .basicsize = sizeof(FutexLockObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = FutexLock_slots,
};

/* ---- LockedBlock ------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    PyObject *lock;             /* anything with release(); usually FutexLock */
    PyObject *weakreflist;
    int entered;                /* a block object is entered once */
} LockedBlockObject;

static int
LockedBlock_traverse(LockedBlockObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->lock);
    return 0;
}

static int
LockedBlock_clear(LockedBlockObject *self)
{
    Py_CLEAR(self->lock);
    return 0;
}

static void
LockedBlock_dealloc(LockedBlockObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)self);
    }
    (void)LockedBlock_clear(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

/* Give the lock back, keeping whatever exception is set. */
static void
release_keeping_error(LockedBlockObject *self)
{
    PyObject *type, *value, *tb, *r;
    if (self->lock == NULL) {
        return;
    }
    PyErr_Fetch(&type, &value, &tb);
    r = PyObject_CallMethod(self->lock, "release", NULL);
    if (r == NULL) {
        if (type != NULL) {
            PyErr_Clear();   /* the first error is the one to report */
        }
        else {
            return;          /* keep release()'s own error */
        }
    }
    Py_XDECREF(r);
    PyErr_Restore(type, value, tb);
}

static PyObject *
LockedBlock_enter(LockedBlockObject *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *r;
    if (self->entered) {
        /* Refused before anything is taken, and without the release below:
         * the outer use of this same block still holds the lock. */
        PyErr_SetString(PyExc_RuntimeError,
                        "a block can be entered once (make a new one)");
        return NULL;
    }
    self->entered = 1;
    r = PyObject_CallMethod((PyObject *)self, "_enter", NULL);
    if (r == NULL) {
        release_keeping_error(self);
    }
    return r;
}

static PyObject *
LockedBlock_exit(LockedBlockObject *self, PyObject *args)
{
    PyObject *exit = PyObject_GetAttrString((PyObject *)self, "_exit");
    PyObject *r = NULL;
    if (exit != NULL) {
        r = PyObject_CallObject(exit, args);
        Py_DECREF(exit);
    }
    release_keeping_error(self);
    if (r != NULL && PyErr_Occurred()) {
        Py_CLEAR(r);   /* release() itself failed */
    }
    return r;
}

static PyMemberDef LockedBlock_members[] = {
    {"_lock", T_OBJECT_EX, offsetof(LockedBlockObject, lock), 0,
     "the lock __exit__ gives back"},
    {"__weaklistoffset__", T_PYSSIZET,
     offsetof(LockedBlockObject, weakreflist), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyMethodDef LockedBlock_methods[] = {
    {"__enter__", (PyCFunction)LockedBlock_enter, METH_NOARGS,
     "__enter__()\n--\n\n"
     "Call self._enter(); if it raises, release self._lock."},
    {"__exit__", (PyCFunction)LockedBlock_exit, METH_VARARGS,
     "__exit__(exc_type, exc, tb)\n--\n\n"
     "Call self._exit(...), then release self._lock whatever happened."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot LockedBlock_slots[] = {
    {Py_tp_dealloc, LockedBlock_dealloc},
    {Py_tp_traverse, LockedBlock_traverse},
    {Py_tp_clear, LockedBlock_clear},
    {Py_tp_methods, LockedBlock_methods},
    {Py_tp_members, LockedBlock_members},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_doc, "Base of a with-block holding a lock: the lock is given "
                "back in C after the subclass's _enter/_exit."},
    {0, NULL},
};

static PyType_Spec LockedBlock_spec = {
    .name = "shmipc._core.LockedBlock",
    .basicsize = sizeof(LockedBlockObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = LockedBlock_slots,
};

int
shmipc_add_futex(PyObject *module, shmipc_state *st)
{
    PyObject *block_type;
    uint32_t start;
    char state;
    unsigned long long st_time;

    /* A lock's dead-holder check reads /proc/<tid>/stat: without /proc a
     * live holder would look dead and its lock be taken over. */
    if (read_thread_stat(current_tid(&start), &state, &st_time) != 1) {
        PyErr_SetString(PyExc_ImportError,
                        "shmipc needs /proc (it reads /proc/<tid>/stat to "
                        "tell a dead lock holder from a live one)");
        return -1;
    }
    (void)pthread_once(&atfork_once, register_atfork);
    st->futex_lock_type = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &FutexLock_spec, NULL);
    if (st->futex_lock_type == NULL ||
        PyModule_AddType(module, st->futex_lock_type) < 0) {
        return -1;
    }
    block_type = PyType_FromModuleAndSpec(module, &LockedBlock_spec, NULL);
    if (block_type == NULL) {
        return -1;
    }
    if (PyModule_AddType(module, (PyTypeObject *)block_type) < 0) {
        Py_DECREF(block_type);
        return -1;
    }
    Py_DECREF(block_type);
    return 0;
}
