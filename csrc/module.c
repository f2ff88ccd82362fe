/* module.c -- the shmipc._core module: init, module state, constants.
 *
 * In Python terms:
 *     IPC_PRIVATE = 0; IPC_CREAT = 0o1000; ...   (the <sys/ipc.h>, <sys/shm.h>
 *     and <sys/sem.h> constants)
 *     from segment import *; from semaphore import *; ...  (each csrc file
 *     adds its own types and functions through shmipc_add_*)
 *
 * Users never import this module; the shmipc package is the public API.
 */
#include "shmipc.h"

#include <fcntl.h>
#include <semaphore.h>
#include <sys/sem.h>
#include <sys/shm.h>

static int
add_constants(PyObject *m)
{
#define ADD_INT(name) \
    if (PyModule_AddIntConstant(m, #name, (long)(name)) < 0) return -1
    ADD_INT(IPC_PRIVATE);
    ADD_INT(IPC_CREAT);
    ADD_INT(IPC_EXCL);
    ADD_INT(IPC_NOWAIT);
    ADD_INT(IPC_RMID);
    ADD_INT(IPC_SET);
    ADD_INT(IPC_STAT);
    ADD_INT(SHM_RDONLY);
    ADD_INT(SHM_RND);
    ADD_INT(SHMLBA);
#ifdef SHM_REMAP
    ADD_INT(SHM_REMAP);
#endif
#ifdef SHM_EXEC
    ADD_INT(SHM_EXEC);
#endif
#ifdef SHM_HUGETLB
    ADD_INT(SHM_HUGETLB);
#endif
#ifdef SHM_NORESERVE
    ADD_INT(SHM_NORESERVE);
#endif
#ifdef SHM_LOCK
    ADD_INT(SHM_LOCK);
    ADD_INT(SHM_UNLOCK);
#endif
#ifdef SHM_DEST
    ADD_INT(SHM_DEST);
#endif
#ifdef SHM_LOCKED
    ADD_INT(SHM_LOCKED);
#endif
#ifdef SHM_STAT
    ADD_INT(SHM_STAT);
#endif
#ifdef SHM_INFO
    ADD_INT(SHM_INFO);
#endif
#ifdef SHM_STAT_ANY
    ADD_INT(SHM_STAT_ANY);
#endif
    ADD_INT(SEM_UNDO);
#ifdef SEM_VALUE_MAX
    ADD_INT(SEM_VALUE_MAX);
#endif
#ifdef SEMVMX
    ADD_INT(SEMVMX);
#else
    if (PyModule_AddIntConstant(m, "SEMVMX", 32767) < 0) return -1;
#endif
#undef ADD_INT
    if (PyModule_AddIntConstant(m, "PAGE_SIZE", sysconf(_SC_PAGESIZE)) < 0) {
        return -1;
    }
    return 0;
}

static int
core_exec(PyObject *m)
{
    shmipc_state *st = shmipc_get_state(m);

    if (add_constants(m) < 0) {
        return -1;
    }
    if (shmipc_add_segment(m, st) < 0 ||
        shmipc_add_semaphore(m, st) < 0 ||
        shmipc_add_posix_semaphore(m, st) < 0 ||
        shmipc_add_mutex(m, st) < 0 ||
        shmipc_add_atomics(m, st) < 0 ||
        shmipc_add_futex(m, st) < 0 ||
        shmipc_add_window(m, st) < 0) {
        return -1;
    }
    return 0;
}

static int
core_traverse(PyObject *m, visitproc visit, void *arg)
{
    shmipc_state *st = shmipc_get_state(m);
    Py_VISIT(st->segment_type);
    Py_VISIT(st->semaphore_type);
    Py_VISIT(st->named_semaphore_type);
    Py_VISIT(st->shared_semaphore_type);
    Py_VISIT(st->robust_mutex_type);
    Py_VISIT(st->atomic_view_type);
    Py_VISIT(st->futex_lock_type);
    Py_VISIT(st->owner_died_error);
    return 0;
}

static int
core_clear(PyObject *m)
{
    shmipc_state *st = shmipc_get_state(m);
    Py_CLEAR(st->segment_type);
    Py_CLEAR(st->semaphore_type);
    Py_CLEAR(st->named_semaphore_type);
    Py_CLEAR(st->shared_semaphore_type);
    Py_CLEAR(st->robust_mutex_type);
    Py_CLEAR(st->atomic_view_type);
    Py_CLEAR(st->futex_lock_type);
    Py_CLEAR(st->owner_died_error);
    return 0;
}

static void
core_free(void *m)
{
    (void)core_clear((PyObject *)m);
}

static PyModuleDef_Slot core_slots[] = {
    {Py_mod_exec, core_exec},
#ifdef Py_mod_multiple_interpreters
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
#ifdef Py_mod_gil
    /* The export count and mapping pointer rely on the GIL; no free-threaded
     * build until they get critical sections. */
    {Py_mod_gil, Py_MOD_GIL_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "shmipc._core",
    .m_doc = "Low-level System V shared memory and synchronisation primitives.\n"
             "Private: use the shmipc package.",
    .m_size = sizeof(shmipc_state),
    .m_slots = core_slots,
    .m_traverse = core_traverse,
    .m_clear = core_clear,
    .m_free = core_free,
};

PyMODINIT_FUNC
PyInit__core(void)
{
    return PyModuleDef_Init(&core_module);
}
