/* segment.c -- System V shared-memory segments and their buffer protocol.
 *
 * In Python terms:
 *     def ftok(path: str | bytes, proj_id: int) -> int
 *     def shmget(key: int, size: int, flags: int) -> int          # shmid
 *     def shm_stat(shmid: int) -> tuple                           # shmid_ds
 *     def shm_set(shmid: int, uid: int, gid: int, mode: int) -> None
 *     def shm_remove(shmid: int) -> None                          # IPC_RMID
 *
 *     class Segment:                      # one shmat() mapping
 *         def __new__(cls, shmid, readonly=False)   # shmat, then IPC_STAT
 *         shmid, key, size, readonly, closed, exports, address
 *         def detach(self) -> None                   # shmdt, idempotent
 *         def read(self, size=None, offset=0) -> bytes
 *         def read_many(self, count, size, offset=0, stride=None) -> list[bytes]
 *         def write(self, data, offset=0) -> int
 *         def prefault(self) -> None
 *         __len__, buffer protocol (format 'B', 1-D, readonly iff SHM_RDONLY)
 *
 * The buffer exports point straight at the shmat() mapping: no copies.  The
 * export count guards the mapping: detach() refuses while it is non-zero, and
 * the copies done with the GIL released hold an export of their own.
 */
#include "shmipc.h"

#include <structmember.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__APPLE__)
#define SHMIPC_PERM_KEY(p) ((p).__key)
#elif defined(__GLIBC__)
#define SHMIPC_PERM_KEY(p) ((p).__key)
#else
#define SHMIPC_PERM_KEY(p) ((p).__ipc_perm_key)
#endif

/* Copies at least this large release the GIL. */
#define SHMIPC_NOGIL_COPY (256 * 1024)

typedef struct {
    PyObject_HEAD
    char *addr;             /* the shmat() mapping; NULL once detached */
    Py_ssize_t size;        /* shm_segsz at attach time */
    int shmid;
    key_t key;
    int readonly;           /* attached SHM_RDONLY */
    Py_ssize_t exports;     /* live buffer exports, including internal ones */
    char *orphan;           /* after _abandon(): the private stand-in pages */
    size_t orphan_len;
    pid_t unkept;           /* made by _create(mark) in this pid and not yet
                               _keep()-ed: removed if dropped before that */
    PyObject *weakreflist;
    PyObject *dict;         /* so the Python facade can add attributes */
} SegmentObject;

/* ---- keys ------------------------------------------------------------- */

int
shmipc_key_converter(PyObject *obj, void *out)
{
    long long value;
    if (PyBool_Check(obj) || !PyLong_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "key must be an int, not %.100s",
                     Py_TYPE(obj)->tp_name);
        return 0;
    }
    value = PyLong_AsLongLong(obj);
    if (value == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        value = -(1LL << 40);  /* out of range below */
    }
    if (value < -(1LL << 31) || value >= (1LL << 32)) {
        PyErr_SetString(PyExc_ValueError,
                        "key must fit in 32 bits (-2**31 <= key < 2**32)");
        return 0;
    }
    *(key_t *)out = (key_t)(int32_t)(uint32_t)(value & 0xffffffffLL);
    return 1;
}

PyObject *
shmipc_key_to_py(key_t key)
{
    return PyLong_FromUnsignedLong((unsigned long)(uint32_t)key);
}

/* ---- module functions ------------------------------------------------- */

static PyObject *
core_ftok(PyObject *module, PyObject *args)
{
    PyObject *path = NULL;
    int proj_id;
    key_t key;
    int err;

    if (!PyArg_ParseTuple(args, "O&i:ftok", PyUnicode_FSConverter, &path,
                          &proj_id)) {
        return NULL;
    }
    if (proj_id < 1 || proj_id > 255) {
        PyErr_SetString(PyExc_ValueError, "proj_id must be in 1..255");
        goto error;
    }
    errno = 0;
    key = ftok(PyBytes_AS_STRING(path), proj_id);
    err = errno;
    if (key == (key_t)-1) {
        PyObject *filename = PyUnicode_DecodeFSDefault(PyBytes_AS_STRING(path));
        PyObject *exc_args = NULL;
        if (filename != NULL) {
            exc_args = Py_BuildValue("(isO)", err ? err : EINVAL,
                                     "ftok() failed", filename);
            Py_DECREF(filename);
        }
        if (exc_args != NULL) {
            shmipc_raise_oserror(exc_args);
            Py_DECREF(exc_args);
        }
        goto error;
    }
    Py_DECREF(path);
    return shmipc_key_to_py(key);

error:
    Py_XDECREF(path);
    return NULL;
}

/* The kernel answers EINVAL for an id that names no segment; users expect
 * FileNotFoundError there, as for a missing key. */
static PyObject *
raise_shmid_error(int err, const char *call, int shmid)
{
    if (err == EINVAL || err == EIDRM) {
        PyObject *args = Py_BuildValue(
            "(is)", ENOENT, "");
        PyObject *msg;
        if (args == NULL) {
            return NULL;
        }
        msg = PyUnicode_FromFormat(strchr(call, '(')
                                       ? "%s failed: no shared memory "
                                         "segment with id %d"
                                       : "%s() failed: no shared memory "
                                         "segment with id %d",
                                   call, shmid);
        if (msg == NULL || PyTuple_SetItem(args, 1, msg) < 0) {
            Py_DECREF(args);
            return NULL;
        }
        shmipc_raise_oserror(args);
        Py_DECREF(args);
        return NULL;
    }
    return shmipc_raise_errno(err, call);
}

/* shmget() for both of its callers: the id, or -1 with an error set. */
static int
checked_shmget(key_t key, Py_ssize_t size, int flags)
{
    int shmid, err;
    if (size < 0) {
        PyErr_SetString(PyExc_ValueError, "size must not be negative");
        return -1;
    }
    shmid = shmget(key, (size_t)size, flags);
    err = errno;
    if (shmid < 0) {
        shmipc_raise_errno(err, "shmget");
    }
    return shmid;
}

static PyObject *
core_shmget(PyObject *module, PyObject *args)
{
    key_t key;
    Py_ssize_t size;
    int flags, shmid;

    if (!PyArg_ParseTuple(args, "O&ni:shmget", shmipc_key_converter, &key,
                          &size, &flags)) {
        return NULL;
    }
    shmid = checked_shmget(key, size, flags);
    return shmid < 0 ? NULL : PyLong_FromLong(shmid);
}

static int
stat_shmid(int shmid, struct shmid_ds *ds)
{
    if (shmctl(shmid, IPC_STAT, ds) < 0) {
        int err = errno;
        raise_shmid_error(err, "shmctl(IPC_STAT)", shmid);
        return -1;
    }
    return 0;
}

static PyObject *
core_shm_stat(PyObject *module, PyObject *args)
{
    int shmid;
    struct shmid_ds ds;
    int dest = 0, locked = 0;

    if (!PyArg_ParseTuple(args, "i:shm_stat", &shmid)) {
        return NULL;
    }
    if (stat_shmid(shmid, &ds) < 0) {
        return NULL;
    }
#ifdef SHM_DEST
    dest = (ds.shm_perm.mode & SHM_DEST) != 0;
#endif
#ifdef SHM_LOCKED
    locked = (ds.shm_perm.mode & SHM_LOCKED) != 0;
#endif
    /* key, shmid, size, mode, uid, gid, cuid, cgid, cpid, lpid, nattch,
     * atime, dtime, ctime, marked_for_destruction, locked */
    return Py_BuildValue(
        "(NinIIIIIiinLLLNN)",
        shmipc_key_to_py(SHMIPC_PERM_KEY(ds.shm_perm)), shmid,
        (Py_ssize_t)ds.shm_segsz, (unsigned int)(ds.shm_perm.mode & 0777),
        (unsigned int)ds.shm_perm.uid, (unsigned int)ds.shm_perm.gid,
        (unsigned int)ds.shm_perm.cuid, (unsigned int)ds.shm_perm.cgid,
        (int)ds.shm_cpid, (int)ds.shm_lpid, (Py_ssize_t)ds.shm_nattch,
        (long long)ds.shm_atime, (long long)ds.shm_dtime,
        (long long)ds.shm_ctime, PyBool_FromLong(dest),
        PyBool_FromLong(locked));
}

static PyObject *
core_shm_set(PyObject *module, PyObject *args)
{
    int shmid;
    long long uid, gid, mode;
    struct shmid_ds ds;

    if (!PyArg_ParseTuple(args, "iLLL:shm_set", &shmid, &uid, &gid, &mode)) {
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
    if (stat_shmid(shmid, &ds) < 0) {
        return NULL;
    }
    if (uid >= 0) {
        ds.shm_perm.uid = (uid_t)uid;
    }
    if (gid >= 0) {
        ds.shm_perm.gid = (gid_t)gid;
    }
    if (mode >= 0) {
        ds.shm_perm.mode = (ds.shm_perm.mode & ~0777) | (unsigned int)mode;
    }
    if (shmctl(shmid, IPC_SET, &ds) < 0) {
        return raise_shmid_error(errno, "shmctl(IPC_SET)", shmid);
    }
    Py_RETURN_NONE;
}

static PyObject *
core_shm_remove(PyObject *module, PyObject *args)
{
    int shmid;
    if (!PyArg_ParseTuple(args, "i:shm_remove", &shmid)) {
        return NULL;
    }
    if (shmctl(shmid, IPC_RMID, NULL) < 0) {
        return raise_shmid_error(errno, "shmctl(IPC_RMID)", shmid);
    }
    Py_RETURN_NONE;
}

/* ---- the Segment type ------------------------------------------------- */

static int
check_attached(SegmentObject *self)
{
    if (self->addr == NULL) {
        PyErr_SetString(PyExc_ValueError,
                        "operation on a detached segment");
        return -1;
    }
    return 0;
}

/* A new segment object of `type` attached to shmid, or NULL with an
 * error.  `mark`, if not 0, is stored as a u64 at offset 0 right after the
 * attach (a fresh segment's "initialising" magic). */
static PyObject *
attach_new_object(PyTypeObject *type, int shmid, int readonly, uint64_t mark)
{
    struct shmid_ds ds;
    SegmentObject *self = NULL;
    void *addr;
    int err;

    self = (SegmentObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    /* Attach first, then IPC_STAT: while we are attached the id cannot
     * name another segment, so the size (and the owner the facade checks)
     * are those of the mapping we hold. */
    addr = shmat(shmid, NULL, readonly ? SHM_RDONLY : 0);
    err = errno;
    if (addr == (void *)-1) {
        raise_shmid_error(err, "shmat", shmid);
        goto error;
    }
    if (stat_shmid(shmid, &ds) < 0) {
        (void)shmdt(addr);
        goto error;
    }
    if (ds.shm_segsz > (size_t)PY_SSIZE_T_MAX) {
        (void)shmdt(addr);
        PyErr_SetString(PyExc_OverflowError, "segment too large to map");
        goto error;
    }
    if (mark != 0 && !readonly && ds.shm_segsz >= 8) {
        __atomic_store_n((uint64_t *)addr, mark, __ATOMIC_RELEASE);
    }
    self->addr = (char *)addr;
    self->size = (Py_ssize_t)ds.shm_segsz;
    self->shmid = shmid;
    self->key = SHMIPC_PERM_KEY(ds.shm_perm);
    self->readonly = readonly;
    self->exports = 0;
    return (PyObject *)self;

error:
    Py_XDECREF(self);
    return NULL;
}

static PyObject *
Segment_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"shmid", "readonly", NULL};
    int shmid, readonly = 0;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "i|$p:Segment", kwlist,
                                     &shmid, &readonly)) {
        return NULL;
    }
    if (shmid < 0) {
        PyErr_SetString(PyExc_ValueError, "shmid must not be negative");
        return NULL;
    }
    return attach_new_object(type, shmid, readonly, 0);
}

/* Segment._create(key, size, flags, mark=0): shmget + shmat (+ the mark
 * store) in one C call, so that an exception raised by a Python signal
 * handler cannot fall between creating the segment and holding it; a
 * failed attach removes what was created. */
static PyObject *
Segment_create_attached(PyTypeObject *type, PyObject *args)
{
    key_t key;
    Py_ssize_t size;
    int flags, shmid;
    unsigned long long mark = 0;
    PyObject *seg;

    if (!PyArg_ParseTuple(args, "O&ni|K:_create", shmipc_key_converter, &key,
                          &size, &flags, &mark)) {
        return NULL;
    }
    /* Always a new segment: removing on failure is only ours to do then. */
    if ((shmid = checked_shmget(key, size, flags | IPC_CREAT | IPC_EXCL)) < 0) {
        return NULL;
    }
    seg = attach_new_object(type, shmid, 0, (uint64_t)mark);
    if (seg == NULL) {
        (void)shmctl(shmid, IPC_RMID, NULL);
    }
    else if (mark != 0) {
        /* A create is a transaction until _keep(): an exception anywhere
         * before that (a signal handler's included) drops this object, and
         * the drop removes the segment with no Python code in between. */
        ((SegmentObject *)seg)->unkept = getpid();
    }
    return seg;
}

static int
Segment_traverse(SegmentObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->dict);
    return 0;
}

static int
Segment_clear(SegmentObject *self)
{
    Py_CLEAR(self->dict);
    return 0;
}

static void
Segment_dealloc(SegmentObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)self);
    }
    if (self->unkept != 0 && self->unkept == getpid()) {
        (void)shmctl(self->shmid, IPC_RMID, NULL);   /* an unfinished create */
    }
    if (self->addr != NULL) {
        char *addr = self->addr;
        self->addr = NULL;
        (void)shmdt(addr);
    }
    if (self->orphan != NULL) {
        (void)munmap(self->orphan, self->orphan_len);
        self->orphan = NULL;
    }
    (void)Segment_clear(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyObject *
Segment_detach(SegmentObject *self, PyObject *Py_UNUSED(ignored))
{
    char *addr;
    if (self->addr == NULL) {
        Py_RETURN_NONE;  /* idempotent */
    }
    if (self->exports > 0) {
        PyErr_Format(PyExc_BufferError,
                     "cannot detach segment %d: %zd exported buffer(s) still "
                     "alive (release memoryviews and numpy arrays first)",
                     self->shmid, self->exports);
        return NULL;
    }
    /* Clear the pointer first: nothing may see a mapping being unmapped. */
    addr = self->addr;
    self->addr = NULL;
    if (shmdt(addr) < 0) {
        return shmipc_raise_errno(errno, "shmdt");
    }
    Py_RETURN_NONE;
}

/* Drop one export (a buffer, or an internal hold during a copy without
 * the GIL); the last one gone unmaps the stand-in pages of _abandon(). */
static void
drop_export(SegmentObject *self)
{
    self->exports--;
    if (self->exports == 0 && self->orphan != NULL) {
        (void)munmap(self->orphan, self->orphan_len);
        self->orphan = NULL;
    }
}

static PyObject *
Segment_keep(SegmentObject *self, PyObject *Py_UNUSED(ignored))
{
    self->unkept = 0;
    Py_RETURN_NONE;
}

/* _abandon(): detach although buffers are exported, by putting private
 * anonymous pages in the mapping's place (one mmap MAP_FIXED: the SysV
 * attach ends -- shm_nattch drops -- and no moment exists at which the
 * address is unmapped).  For a forked child whose copies of its parent's
 * threads' views will never be released: those views now read private
 * zeros instead of the segment, and nothing can fault.  The pages are
 * unmapped when the last export is gone. */
static PyObject *
Segment_abandon(SegmentObject *self, PyObject *Py_UNUSED(ignored))
{
    long page = sysconf(_SC_PAGESIZE);
    size_t len;
    void *p;
    if (self->addr == NULL) {
        Py_RETURN_NONE;
    }
    if (self->exports == 0) {
        return Segment_detach(self, NULL);
    }
    len = ((size_t)self->size + (size_t)page - 1) & ~((size_t)page - 1);
    p = mmap(self->addr, len, self->readonly ? PROT_READ : PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if (p == MAP_FAILED) {
        return shmipc_raise_errno(errno, "mmap");
    }
    self->orphan = self->addr;
    self->orphan_len = len;
    self->addr = NULL;
    Py_RETURN_NONE;
}

/* "O&" converter for offsets: any int.  Values beyond a Py_ssize_t clamp to
 * its limits, so the range check answers ValueError, not OverflowError. */
static int
offset_converter(PyObject *obj, void *out)
{
    Py_ssize_t value = PyNumber_AsSsize_t(obj, NULL);
    if (value == -1 && PyErr_Occurred()) {
        return 0;
    }
    *(Py_ssize_t *)out = value;
    return 1;
}

/* Bounds-check [offset, offset + *size) against the segment, overflow-safe.
 * *size < 0 means "to the end". */
static int
check_range(SegmentObject *self, Py_ssize_t offset, Py_ssize_t *size)
{
    if (offset < 0) {
        PyErr_SetString(PyExc_ValueError, "offset must not be negative");
        return -1;
    }
    if (offset > self->size) {
        PyErr_Format(PyExc_ValueError,
                     "offset %zd is past the end of the segment (%zd bytes)",
                     offset, self->size);
        return -1;
    }
    if (*size < 0) {
        *size = self->size - offset;
    }
    else if (*size > self->size - offset) {
        PyErr_Format(PyExc_ValueError,
                     "range of %zd bytes at offset %zd exceeds the segment "
                     "(%zd bytes)", *size, offset, self->size);
        return -1;
    }
    return 0;
}

/* Bind METH_FASTCALL | METH_KEYWORDS arguments to parameter slots (borrowed
 * references, NULL when not given): read() and write() are the hot path of
 * copying APIs, and PyArg_ParseTupleAndKeywords costs more than the copy of
 * a small message. */
static int
bind_args(const char *fname, PyObject *const *args, Py_ssize_t nargs,
          PyObject *kwnames, const char *const *names, Py_ssize_t nnames,
          PyObject **out)
{
    Py_ssize_t i, j, nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);

    for (i = 0; i < nnames; i++) {
        out[i] = NULL;
    }
    if (nargs > nnames) {
        PyErr_Format(PyExc_TypeError,
                     "%s() takes at most %zd arguments (%zd given)", fname,
                     nnames, nargs);
        return -1;
    }
    for (i = 0; i < nargs; i++) {
        out[i] = args[i];
    }
    for (i = 0; i < nkw; i++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, i);
        for (j = 0; j < nnames; j++) {
            if (PyUnicode_CompareWithASCIIString(name, names[j]) == 0) {
                break;
            }
        }
        if (j == nnames) {
            PyErr_Format(PyExc_TypeError,
                         "%s() got an unexpected keyword argument '%U'", fname,
                         name);
            return -1;
        }
        if (out[j] != NULL) {
            PyErr_Format(PyExc_TypeError,
                         "%s() got multiple values for argument '%s'", fname,
                         names[j]);
            return -1;
        }
        out[j] = args[nargs + i];
    }
    return 0;
}

static PyObject *
Segment_read(SegmentObject *self, PyObject *const *args, Py_ssize_t nargs,
             PyObject *kwnames)
{
    static const char *const names[] = {"size", "offset"};
    PyObject *argv[2];
    PyObject *size_obj;
    Py_ssize_t size = -1, offset = 0;
    PyObject *result;
    char *dst;

    if (bind_args("read", args, nargs, kwnames, names, 2, argv) < 0) {
        return NULL;
    }
    size_obj = argv[0] == NULL ? Py_None : argv[0];
    if (argv[1] != NULL && !offset_converter(argv[1], &offset)) {
        return NULL;
    }
    if (size_obj != Py_None) {
        size = PyNumber_AsSsize_t(size_obj, NULL);  /* clamps */
        if (size == -1 && PyErr_Occurred()) {
            return NULL;
        }
        if (size < 0) {
            PyErr_SetString(PyExc_ValueError, "size must not be negative");
            return NULL;
        }
    }
    /* Only now: the conversions above may run __index__, which may detach. */
    if (check_attached(self) < 0) {
        return NULL;
    }
    if (check_range(self, offset, &size) < 0) {
        return NULL;
    }
    result = PyBytes_FromStringAndSize(NULL, size);
    if (result == NULL) {
        return NULL;
    }
    dst = PyBytes_AS_STRING(result);
    if (size >= SHMIPC_NOGIL_COPY) {
        char *src = self->addr + offset;
        self->exports++;  /* detach() must wait for this copy */
        Py_BEGIN_ALLOW_THREADS
        memcpy(dst, src, (size_t)size);
        Py_END_ALLOW_THREADS
        drop_export(self);
    }
    else {
        memcpy(dst, self->addr + offset, (size_t)size);
    }
    return result;
}

/* read_many(count, size, offset=0, stride=None) -> list of count bytes
 * objects of size bytes, the i-th copied from offset + i * stride (stride
 * defaults to size, or 1 for size 0).  A ring's batch read of equal records
 * builds its messages here: one call for the run instead of slicing a copy
 * of it in Python, message by message.  stride >= 1, so every slice starts
 * at its own offset inside the segment: count is bounded by the segment's
 * size, and no call can ask for billions of copies of one slice. */
static PyObject *
Segment_read_many(SegmentObject *self, PyObject *const *args,
                  Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"count", "size", "offset", "stride"};
    PyObject *argv[4];
    Py_ssize_t count, size, offset = 0, stride, span = 0, i;
    PyObject *list;

    if (bind_args("read_many", args, nargs, kwnames, names, 4, argv) < 0) {
        return NULL;
    }
    if (argv[0] == NULL || argv[1] == NULL) {
        PyErr_SetString(PyExc_TypeError,
                        "read_many() needs count and size");
        return NULL;
    }
    if (!offset_converter(argv[0], &count) ||
        !offset_converter(argv[1], &size) ||
        (argv[2] != NULL && !offset_converter(argv[2], &offset))) {
        return NULL;
    }
    stride = size > 0 ? size : 1;
    if (argv[3] != NULL && argv[3] != Py_None &&
        !offset_converter(argv[3], &stride)) {
        return NULL;
    }
    if (count < 0 || size < 0) {
        PyErr_SetString(PyExc_ValueError,
                        "count and size must not be negative");
        return NULL;
    }
    if (stride < 1) {
        PyErr_SetString(PyExc_ValueError, "stride must be at least 1");
        return NULL;
    }
    /* Only now: the conversions above may run __index__, which may detach. */
    if (check_attached(self) < 0) {
        return NULL;
    }
    if (count > 0) {
        /* The last slice ends at offset + (count - 1) * stride + size. */
        if (count > 1 && stride > (PY_SSIZE_T_MAX - size) / (count - 1)) {
            PyErr_SetString(PyExc_ValueError,
                            "count * stride exceeds the segment");
            return NULL;
        }
        span = (count - 1) * stride + size;
    }
    if (check_range(self, offset, &span) < 0) {
        return NULL;
    }
    list = PyList_New(count);
    if (list == NULL) {
        return NULL;
    }
    /* Allocating a list may run the garbage collector, and a finalizer may
     * detach this segment: look again.  The bytes allocations below are not
     * tracked by the collector, so no Python code runs in the loop. */
    if (check_attached(self) < 0) {
        Py_DECREF(list);
        return NULL;
    }
    for (i = 0; i < count; i++) {
        PyObject *item = PyBytes_FromStringAndSize(
            self->addr + offset + i * stride, size);
        if (item == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, item);
    }
    return list;
}

static PyObject *
Segment_write(SegmentObject *self, PyObject *const *args, Py_ssize_t nargs,
              PyObject *kwnames)
{
    static const char *const names[] = {"data", "offset"};
    PyObject *argv[2];
    Py_buffer data = {NULL, NULL};
    Py_ssize_t offset = 0, size;

    if (bind_args("write", args, nargs, kwnames, names, 2, argv) < 0) {
        return NULL;
    }
    if (argv[0] == NULL) {
        PyErr_SetString(PyExc_TypeError,
                        "write() missing required argument 'data'");
        return NULL;
    }
    if (argv[1] != NULL && !offset_converter(argv[1], &offset)) {
        return NULL;
    }
    if (PyObject_GetBuffer(argv[0], &data, PyBUF_C_CONTIGUOUS) < 0) {
        return NULL;
    }
    if (check_attached(self) < 0) {
        goto error;
    }
    if (self->readonly) {
        PyErr_SetString(PyExc_TypeError,
                        "cannot write to a segment attached read-only");
        goto error;
    }
    size = data.len;
    if (check_range(self, offset, &size) < 0) {
        goto error;
    }
    if (size >= SHMIPC_NOGIL_COPY) {
        char *dst = self->addr + offset;
        self->exports++;
        Py_BEGIN_ALLOW_THREADS
        memmove(dst, data.buf, (size_t)size);
        Py_END_ALLOW_THREADS
        drop_export(self);
    }
    else {
        memmove(self->addr + offset, data.buf, (size_t)size);
    }
    PyBuffer_Release(&data);
    return PyLong_FromSsize_t(size);

error:
    PyBuffer_Release(&data);
    return NULL;
}

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

static PyObject *
Segment_prefault(SegmentObject *self, PyObject *Py_UNUSED(ignored))
{
    /* Fault every page in now, so the first messages through a fresh ring do
     * not pay a page fault per 4 KiB.  MADV_POPULATE_* (Linux 5.14) never
     * changes the contents; older kernels fall back to reading each page. */
    char *addr;
    size_t len;
    int rc, err = 0;
    long page = sysconf(_SC_PAGESIZE);

    if (check_attached(self) < 0) {
        return NULL;
    }
    addr = self->addr;
    len = ((size_t)self->size + (size_t)page - 1) & ~((size_t)page - 1);
    self->exports++;
    Py_BEGIN_ALLOW_THREADS
    rc = madvise(addr, len,
                 self->readonly ? MADV_POPULATE_READ : MADV_POPULATE_WRITE);
    if (rc < 0) {
        err = errno;
        if (err == EINVAL || err == ENOSYS) {
            volatile char sink;
            size_t i;
            for (i = 0; i < len; i += (size_t)page) {
                sink = addr[i];
            }
            (void)sink;
            rc = 0;
        }
    }
    Py_END_ALLOW_THREADS
    drop_export(self);
    if (rc < 0) {
        return shmipc_raise_errno(err, "madvise");
    }
    Py_RETURN_NONE;
}

static Py_ssize_t
Segment_length(SegmentObject *self)
{
    if (check_attached(self) < 0) {
        return -1;
    }
    return self->size;
}

static int
Segment_getbuffer(SegmentObject *self, Py_buffer *view, int flags)
{
    if (self->addr == NULL) {
        PyErr_SetString(PyExc_ValueError,
                        "operation on a detached segment");
        view->obj = NULL;
        return -1;
    }
    if ((flags & PyBUF_WRITABLE) && self->readonly) {
        PyErr_SetString(PyExc_BufferError,
                        "segment is attached read-only; a writable buffer "
                        "cannot be exported");
        view->obj = NULL;
        return -1;
    }
    if (PyBuffer_FillInfo(view, (PyObject *)self, self->addr, self->size,
                          self->readonly, flags) < 0) {
        return -1;
    }
    self->exports++;  /* only once the view is filled */
    return 0;
}

static void
Segment_releasebuffer(SegmentObject *self, Py_buffer *view)
{
    drop_export(self);
}

static PyObject *
Segment_get_shmid(SegmentObject *self, void *closure)
{
    return PyLong_FromLong(self->shmid);
}

static PyObject *
Segment_get_key(SegmentObject *self, void *closure)
{
    return shmipc_key_to_py(self->key);
}

static PyObject *
Segment_get_size(SegmentObject *self, void *closure)
{
    return PyLong_FromSsize_t(self->size);
}

static PyObject *
Segment_get_readonly(SegmentObject *self, void *closure)
{
    return PyBool_FromLong(self->readonly);
}

static PyObject *
Segment_get_closed(SegmentObject *self, void *closure)
{
    return PyBool_FromLong(self->addr == NULL);
}

static PyObject *
Segment_get_exports(SegmentObject *self, void *closure)
{
    return PyLong_FromSsize_t(self->exports);
}

static PyObject *
Segment_get_address(SegmentObject *self, void *closure)
{
    if (check_attached(self) < 0) {
        return NULL;
    }
    return PyLong_FromVoidPtr(self->addr);
}

static PyMethodDef Segment_methods[] = {
    {"_keep", (PyCFunction)Segment_keep, METH_NOARGS,
     "_keep($self)\n--\n\n"
     "End the create: from now on dropping this object only detaches\n"
     "(before, after _create(mark), it also removed the segment)."},
    {"_abandon", (PyCFunction)Segment_abandon, METH_NOARGS,
     "_abandon($self)\n--\n\n"
     "Detach even with buffers exported: private zero pages take the\n"
     "mapping's place (for a forked child's copies of views that no\n"
     "thread there will ever release)."},
    {"_create", (PyCFunction)Segment_create_attached, METH_VARARGS | METH_CLASS,
     "_create(key, size, flags, mark=0)\n--\n\n"
     "shmget() a new segment and attach it in one call (removed again if\n"
     "the attach fails); a non-zero mark is stored as a u64 at offset 0."},
    {"detach", (PyCFunction)Segment_detach, METH_NOARGS,
     "detach($self)\n--\n\n"
     "shmdt() the mapping.  Idempotent; raises BufferError "
     "while buffers are exported."},
    {"read", (PyCFunction)(void (*)(void))Segment_read,
     METH_FASTCALL | METH_KEYWORDS,
     "read($self, size=None, offset=0)\n--\n\nCopy bytes out of the segment."},
    {"read_many", (PyCFunction)(void (*)(void))Segment_read_many,
     METH_FASTCALL | METH_KEYWORDS,
     "read_many($self, count, size, offset=0, stride=None)\n--\n\n"
     "Copy out count slices of size bytes, the i-th at offset + i * stride "
     "(stride >= 1; defaults to size, or 1 for size 0), as a list of bytes."},
    {"write", (PyCFunction)(void (*)(void))Segment_write,
     METH_FASTCALL | METH_KEYWORDS,
     "write($self, data, offset=0)\n--\n\n"
     "Copy bytes into the segment; returns the "
     "number written."},
    {"prefault", (PyCFunction)Segment_prefault, METH_NOARGS,
     "prefault($self)\n--\n\nFault every page of the mapping in now."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Segment_getset[] = {
    {"shmid", (getter)Segment_get_shmid, NULL, "the kernel's segment id", NULL},
    {"key", (getter)Segment_get_key, NULL,
     "the IPC key (0 = IPC_PRIVATE), as an unsigned int", NULL},
    {"size", (getter)Segment_get_size, NULL,
     "size in bytes, as the kernel reports it", NULL},
    {"readonly", (getter)Segment_get_readonly, NULL,
     "True when attached SHM_RDONLY", NULL},
    {"closed", (getter)Segment_get_closed, NULL, "True once detached", NULL},
    {"exports", (getter)Segment_get_exports, NULL,
     "number of live buffer exports (memoryviews, numpy arrays...)", NULL},
    {"address", (getter)Segment_get_address, NULL,
     "the mapping's address in this process", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef Segment_members[] = {
    {"__weaklistoffset__", T_PYSSIZET,
     offsetof(SegmentObject, weakreflist), READONLY, NULL},
    {"__dictoffset__", T_PYSSIZET, offsetof(SegmentObject, dict), READONLY,
     NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot Segment_slots[] = {
    {Py_tp_new, Segment_new},
    {Py_tp_dealloc, Segment_dealloc},
    {Py_tp_traverse, Segment_traverse},
    {Py_tp_clear, Segment_clear},
    {Py_tp_methods, Segment_methods},
    {Py_tp_getset, Segment_getset},
    {Py_tp_members, Segment_members},
    {Py_sq_length, Segment_length},
    {Py_bf_getbuffer, Segment_getbuffer},
    {Py_bf_releasebuffer, Segment_releasebuffer},
    {Py_tp_doc, "A shmat() mapping of a System V segment (low level)."},
    {0, NULL},
};

static PyType_Spec Segment_spec = {
    .name = "shmipc._core.Segment",
    .basicsize = sizeof(SegmentObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = Segment_slots,
};

static PyMethodDef segment_functions[] = {
    {"ftok", core_ftok, METH_VARARGS,
     "ftok(path, proj_id, /)\n--\n\n"
     "Make an IPC key from a path and a project id."},
    {"shmget", core_shmget, METH_VARARGS,
     "shmget(key, size, flags, /)\n--\n\nCreate or look up a segment; its id."},
    {"shm_stat", core_shm_stat, METH_VARARGS,
     "shm_stat(shmid, /)\n--\n\nshmctl(IPC_STAT) as a tuple."},
    {"shm_set", core_shm_set, METH_VARARGS,
     "shm_set(shmid, uid, gid, mode, /)\n--\n\n"
     "shmctl(IPC_SET); -1 keeps a field."},
    {"shm_remove", core_shm_remove, METH_VARARGS,
     "shm_remove(shmid, /)\n--\n\nshmctl(IPC_RMID)."},
    {NULL, NULL, 0, NULL},
};

int
shmipc_add_segment(PyObject *module, shmipc_state *st)
{
    st->segment_type = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &Segment_spec, NULL);
    if (st->segment_type == NULL) {
        return -1;
    }
    if (PyModule_AddType(module, st->segment_type) < 0) {
        return -1;
    }
    if (PyModule_AddFunctions(module, segment_functions) < 0) {
        return -1;
    }
    return 0;
}
