/* window.c -- a slice of a buffer that counts its own exports.
 *
 * In Python terms:
 *     class Window:                     # holds an export of buffer
 *         def __new__(cls, buffer, offset, size, readonly=False)
 *         exports: int                  # live buffers taken from this window
 *         obj                           # the underlying buffer (None: released)
 *         def release(self) -> bool     # drop the export unless exported;
 *                                       # returns whether it did (idempotent)
 *         buffer protocol: one dimension, format 'B'
 *
 * A Ring hands out a message in place as memoryview(Window(...)): numpy
 * arrays and memoryview slices made from it keep the window exported, so
 * the window alone tells whether anything made from *this* message
 * outlives its block -- whatever other threads hold on the same segment.
 */
#include "shmipc.h"

typedef struct {
    PyObject_HEAD
    Py_buffer base;             /* export of the underlying buffer */
    char *buf;                  /* the window's first byte; NULL released */
    Py_ssize_t len;
    int readonly;
    Py_ssize_t exports;
} WindowObject;

static PyObject *
Window_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"buffer", "offset", "size", "readonly", NULL};
    PyObject *buffer;
    Py_ssize_t offset, size;
    int readonly = 0;
    WindowObject *self;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "Onn|p:Window", kwlist,
                                     &buffer, &offset, &size, &readonly)) {
        return NULL;
    }
    self = (WindowObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->buf = NULL;
    if (PyObject_GetBuffer(buffer, &self->base,
                           readonly ? PyBUF_SIMPLE : PyBUF_WRITABLE) < 0) {
        self->base.obj = NULL;
        goto error;
    }
    if (offset < 0 || size < 0 || offset > self->base.len - size) {
        PyErr_Format(PyExc_ValueError,
                     "window [%zd, %zd + %zd) is outside a %zd-byte buffer",
                     offset, offset, size, self->base.len);
        goto error;
    }
    self->buf = (char *)self->base.buf + offset;
    self->len = size;
    self->readonly = readonly || self->base.readonly;
    self->exports = 0;
    return (PyObject *)self;

error:
    Py_DECREF(self);
    return NULL;
}

static int
Window_traverse(WindowObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->base.obj);
    return 0;
}

static void
Window_dealloc(WindowObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    self->buf = NULL;
    if (self->base.obj != NULL) {
        PyBuffer_Release(&self->base);
    }
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static int
Window_getbuffer(WindowObject *self, Py_buffer *view, int flags)
{
    if (self->buf == NULL) {
        PyErr_SetString(PyExc_ValueError, "operation on a released Window");
        view->obj = NULL;
        return -1;
    }
    if (PyBuffer_FillInfo(view, (PyObject *)self, self->buf, self->len,
                          self->readonly, flags) < 0) {
        return -1;
    }
    self->exports++;
    return 0;
}

static void
Window_releasebuffer(WindowObject *self, Py_buffer *view)
{
    self->exports--;
}

static PyObject *
Window_release(WindowObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->buf == NULL) {
        Py_RETURN_TRUE;
    }
    if (self->exports > 0) {
        Py_RETURN_FALSE;
    }
    self->buf = NULL;
    PyBuffer_Release(&self->base);
    self->base.obj = NULL;
    Py_RETURN_TRUE;
}

static PyObject *
Window_get_exports(WindowObject *self, void *closure)
{
    return PyLong_FromSsize_t(self->exports);
}

static PyMethodDef Window_methods[] = {
    {"release", (PyCFunction)Window_release, METH_NOARGS,
     "release()\n--\n\n"
     "Drop the export of the underlying buffer, unless buffers taken from\n"
     "this window are alive; return whether it is released."},
    {NULL, NULL, 0, NULL},
};

static PyObject *
Window_get_obj(WindowObject *self, void *closure)
{
    PyObject *obj = self->buf != NULL ? self->base.obj : Py_None;
    Py_INCREF(obj);
    return obj;
}

static PyGetSetDef Window_getset[] = {
    {"obj", (getter)Window_get_obj, NULL,
     "the underlying buffer object (None once released)", NULL},
    {"exports", (getter)Window_get_exports, NULL,
     "live buffers taken from this window", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot Window_slots[] = {
    {Py_tp_new, Window_new},
    {Py_tp_dealloc, Window_dealloc},
    {Py_tp_traverse, Window_traverse},
    {Py_tp_methods, Window_methods},
    {Py_tp_getset, Window_getset},
    {Py_bf_getbuffer, Window_getbuffer},
    {Py_bf_releasebuffer, Window_releasebuffer},
    {Py_tp_doc, "A slice of a buffer that counts its own exports."},
    {0, NULL},
};

static PyType_Spec Window_spec = {
    .name = "shmipc._core.Window",
    .basicsize = sizeof(WindowObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = Window_slots,
};

int
shmipc_add_window(PyObject *module, shmipc_state *st)
{
    PyObject *type = PyType_FromModuleAndSpec(module, &Window_spec, NULL);
    if (type == NULL) {
        return -1;
    }
    if (PyModule_AddType(module, (PyTypeObject *)type) < 0) {
        Py_DECREF(type);
        return -1;
    }
    Py_DECREF(type);
    return 0;
}
