/* shmipc.h -- the one internal header every csrc file includes.
 *
 * It holds the module state (the heap types and exception types, so nothing
 * lives in C globals), the errno -> OSError helpers (errors.c), the
 * timeout/deadline helpers shared by every blocking call (errors.c), and the
 * entry point each csrc file exports so module.c can add its types.
 */
#ifndef SHMIPC_H
#define SHMIPC_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <stdint.h>
#include <time.h>
#include <sys/types.h>
#include <sys/ipc.h>

/* ---- feature macros --------------------------------------------------- */
#if defined(__GLIBC__) && ((__GLIBC__ > 2) || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 30))
#define SHMIPC_HAVE_SEM_CLOCKWAIT 1          /* sem_clockwait(CLOCK_MONOTONIC) */
#define SHMIPC_HAVE_PTHREAD_CLOCKLOCK 1      /* pthread_mutex_clocklock */
#endif
#if defined(__linux__)
#define SHMIPC_HAVE_SEMTIMEDOP 1             /* semtimedop(2) */
#define SHMIPC_HAVE_PROC_SYSVIPC 1           /* /proc/sysvipc/{shm,sem} */
#endif

/* PyModule_AddObjectRef appeared in 3.10; keep 3.9 building. */
#if PY_VERSION_HEX < 0x030A0000
static inline int
shmipc_add_object_ref(PyObject *mod, const char *name, PyObject *value)
{
    Py_XINCREF(value);
    if (PyModule_AddObject(mod, name, value) < 0) {
        Py_XDECREF(value);
        return -1;
    }
    return 0;
}
#define PyModule_AddObjectRef shmipc_add_object_ref
#endif

/* ---- module state ----------------------------------------------------- */
typedef struct {
    PyTypeObject *segment_type;         /* segment.c */
    PyTypeObject *semaphore_type;       /* semaphore.c: SysV semaphore set */
    PyTypeObject *named_semaphore_type; /* posix_semaphore.c: sem_open */
    PyTypeObject *shared_semaphore_type;/* posix_semaphore.c: sem_t in a buffer */
    PyTypeObject *robust_mutex_type;    /* mutex.c */
    PyTypeObject *atomic_view_type;     /* atomics.c */
    PyTypeObject *futex_lock_type;      /* futex.c */
    PyObject *owner_died_error;         /* mutex.c: raised with the lock held */
} shmipc_state;

static inline shmipc_state *
shmipc_get_state(PyObject *module)
{
    return (shmipc_state *)PyModule_GetState(module);
}

/* Each csrc file adds its types/functions/constants to the module here.
 * Called from module.c's Py_mod_exec slot; return 0 or -1 with an error. */
int shmipc_add_segment(PyObject *module, shmipc_state *st);
int shmipc_add_semaphore(PyObject *module, shmipc_state *st);
int shmipc_add_posix_semaphore(PyObject *module, shmipc_state *st);
int shmipc_add_mutex(PyObject *module, shmipc_state *st);
int shmipc_add_atomics(PyObject *module, shmipc_state *st);
int shmipc_add_futex(PyObject *module, shmipc_state *st);
int shmipc_add_window(PyObject *module, shmipc_state *st);

/* ---- futex(2) on shared words (futex.c) --------------------------------- */
/* One FUTEX_WAIT (not private: works across processes) while *word ==
 * expected, at most *rel (NULL: no limit).  Returns 0 or the errno
 * (EAGAIN, ETIMEDOUT, EINTR, ...).  Call with the GIL released. */
int shmipc_futex_wait(uint32_t *word, uint32_t expected,
                      const struct timespec *rel);
/* Wake up to count waiters on word; errors are ignored (advisory). */
void shmipc_futex_wake(uint32_t *word, int count);
/* Bumped in a forked child: per-process state recorded under an older
 * generation belongs to the parent's threads. */
unsigned long shmipc_fork_generation(void);

/* ---- errors (errors.c) ------------------------------------------------ */
/* Raise OSError(err, "<call>() failed: <strerror>"); Python picks the
 * subclass (FileNotFoundError, PermissionError, ...) from err.  Always
 * returns NULL.  Save errno at once after the failing call and pass it. */
PyObject *shmipc_raise_errno(int err, const char *call);
/* Same, for callers returning int: always returns -1. */
int shmipc_raise_errno_int(int err, const char *call);
/* Raise OSError(*args) (errno, message[, filename]) as the subclass errno
 * picks, correctly on every supported Python.  Always returns NULL. */
PyObject *shmipc_raise_oserror(PyObject *args);

/* ---- timeouts (errors.c) ---------------------------------------------- */
/* A deadline on CLOCK_MONOTONIC.  `infinite` for timeout=None. */
typedef struct {
    int infinite;
    struct timespec deadline;   /* valid when !infinite */
} shmipc_deadline;

/* PyArg "O&" converter: None -> -1.0 (wait forever); a real number >= 0
 * (int or float, not bool-nonsense like NaN) -> seconds.  Negative or NaN
 * -> ValueError.  Target is a double*. */
int shmipc_timeout_converter(PyObject *obj, void *out);

/* Start a deadline from a timeout in seconds (< 0 means infinite). */
void shmipc_deadline_start(shmipc_deadline *d, double timeout);
/* Time left until the deadline, in *left.  Returns 1 if time is left (or
 * infinite, then *left is untouched), 0 if the deadline has passed. */
int shmipc_deadline_left(const shmipc_deadline *d, struct timespec *left);
/* The deadline as an absolute CLOCK_REALTIME time, for APIs that only take
 * realtime (sem_timedwait without sem_clockwait). */
void shmipc_deadline_realtime(const shmipc_deadline *d, struct timespec *abs);

/* ---- IPC keys (segment.c) --------------------------------------------- */
/* "O&" converter for a key: an int in [-2**31, 2**32) -> key_t. */
int shmipc_key_converter(PyObject *obj, void *out);
/* A key_t as the unsigned Python int users see (as ipcs prints it). */
PyObject *shmipc_key_to_py(key_t key);

#endif /* SHMIPC_H */
