/* semaphore.c -- System V semaphore sets: the system calls, nothing more.
 *
 * In Python terms:
 *     def semget(key: int, nsems: int, flags: int) -> int            # semid
 *     def sem_stat(semid: int) -> tuple                             # semid_ds
 *     def sem_set(semid: int, uid: int, gid: int, mode: int) -> None # IPC_SET
 *     def sem_remove(semid: int) -> None                            # IPC_RMID
 *
 *     class Semaphore:                    # a handle on one set, by id
 *         def __new__(cls, semid)                    # IPC_STAT checks it
 *         semid, key, count, removed
 *         def acquire(self, timeout=None, *, n=1, undo=False, index=0) -> bool
 *         def release(self, n=1, *, undo=False, index=0) -> None
 *         def wait_zero(self, timeout=None, *, index=0) -> bool
 *         def semop(self, ops, timeout=None) -> bool # [(index, delta, flg)]
 *         def value_of(self, index=0) -> int           # GETVAL
 *         def set_value(self, value, index=0) -> None  # SETVAL
 *         def get_values(self) -> tuple[int, ...]      # GETALL
 *         def set_values(self, values) -> None         # SETALL
 *         def waiting_of(self, index=0) -> int         # GETNCNT
 *         def zero_waiting_of(self, index=0) -> int    # GETZCNT
 *         def last_pid_of(self, index=0) -> int        # GETPID
 *         def remove(self) -> None                     # IPC_RMID, idempotent
 *
 * Every blocking operation first tries with IPC_NOWAIT (no GIL release when
 * uncontended), then waits in semtimedop() with the GIL released, the
 * remaining time recomputed from a monotonic deadline after each EINTR, once
 * PyErr_CheckSignals() has run.  It returns False when the time is up (or
 * when an operation flagged IPC_NOWAIT would block).
 *
 * errno -> exception: EINVAL on an id means the set does not exist
 * (FileNotFoundError, ENOENT); EIDRM means it was removed, possibly while we
 * waited (FileNotFoundError, errno EIDRM); ERANGE, E2BIG and EFBIG are
 * argument errors (ValueError).  Use after this handle's remove() is a
 * ValueError.  Policy (create/open, records, pickling) lives in
 * shmipc/semaphore.py.
 */
#include "shmipc.h"

#include <limits.h>
#include <string.h>
#include <structmember.h>
#include <sys/sem.h>
#include <unistd.h>

#if defined(__GLIBC__)
#define SHMIPC_SEM_PERM_KEY(p) ((p).__key)
#elif defined(__APPLE__)
#define SHMIPC_SEM_PERM_KEY(p) ((p)._key)
#else
#define SHMIPC_SEM_PERM_KEY(p) ((p).__ipc_perm_key)
#endif

#ifndef SEMVMX
#define SEMVMX 32767
#endif

/* The caller defines union semun (SUSv3); glibc does not. */
union shmipc_semun {
    int val;
    struct semid_ds *buf;
    unsigned short *array;
};

/* Operations per apply()/semop() call that go on the C stack; more are
 * allocated.  The kernel refuses more than SEMOPM (500 by default). */
#define SHMIPC_STACK_OPS 8
/* Hard cap before allocating: the kernel's own ceiling for SEMOPM. */
#define SHMIPC_MAX_OPS 65536

typedef struct {
    PyObject_HEAD
    int semid;
    key_t key;          /* cached at construction; never changes */
    int nsems;          /* ditto */
    int removed;        /* remove() was called on this handle */
    PyObject *weakreflist;
} SemaphoreObject;

/* ---- errors ----------------------------------------------------------- */

/* Raise the exception a failed semaphore call deserves.  Always NULL. */
static PyObject *
raise_sem_error(int err, const char *call, int semid)
{
    PyObject *type = NULL;
    PyObject *msg = NULL;
    PyObject *args = NULL;

    switch (err) {
    case EINVAL:
        /* Our arguments are checked before the call, so EINVAL means the
         * id names no set (Linux answers EINVAL, not ENOENT). */
        msg = PyUnicode_FromFormat("%s failed: no semaphore set with id %d "
                                   "(removed?)", call, semid);
        type = PyExc_FileNotFoundError;
        err = ENOENT;
        break;
    case EIDRM:
        msg = PyUnicode_FromFormat("%s failed: semaphore set %d was removed",
                                   call, semid);
        type = PyExc_FileNotFoundError;
        break;
    case ERANGE:
        PyErr_Format(PyExc_ValueError,
                     "%s failed: the operation would take a semaphore of set "
                     "%d past its maximum value SEMVMX (%d), or its undo "
                     "adjustment past SEMAEM", call, semid, (int)SEMVMX);
        return NULL;
    case E2BIG:
        PyErr_Format(PyExc_ValueError,
                     "%s failed: more operations in one call than the "
                     "system allows (SEMOPM, /proc/sys/kernel/sem)", call);
        return NULL;
    case EFBIG:
        PyErr_Format(PyExc_ValueError,
                     "%s failed: semaphore index out of range for set %d",
                     call, semid);
        return NULL;
    default:
        /* OSError(err, msg) picks the subclass (PermissionError, ...). */
        msg = PyUnicode_FromFormat("%s failed: %s", call, strerror(err));
        type = PyExc_OSError;
        break;
    }
    if (msg == NULL) {
        return NULL;
    }
    args = Py_BuildValue("(iN)", err, msg);   /* steals msg */
    if (args == NULL) {
        return NULL;
    }
    /* Instantiating the subclass itself keeps its type whatever the errno;
     * for plain OSError, shmipc_raise_oserror raises the subclass errno
     * picks (PyErr_SetObject would leave OSError on 3.9/3.10, which
     * `except PermissionError` misses). */
    if (type == PyExc_OSError) {
        shmipc_raise_oserror(args);
    }
    else {
        PyErr_SetObject(type, args);
    }
    Py_DECREF(args);
    return NULL;
}

static int
raise_sem_error_int(int err, const char *call, int semid)
{
    raise_sem_error(err, call, semid);
    return -1;
}

/* ---- module functions ------------------------------------------------- */

static PyObject *
core_semget(PyObject *module, PyObject *args)
{
    key_t key;
    int nsems, flags, semid, err;

    if (!PyArg_ParseTuple(args, "O&ii:semget", shmipc_key_converter, &key,
                          &nsems, &flags)) {
        return NULL;
    }
    if (nsems < 0) {
        PyErr_SetString(PyExc_ValueError, "nsems must not be negative");
        return NULL;
    }
    semid = semget(key, nsems, flags);
    err = errno;
    if (semid < 0) {
        if (err == EINVAL) {
            /* semget's EINVAL is about nsems, not a missing id. */
            PyErr_Format(PyExc_ValueError,
                         "semget() failed: nsems %d is out of range "
                         "(more than SEMMSL, or more than the existing set "
                         "holds)", nsems);
            return NULL;
        }
        return shmipc_raise_errno(err, "semget");
    }
    return PyLong_FromLong(semid);
}

static int
stat_semid(int semid, struct semid_ds *ds)
{
    union shmipc_semun arg;
    arg.buf = ds;
    if (semctl(semid, 0, IPC_STAT, arg) < 0) {
        return raise_sem_error_int(errno, "semctl(IPC_STAT)", semid);
    }
    return 0;
}

static int
parse_semid(PyObject *args, const char *format, int *semid)
{
    if (!PyArg_ParseTuple(args, format, semid)) {
        return -1;
    }
    if (*semid < 0) {
        PyErr_SetString(PyExc_ValueError, "semid must not be negative");
        return -1;
    }
    return 0;
}

static PyObject *
core_sem_stat(PyObject *module, PyObject *args)
{
    int semid;
    struct semid_ds ds;

    if (parse_semid(args, "i:sem_stat", &semid) < 0) {
        return NULL;
    }
    if (stat_semid(semid, &ds) < 0) {
        return NULL;
    }
    /* key, semid, mode, uid, gid, cuid, cgid, nsems, otime, ctime */
    return Py_BuildValue(
        "(NiIIIIInLL)",
        shmipc_key_to_py(SHMIPC_SEM_PERM_KEY(ds.sem_perm)), semid,
        (unsigned int)(ds.sem_perm.mode & 0777),
        (unsigned int)ds.sem_perm.uid, (unsigned int)ds.sem_perm.gid,
        (unsigned int)ds.sem_perm.cuid, (unsigned int)ds.sem_perm.cgid,
        (Py_ssize_t)ds.sem_nsems, (long long)ds.sem_otime,
        (long long)ds.sem_ctime);
}

static PyObject *
core_sem_set(PyObject *module, PyObject *args)
{
    int semid;
    long long uid, gid, mode;
    struct semid_ds ds;
    union shmipc_semun arg;

    if (!PyArg_ParseTuple(args, "iLLL:sem_set", &semid, &uid, &gid, &mode)) {
        return NULL;
    }
    if (semid < 0) {
        PyErr_SetString(PyExc_ValueError, "semid must not be negative");
        return NULL;
    }
    if (mode < -1 || mode > 0777) {
        PyErr_SetString(PyExc_ValueError, "mode must be in 0..0o777");
        return NULL;
    }
    if (uid < -1 || uid > (long long)UINT32_MAX - 1 || gid < -1 ||
        gid > (long long)UINT32_MAX - 1) {
        PyErr_SetString(PyExc_ValueError, "uid and gid must be valid ids");
        return NULL;
    }
    if (stat_semid(semid, &ds) < 0) {
        return NULL;
    }
    if (uid >= 0) {
        ds.sem_perm.uid = (uid_t)uid;
    }
    if (gid >= 0) {
        ds.sem_perm.gid = (gid_t)gid;
    }
    if (mode >= 0) {
        ds.sem_perm.mode = (ds.sem_perm.mode & ~0777) | (unsigned int)mode;
    }
    arg.buf = &ds;
    if (semctl(semid, 0, IPC_SET, arg) < 0) {
        return raise_sem_error(errno, "semctl(IPC_SET)", semid);
    }
    Py_RETURN_NONE;
}

static PyObject *
core_sem_remove(PyObject *module, PyObject *args)
{
    int semid;
    if (parse_semid(args, "i:sem_remove", &semid) < 0) {
        return NULL;
    }
    if (semctl(semid, 0, IPC_RMID) < 0) {
        return raise_sem_error(errno, "semctl(IPC_RMID)", semid);
    }
    Py_RETURN_NONE;
}

/* ---- the blocking core ------------------------------------------------ */

/* semop() `nops` operations: first without blocking, then blocking until
 * `timeout` (seconds, < 0 forever).  `nowait` is scratch space for nops
 * entries.  Returns 1 when applied, 0 when the time ran out or an
 * operation flagged IPC_NOWAIT would block, -1 with an exception set. */
static int
do_semop(int semid, struct sembuf *ops, struct sembuf *nowait, size_t nops,
         double timeout, const char *call)
{
    shmipc_deadline deadline;
    struct timespec left;
    size_t i;
    int rc, err;

    for (i = 0; i < nops; i++) {
        nowait[i] = ops[i];
        nowait[i].sem_flg |= IPC_NOWAIT;
    }
    rc = semop(semid, nowait, nops);
    if (rc == 0) {
        return 1;
    }
    err = errno;
    if (err != EAGAIN && err != EINTR) {
        return raise_sem_error_int(err, call, semid);
    }
    if (err == EINTR && PyErr_CheckSignals() < 0) {
        return -1;
    }
    if (timeout == 0.0) {
        return 0;       /* timeout=0 never blocks */
    }
    shmipc_deadline_start(&deadline, timeout);
    for (;;) {
        struct timespec *tsp = NULL;
        if (!deadline.infinite) {
            if (!shmipc_deadline_left(&deadline, &left)) {
                /* Out of time (after a signal): one last look. */
                rc = semop(semid, nowait, nops);
                if (rc == 0) {
                    return 1;
                }
                err = errno;
                if (err == EAGAIN || err == EINTR) {
                    return 0;
                }
                return raise_sem_error_int(err, call, semid);
            }
            tsp = &left;
        }
#ifdef SHMIPC_HAVE_SEMTIMEDOP
        Py_BEGIN_ALLOW_THREADS
        rc = semtimedop(semid, ops, nops, tsp);
        err = rc < 0 ? errno : 0;
        Py_END_ALLOW_THREADS
#else
        if (tsp == NULL) {
            Py_BEGIN_ALLOW_THREADS
            rc = semop(semid, ops, nops);
            err = rc < 0 ? errno : 0;
            Py_END_ALLOW_THREADS
        }
        else {
            /* No semtimedop: poll without blocking, sleeping a little. */
            struct timespec nap = {0, 2000000L};    /* 2 ms */
            if (tsp->tv_sec == 0 && tsp->tv_nsec < nap.tv_nsec) {
                nap.tv_nsec = tsp->tv_nsec;
            }
            Py_BEGIN_ALLOW_THREADS
            rc = semop(semid, nowait, nops);
            err = rc < 0 ? errno : 0;
            if (rc < 0 && err == EAGAIN) {
                for (i = 0; i < nops; i++) {
                    if (ops[i].sem_flg & IPC_NOWAIT) {
                        break;  /* the caller asked not to wait on this */
                    }
                }
                if (i == nops) {
                    nanosleep(&nap, NULL);
                    err = EINTR;    /* loop: recompute, try again */
                }
            }
            Py_END_ALLOW_THREADS
        }
#endif
        if (rc == 0) {
            return 1;
        }
        if (err == EAGAIN) {
            return 0;
        }
        if (err != EINTR) {
            return raise_sem_error_int(err, call, semid);
        }
        if (PyErr_CheckSignals() < 0) {
            return -1;
        }
    }
}

/* ---- the Semaphore type ----------------------------------------------- */

/* "O&" converter for small int arguments (n, index, value): an int, not a
 * bool; values beyond int are clamped so the range checks below reject
 * them with a ValueError naming the valid range. */
static int
int_arg(PyObject *obj, void *out)
{
    long long value;
    int overflow = 0;

    if (PyBool_Check(obj) || !PyLong_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "expected an int, not %.100s",
                     Py_TYPE(obj)->tp_name);
        return 0;
    }
    value = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (value == -1 && PyErr_Occurred()) {
        return 0;
    }
    if (overflow > 0 || value > INT_MAX) {
        value = INT_MAX;
    }
    else if (overflow < 0 || value < INT_MIN) {
        value = INT_MIN;
    }
    *(int *)out = (int)value;
    return 1;
}

static int
check_usable(SemaphoreObject *self)
{
    if (self->removed) {
        PyErr_Format(PyExc_ValueError,
                     "operation on a removed semaphore set (semid %d)",
                     self->semid);
        return -1;
    }
    return 0;
}

static int
check_index(SemaphoreObject *self, int index)
{
    if (index < 0 || index >= self->nsems) {
        PyErr_Format(PyExc_ValueError,
                     "semaphore index out of range: the set has %d "
                     "semaphore(s), valid indices are 0..%d", self->nsems,
                     self->nsems - 1);
        return -1;
    }
    return 0;
}

static int
check_amount(int n, const char *what)
{
    if (n < 1 || n > SEMVMX) {
        if (n == INT_MAX || n == INT_MIN) {
            PyErr_Format(PyExc_ValueError, "%s must be in 1..%d (SEMVMX)",
                         what, (int)SEMVMX);
        }
        else {
            PyErr_Format(PyExc_ValueError,
                         "%s must be in 1..%d (SEMVMX), not %d", what,
                         (int)SEMVMX, n);
        }
        return -1;
    }
    return 0;
}

static int
check_value(int value)
{
    if (value < 0 || value > SEMVMX) {
        PyErr_Format(PyExc_ValueError,
                     "a semaphore value must be in 0..%d (SEMVMX)",
                     (int)SEMVMX);
        return -1;
    }
    return 0;
}

static PyObject *
Semaphore_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"semid", NULL};
    int semid;
    struct semid_ds ds;
    SemaphoreObject *self;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "i:Semaphore", kwlist,
                                     &semid)) {
        return NULL;
    }
    if (semid < 0) {
        PyErr_SetString(PyExc_ValueError, "semid must not be negative");
        return NULL;
    }
    if (stat_semid(semid, &ds) < 0) {
        return NULL;
    }
    if (ds.sem_nsems > (unsigned long)INT_MAX) {
        PyErr_SetString(PyExc_OverflowError, "semaphore set too large");
        return NULL;
    }
    self = (SemaphoreObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->semid = semid;
    self->key = SHMIPC_SEM_PERM_KEY(ds.sem_perm);
    self->nsems = (int)ds.sem_nsems;
    self->removed = 0;
    return (PyObject *)self;
}

static int
Semaphore_traverse(SemaphoreObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    return 0;
}

static void
Semaphore_dealloc(SemaphoreObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)self);
    }
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

/* One operation on one semaphore, through the blocking core. */
static PyObject *
single_op(SemaphoreObject *self, int index, int delta, int flags,
          double timeout, const char *call)
{
    struct sembuf op[1], scratch[1];
    int rc;

    op[0].sem_num = (unsigned short)index;
    op[0].sem_op = (short)delta;
    op[0].sem_flg = (short)flags;
    rc = do_semop(self->semid, op, scratch, 1, timeout, call);
    if (rc < 0) {
        return NULL;
    }
    return PyBool_FromLong(rc);
}

static PyObject *
Semaphore_acquire(SemaphoreObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"timeout", "n", "undo", "index", NULL};
    double timeout = -1.0;
    int n = 1, undo = 0, index = 0;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O&$O&pO&:acquire", kwlist,
                                     shmipc_timeout_converter, &timeout,
                                     int_arg, &n, &undo, int_arg, &index)) {
        return NULL;
    }
    if (check_usable(self) < 0 || check_amount(n, "n") < 0 ||
        check_index(self, index) < 0) {
        return NULL;
    }
    return single_op(self, index, -n, undo ? SEM_UNDO : 0, timeout,
                     "semop()");
}

static PyObject *
Semaphore_release(SemaphoreObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"n", "undo", "index", NULL};
    int n = 1, undo = 0, index = 0;
    PyObject *res;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O&$pO&:release", kwlist,
                                     int_arg, &n, &undo, int_arg, &index)) {
        return NULL;
    }
    if (check_usable(self) < 0 || check_amount(n, "n") < 0 ||
        check_index(self, index) < 0) {
        return NULL;
    }
    /* A positive operation never waits: EAGAIN cannot happen. */
    res = single_op(self, index, n, undo ? SEM_UNDO : 0, 0.0,
                    "semop()");
    if (res == NULL) {
        return NULL;
    }
    Py_DECREF(res);
    Py_RETURN_NONE;
}

static PyObject *
Semaphore_wait_zero(SemaphoreObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"timeout", "index", NULL};
    double timeout = -1.0;
    int index = 0;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O&$O&:wait_zero", kwlist,
                                     shmipc_timeout_converter, &timeout,
                                     int_arg, &index)) {
        return NULL;
    }
    if (check_usable(self) < 0 || check_index(self, index) < 0) {
        return NULL;
    }
    return single_op(self, index, 0, 0, timeout, "semop()");
}

/* Fill one sembuf from an (index, delta, flags) sequence item. */
static int
parse_op(SemaphoreObject *self, PyObject *item, Py_ssize_t i,
         struct sembuf *op)
{
    PyObject *fast = NULL;
    long vals[3];
    Py_ssize_t k;
    int result = -1;

    fast = PySequence_Fast(item, "");
    if (fast == NULL || PySequence_Fast_GET_SIZE(fast) != 3) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError,
                     "ops[%zd] must be an (index, delta, flags) triple", i);
        goto done;
    }
    for (k = 0; k < 3; k++) {
        PyObject *v = PySequence_Fast_GET_ITEM(fast, k);
        if (PyBool_Check(v) || !PyLong_Check(v)) {
            PyErr_Format(PyExc_TypeError,
                         "ops[%zd][%zd] must be an int, not %.100s", i, k,
                         Py_TYPE(v)->tp_name);
            goto done;
        }
        vals[k] = PyLong_AsLong(v);
        if (vals[k] == -1 && PyErr_Occurred()) {
            PyErr_Clear();
            vals[k] = LONG_MIN;     /* out of every range checked below */
        }
    }
    if (vals[0] < 0 || vals[0] >= self->nsems) {
        PyErr_Format(PyExc_ValueError,
                     "ops[%zd]: semaphore index out of range: the set has %d "
                     "semaphore(s)", i, self->nsems);
        goto done;
    }
    if (vals[1] < -SEMVMX || vals[1] > SEMVMX) {
        PyErr_Format(PyExc_ValueError,
                     "ops[%zd]: delta must be in -%d..%d (SEMVMX)", i,
                     (int)SEMVMX, (int)SEMVMX);
        goto done;
    }
    if (vals[2] & ~(long)(SEM_UNDO | IPC_NOWAIT)) {
        PyErr_Format(PyExc_ValueError,
                     "ops[%zd]: flags may only combine SEM_UNDO and "
                     "IPC_NOWAIT", i);
        goto done;
    }
    op->sem_num = (unsigned short)vals[0];
    op->sem_op = (short)vals[1];
    op->sem_flg = (short)vals[2];
    result = 0;

done:
    Py_XDECREF(fast);
    return result;
}

static PyObject *
Semaphore_semop(SemaphoreObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"ops", "timeout", NULL};
    PyObject *ops_obj, *fast = NULL, *result = NULL;
    double timeout = -1.0;
    struct sembuf stack_ops[2 * SHMIPC_STACK_OPS];
    struct sembuf *ops = stack_ops;
    Py_ssize_t n, i;
    int rc;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|O&:semop", kwlist,
                                     &ops_obj, shmipc_timeout_converter,
                                     &timeout)) {
        return NULL;
    }
    if (check_usable(self) < 0) {
        return NULL;
    }
    fast = PySequence_Fast(ops_obj, "ops must be a sequence of "
                                    "(index, delta, flags) triples");
    if (fast == NULL) {
        return NULL;
    }
    /* PySequence_Fast hands a list back as is; parsing an item may run
     * Python code (iterating a triple that is not a list or tuple), which
     * could shrink that list under the loop below.  Work on a tuple. */
    if (PyList_Check(fast)) {
        PyObject *tuple = PyList_AsTuple(fast);
        Py_DECREF(fast);
        fast = tuple;
        if (fast == NULL) {
            return NULL;
        }
    }
    n = PySequence_Fast_GET_SIZE(fast);
    if (n < 1) {
        PyErr_SetString(PyExc_ValueError, "ops must not be empty");
        goto error;
    }
    if (n > SHMIPC_MAX_OPS) {
        PyErr_SetString(PyExc_ValueError,
                        "more operations in one call than the system allows "
                        "(SEMOPM)");
        goto error;
    }
    if (n > SHMIPC_STACK_OPS) {
        ops = PyMem_New(struct sembuf, 2 * (size_t)n);
        if (ops == NULL) {
            PyErr_NoMemory();
            goto error;
        }
    }
    for (i = 0; i < n; i++) {
        if (parse_op(self, PySequence_Fast_GET_ITEM(fast, i), i, &ops[i]) <
            0) {
            goto error;
        }
    }
    rc = do_semop(self->semid, ops, ops + n, (size_t)n, timeout,
                  "semop()");
    if (rc < 0) {
        goto error;
    }
    result = PyBool_FromLong(rc);

error:
    if (ops != stack_ops) {
        PyMem_Free(ops);
    }
    Py_XDECREF(fast);
    return result;
}

/* semctl() for the per-semaphore int queries. */
static PyObject *
sem_query(SemaphoreObject *self, PyObject *args, PyObject *kwds, int cmd,
          const char *format, const char *call)
{
    static char *kwlist[] = {"index", NULL};
    int index = 0, rc;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, format, kwlist, int_arg,
                                     &index)) {
        return NULL;
    }
    if (check_usable(self) < 0 || check_index(self, index) < 0) {
        return NULL;
    }
    rc = semctl(self->semid, index, cmd);
    if (rc < 0) {
        return raise_sem_error(errno, call, self->semid);
    }
    return PyLong_FromLong(rc);
}

static PyObject *
Semaphore_value_of(SemaphoreObject *self, PyObject *args, PyObject *kwds)
{
    return sem_query(self, args, kwds, GETVAL, "|O&:value_of",
                     "semctl(GETVAL)");
}

static PyObject *
Semaphore_waiting_of(SemaphoreObject *self, PyObject *args, PyObject *kwds)
{
    return sem_query(self, args, kwds, GETNCNT, "|O&:waiting_of",
                     "semctl(GETNCNT)");
}

static PyObject *
Semaphore_zero_waiting_of(SemaphoreObject *self, PyObject *args,
                          PyObject *kwds)
{
    return sem_query(self, args, kwds, GETZCNT, "|O&:zero_waiting_of",
                     "semctl(GETZCNT)");
}

static PyObject *
Semaphore_last_pid_of(SemaphoreObject *self, PyObject *args, PyObject *kwds)
{
    return sem_query(self, args, kwds, GETPID, "|O&:last_pid_of",
                     "semctl(GETPID)");
}

static PyObject *
Semaphore_set_value(SemaphoreObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"value", "index", NULL};
    int value, index = 0;
    union shmipc_semun arg;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&|O&:set_value", kwlist,
                                     int_arg, &value, int_arg, &index)) {
        return NULL;
    }
    if (check_usable(self) < 0 || check_value(value) < 0 ||
        check_index(self, index) < 0) {
        return NULL;
    }
    arg.val = value;
    if (semctl(self->semid, index, SETVAL, arg) < 0) {
        return raise_sem_error(errno, "semctl(SETVAL)", self->semid);
    }
    Py_RETURN_NONE;
}

static PyObject *
Semaphore_get_values(SemaphoreObject *self, PyObject *Py_UNUSED(ignored))
{
    unsigned short *values = NULL;
    union shmipc_semun arg;
    PyObject *result = NULL;
    int i;

    if (check_usable(self) < 0) {
        return NULL;
    }
    values = PyMem_New(unsigned short, (size_t)self->nsems + 1);
    if (values == NULL) {
        return PyErr_NoMemory();
    }
    arg.array = values;
    if (semctl(self->semid, 0, GETALL, arg) < 0) {
        raise_sem_error(errno, "semctl(GETALL)", self->semid);
        goto error;
    }
    result = PyTuple_New(self->nsems);
    if (result == NULL) {
        goto error;
    }
    for (i = 0; i < self->nsems; i++) {
        PyObject *v = PyLong_FromLong(values[i]);
        if (v == NULL) {
            Py_CLEAR(result);
            goto error;
        }
        PyTuple_SET_ITEM(result, i, v);
    }

error:
    PyMem_Free(values);
    return result;
}

static PyObject *
Semaphore_set_values(SemaphoreObject *self, PyObject *values_obj)
{
    unsigned short *values = NULL;
    union shmipc_semun arg;
    PyObject *fast = NULL, *result = NULL;
    Py_ssize_t i;

    if (check_usable(self) < 0) {
        return NULL;
    }
    fast = PySequence_Fast(values_obj, "values must be a sequence of ints");
    if (fast == NULL) {
        return NULL;
    }
    if (PySequence_Fast_GET_SIZE(fast) != self->nsems) {
        PyErr_Format(PyExc_ValueError,
                     "set_values() needs exactly %d value(s), one per "
                     "semaphore, not %zd", self->nsems,
                     PySequence_Fast_GET_SIZE(fast));
        goto error;
    }
    values = PyMem_New(unsigned short, (size_t)self->nsems + 1);
    if (values == NULL) {
        PyErr_NoMemory();
        goto error;
    }
    for (i = 0; i < self->nsems; i++) {
        PyObject *v = PySequence_Fast_GET_ITEM(fast, i);
        long value;
        if (PyBool_Check(v) || !PyLong_Check(v)) {
            PyErr_Format(PyExc_TypeError,
                         "values[%zd] must be an int, not %.100s", i,
                         Py_TYPE(v)->tp_name);
            goto error;
        }
        value = PyLong_AsLong(v);
        if (value == -1 && PyErr_Occurred()) {
            PyErr_Clear();
            value = -1;
        }
        if (value < 0 || value > SEMVMX) {
            PyErr_Format(PyExc_ValueError,
                         "values[%zd]: a semaphore value must be in 0..%d "
                         "(SEMVMX)", i, (int)SEMVMX);
            goto error;
        }
        values[i] = (unsigned short)value;
    }
    arg.array = values;
    if (semctl(self->semid, 0, SETALL, arg) < 0) {
        raise_sem_error(errno, "semctl(SETALL)", self->semid);
        goto error;
    }
    result = Py_None;
    Py_INCREF(result);

error:
    PyMem_Free(values);
    Py_XDECREF(fast);
    return result;
}

static PyObject *
Semaphore_remove(SemaphoreObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->removed) {
        Py_RETURN_NONE;     /* idempotent on this handle */
    }
    if (semctl(self->semid, 0, IPC_RMID) < 0) {
        return raise_sem_error(errno, "semctl(IPC_RMID)", self->semid);
    }
    self->removed = 1;
    Py_RETURN_NONE;
}

static PyObject *
Semaphore_get_semid(SemaphoreObject *self, void *closure)
{
    return PyLong_FromLong(self->semid);
}

static PyObject *
Semaphore_get_key(SemaphoreObject *self, void *closure)
{
    return shmipc_key_to_py(self->key);
}

static PyObject *
Semaphore_get_count(SemaphoreObject *self, void *closure)
{
    return PyLong_FromLong(self->nsems);
}

static PyObject *
Semaphore_get_removed(SemaphoreObject *self, void *closure)
{
    return PyBool_FromLong(self->removed);
}

#define KW (METH_VARARGS | METH_KEYWORDS)
#define CF(f) (PyCFunction)(void (*)(void))(f)

static PyMethodDef Semaphore_methods[] = {
    {"acquire", CF(Semaphore_acquire), KW,
     "acquire($self, timeout=None, *, n=1, undo=False, index=0)\n--\n\n"
     "Subtract n from semaphore `index`, waiting until that is possible.\n"
     "True when done, False when `timeout` seconds ran out (timeout=0 never\n"
     "blocks).  undo=True adds SEM_UNDO: the kernel gives n back if this\n"
     "process dies."},
    {"release", CF(Semaphore_release), KW,
     "release($self, n=1, *, undo=False, index=0)\n--\n\n"
     "Add n to semaphore `index` (never blocks).  undo=True adds SEM_UNDO:\n"
     "the kernel takes n back when this process exits."},
    {"wait_zero", CF(Semaphore_wait_zero), KW,
     "wait_zero($self, timeout=None, *, index=0)\n--\n\n"
     "Wait until semaphore `index` is zero.  True, or False on timeout."},
    {"semop", CF(Semaphore_semop), KW,
     "semop($self, ops, timeout=None)\n--\n\n"
     "Apply (index, delta, flags) triples atomically in one semop() call.\n"
     "flags combine SEM_UNDO and IPC_NOWAIT.  True when applied, False on\n"
     "timeout or when an IPC_NOWAIT operation would block."},
    {"value_of", CF(Semaphore_value_of), KW,
     "value_of($self, index=0)\n--\n\n"
     "semctl(GETVAL): the value of one semaphore."},
    {"set_value", CF(Semaphore_set_value), KW,
     "set_value($self, value, index=0)\n--\n\n"
     "semctl(SETVAL).  Clears every process's undo adjustment for it."},
    {"get_values", (PyCFunction)Semaphore_get_values, METH_NOARGS,
     "get_values($self)\n--\n\nsemctl(GETALL): every value, as a tuple."},
    {"set_values", (PyCFunction)Semaphore_set_values, METH_O,
     "set_values($self, values, /)\n--\n\n"
     "semctl(SETALL): one value per semaphore.  Clears undo adjustments."},
    {"waiting_of", CF(Semaphore_waiting_of), KW,
     "waiting_of($self, index=0)\n--\n\n"
     "semctl(GETNCNT): processes waiting for the value to grow."},
    {"zero_waiting_of", CF(Semaphore_zero_waiting_of), KW,
     "zero_waiting_of($self, index=0)\n--\n\n"
     "semctl(GETZCNT): processes waiting for the value to be zero."},
    {"last_pid_of", CF(Semaphore_last_pid_of), KW,
     "last_pid_of($self, index=0)\n--\n\n"
     "semctl(GETPID): pid of the last process to operate on it."},
    {"remove", (PyCFunction)Semaphore_remove, METH_NOARGS,
     "remove($self)\n--\n\n"
     "semctl(IPC_RMID): destroy the set now; every waiter wakes with\n"
     "FileNotFoundError.  Idempotent on this handle."},
    {NULL, NULL, 0, NULL},
};

#undef KW
#undef CF

static PyGetSetDef Semaphore_getset[] = {
    {"semid", (getter)Semaphore_get_semid, NULL, "the kernel's set id", NULL},
    {"key", (getter)Semaphore_get_key, NULL,
     "the IPC key (0 = IPC_PRIVATE), as an unsigned int", NULL},
    {"count", (getter)Semaphore_get_count, NULL,
     "number of semaphores in the set", NULL},
    {"removed", (getter)Semaphore_get_removed, NULL,
     "True once remove() was called on this handle", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef Semaphore_members[] = {
    {"__weaklistoffset__", T_PYSSIZET,
     offsetof(SemaphoreObject, weakreflist), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot Semaphore_slots[] = {
    {Py_tp_new, Semaphore_new},
    {Py_tp_dealloc, Semaphore_dealloc},
    {Py_tp_traverse, Semaphore_traverse},
    {Py_tp_methods, Semaphore_methods},
    {Py_tp_getset, Semaphore_getset},
    {Py_tp_members, Semaphore_members},
    {Py_tp_doc, "A handle on a System V semaphore set, by id (low level)."},
    {0, NULL},
};

static PyType_Spec Semaphore_spec = {
    .name = "shmipc._core.Semaphore",
    .basicsize = sizeof(SemaphoreObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = Semaphore_slots,
};

static PyMethodDef semaphore_functions[] = {
    {"semget", core_semget, METH_VARARGS,
     "semget(key, nsems, flags, /)\n--\n\nCreate or look up a set; its id."},
    {"sem_stat", core_sem_stat, METH_VARARGS,
     "sem_stat(semid, /)\n--\n\nsemctl(IPC_STAT) as a tuple: key, semid, mode, "
     "uid, gid, cuid, cgid, nsems, otime, ctime."},
    {"sem_set", core_sem_set, METH_VARARGS,
     "sem_set(semid, uid, gid, mode, /)\n--\n\nsemctl(IPC_SET); -1 keeps a "
     "field."},
    {"sem_remove", core_sem_remove, METH_VARARGS,
     "sem_remove(semid, /)\n--\n\nsemctl(IPC_RMID)."},
    {NULL, NULL, 0, NULL},
};

int
shmipc_add_semaphore(PyObject *module, shmipc_state *st)
{
    st->semaphore_type = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &Semaphore_spec, NULL);
    if (st->semaphore_type == NULL) {
        return -1;
    }
    if (PyModule_AddType(module, st->semaphore_type) < 0) {
        return -1;
    }
    if (PyModule_AddFunctions(module, semaphore_functions) < 0) {
        return -1;
    }
    return 0;
}
