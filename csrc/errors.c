/* errors.c -- errno -> OSError, and the deadline arithmetic of blocking calls.
 *
 * In Python terms:
 *     raise OSError(err, f"{call}() failed: {os.strerror(err)}")
 *     deadline = time.monotonic() + timeout
 */
#include "shmipc.h"

#include <math.h>
#include <string.h>

PyObject *
shmipc_raise_oserror(PyObject *args)
{
    /* Make the instance here: OSError(errno, ...) returns the subclass, and
     * raising it by its own type is what `except FileNotFoundError` matches.
     * PyErr_SetObject(PyExc_OSError, args) would leave the raised type
     * OSError on Python 3.9 and 3.10, where except clauses miss it. */
    PyObject *exc = PyObject_Call(PyExc_OSError, args, NULL);
    if (exc != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
    return NULL;
}

PyObject *
shmipc_raise_errno(int err, const char *call)
{
    /* OSError(errno, message) maps errno to its subclass itself. */
    PyObject *args = Py_BuildValue("(is)", err, "");
    PyObject *msg = NULL;
    if (args == NULL) {
        return NULL;
    }
    /* "shmat" -> "shmat() failed"; "shmctl(IPC_STAT)" is already a call. */
    msg = PyUnicode_FromFormat(strchr(call, '(') ? "%s failed: %s"
                                                 : "%s() failed: %s",
                               call, strerror(err));
    if (msg == NULL) {
        Py_DECREF(args);
        return NULL;
    }
    /* PyTuple_SetItem steals msg and drops the placeholder. */
    if (PyTuple_SetItem(args, 1, msg) < 0) {
        Py_DECREF(args);
        return NULL;
    }
    shmipc_raise_oserror(args);
    Py_DECREF(args);
    return NULL;
}

int
shmipc_raise_errno_int(int err, const char *call)
{
    shmipc_raise_errno(err, call);
    return -1;
}

int
shmipc_timeout_converter(PyObject *obj, void *out)
{
    double *timeout = (double *)out;
    double value;

    if (obj == Py_None) {
        *timeout = -1.0;
        return 1;
    }
    if (PyBool_Check(obj) || !(PyFloat_Check(obj) || PyLong_Check(obj))) {
        PyErr_Format(PyExc_TypeError,
                     "timeout must be None or a number of seconds, not %.100s",
                     Py_TYPE(obj)->tp_name);
        return 0;
    }
    /* Read the number itself: no __float__ or __lt__ of a subclass runs
     * here, so no Python code can change what the caller checked. */
    if (PyFloat_Check(obj)) {
        value = PyFloat_AS_DOUBLE(obj);
    }
    else {
        int overflow = 0;
        (void)PyLong_AsLongLongAndOverflow(obj, &overflow);
        if (PyErr_Occurred()) {
            return 0;
        }
        if (overflow != 0) {
            /* An int too large for a long long: longer than anyone waits
             * (or, negative, as invalid as -1). */
            value = overflow > 0 ? INFINITY : -1.0;
        }
        else {
            value = PyLong_AsDouble(obj);
            if (value == -1.0 && PyErr_Occurred()) {
                return 0;
            }
        }
    }
    if (isnan(value) || value < 0.0) {
        PyErr_SetString(PyExc_ValueError,
                        "timeout must be None or a non-negative number");
        return 0;
    }
    if (isinf(value)) {
        value = -1.0;  /* inf means forever */
    }
    *timeout = value;
    return 1;
}

void
shmipc_deadline_start(shmipc_deadline *d, double timeout)
{
    if (timeout < 0.0) {
        d->infinite = 1;
        d->deadline.tv_sec = 0;
        d->deadline.tv_nsec = 0;
        return;
    }
    d->infinite = 0;
    clock_gettime(CLOCK_MONOTONIC, &d->deadline);
    /* Cap absurd timeouts so the arithmetic cannot overflow time_t. */
    if (timeout > 1e9) {
        timeout = 1e9;
    }
    {
        double whole = floor(timeout);
        long nsec = (long)((timeout - whole) * 1e9);
        d->deadline.tv_sec += (time_t)whole;
        d->deadline.tv_nsec += nsec;
        if (d->deadline.tv_nsec >= 1000000000L) {
            d->deadline.tv_sec += 1;
            d->deadline.tv_nsec -= 1000000000L;
        }
    }
}

int
shmipc_deadline_left(const shmipc_deadline *d, struct timespec *left)
{
    struct timespec now;
    if (d->infinite) {
        return 1;
    }
    clock_gettime(CLOCK_MONOTONIC, &now);
    left->tv_sec = d->deadline.tv_sec - now.tv_sec;
    left->tv_nsec = d->deadline.tv_nsec - now.tv_nsec;
    if (left->tv_nsec < 0) {
        left->tv_sec -= 1;
        left->tv_nsec += 1000000000L;
    }
    if (left->tv_sec < 0 || (left->tv_sec == 0 && left->tv_nsec == 0)) {
        left->tv_sec = 0;
        left->tv_nsec = 0;
        return 0;
    }
    return 1;
}

void
shmipc_deadline_realtime(const shmipc_deadline *d, struct timespec *abs)
{
    struct timespec left = {0, 0};
    clock_gettime(CLOCK_REALTIME, abs);
    if (d->infinite) {
        abs->tv_sec += 365L * 24 * 3600;  /* callers loop; a year is enough */
        return;
    }
    (void)shmipc_deadline_left(d, &left);
    abs->tv_sec += left.tv_sec;
    abs->tv_nsec += left.tv_nsec;
    if (abs->tv_nsec >= 1000000000L) {
        abs->tv_sec += 1;
        abs->tv_nsec -= 1000000000L;
    }
}
