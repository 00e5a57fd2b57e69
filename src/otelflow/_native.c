/* Hot loops over serialized OTLP requests that cost a Python-level step per item.
 *
 * Each function here walks protobuf wire bytes without parsing them into messages and does
 * only what the Python caller would otherwise do one item at a time. Anything outside the
 * layout a function knows is handed back to the caller (or raised as otelflow.wire.WireError
 * for framing that is not protobuf), so the Python code around it stays the reference.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static PyObject *WireError;     /* otelflow.wire.WireError */
static PyObject *str_stale;     /* "stale" */
static PyObject *str_labels;    /* "labels" */
static PyObject *str_entry_head; /* "entry_head" */

typedef const unsigned char *bytes_t;

/* The varint at p[*i], before `end`; 0 on success, -1 when truncated or over 10 bytes. */
static int read_varint(bytes_t p, Py_ssize_t end, Py_ssize_t *i, uint64_t *out)
{
    uint64_t value = 0;
    for (int shift = 0; shift < 64 && *i < end; shift += 7) {
        unsigned char b = p[(*i)++];
        value |= (uint64_t)(b & 0x7F) << shift;
        if (b < 0x80) {
            *out = value;
            return 0;
        }
    }
    return -1;
}

/* The field at p[*i]: its number, wire type and value start; *i moves to its end.
 * -1 (with WireError set) when the field does not fit before `end` or has a wire type that
 * otelflow.wire.field_at does not read either (groups). */
static int next_field(bytes_t p, Py_ssize_t end, Py_ssize_t *i, uint64_t *number, int *wire,
                      Py_ssize_t *value)
{
    uint64_t tag, n;
    if (read_varint(p, end, i, &tag) < 0)
        goto bad;
    *number = tag >> 3;
    *wire = (int)(tag & 7);
    *value = *i;
    switch (*wire) {
    case 0:
        if (read_varint(p, end, i, &n) < 0)
            goto bad;
        return 0;
    case 1:
    case 5:
        n = *wire == 1 ? 8 : 4;
        break;
    case 2:
        if (read_varint(p, end, i, &n) < 0)
            goto bad;
        *value = *i;
        break;
    default:
        PyErr_Format(WireError, "unsupported wire type %d", *wire);
        return -1;
    }
    if (n > (uint64_t)(end - *i))
        goto bad;
    *i += (Py_ssize_t)n;
    return 0;
bad:
    PyErr_SetString(WireError, "truncated field or a field running past its message");
    return -1;
}

/* Moves *i to past the next length-delimited field numbered `wanted` in p[*i:end] and sets
 * [*a, *b) to its value: 1 when found, 0 at `end`, -1 with WireError set on bad framing. */
static int next_ld(bytes_t p, Py_ssize_t *i, Py_ssize_t end, uint64_t wanted, Py_ssize_t *a,
                   Py_ssize_t *b)
{
    while (*i < end) {
        uint64_t number;
        int wire;
        if (next_field(p, end, i, &number, &wire, a) < 0)
            return -1;
        if (number == wanted && wire == 2) {
            *b = *i;
            return 1;
        }
    }
    return 0;
}

/* Data points of one Metric in p[start:end], as a parser keeps them: the data oneof
 * (gauge 5, sum 7, histogram 9, exponential_histogram 10, summary 11) holds the last of
 * these fields, merged with the earlier occurrences of that field since another of them. */
static Py_ssize_t metric_points(bytes_t p, Py_ssize_t start, Py_ssize_t end)
{
    Py_ssize_t count = 0, i = start;
    uint64_t kind = 0;
    while (i < end) {
        uint64_t number;
        int wire;
        Py_ssize_t value, a, b;
        if (next_field(p, end, &i, &number, &wire, &value) < 0)
            return -1;
        if (wire != 2 || !(number == 5 || number == 7 || number == 9 || number == 10 ||
                           number == 11))
            continue;
        if (number != kind)
            count = 0;
        kind = number;
        int found;
        Py_ssize_t j = value;
        while ((found = next_ld(p, &j, i, 1, &a, &b)) > 0)
            count++;
        if (found < 0)
            return -1;
    }
    return count;
}

/* Items of a serialized export request: resource (1) -> scope (2) -> item (2) fields, and
 * for metrics the data points of each metric. -1 with WireError set on bad framing. */
static Py_ssize_t request_items(bytes_t p, Py_ssize_t size, int metrics)
{
    Py_ssize_t n = 0, ri = 0, ra, rb, sa, sb, ia, ib;
    int r, s = 0, t = 0;
    while ((r = next_ld(p, &ri, size, 1, &ra, &rb)) > 0) {
        Py_ssize_t si = ra;
        while ((s = next_ld(p, &si, rb, 2, &sa, &sb)) > 0) {
            Py_ssize_t ii = sa;
            while ((t = next_ld(p, &ii, sb, 2, &ia, &ib)) > 0) {
                Py_ssize_t points = metrics ? metric_points(p, ia, ib) : 1;
                if (points < 0)
                    return -1;
                n += points;
            }
            if (t < 0)
                return -1;
        }
        if (s < 0)
            return -1;
    }
    return r < 0 ? -1 : n;
}

static PyObject *count_items(PyObject *self, PyObject *args)
{
    Py_buffer raw;
    int metrics;
    if (!PyArg_ParseTuple(args, "y*p:count_items", &raw, &metrics))
        return NULL;
    Py_ssize_t n = request_items(raw.buf, raw.len, metrics);
    PyBuffer_Release(&raw);
    return n < 0 ? NULL : PyLong_FromSsize_t(n);
}

/* The 8 little-endian bytes of the double of the little-endian int64 at p. */
static PyObject *int_as_double_bytes(bytes_t p)
{
    uint64_t bits = 0;
    for (int k = 7; k >= 0; k--)
        bits = bits << 8 | p[k];
    double value = (double)(int64_t)bits;
    memcpy(&bits, &value, 8);
    unsigned char out[8];
    for (int k = 0; k < 8; k++)
        out[k] = (unsigned char)(bits >> (8 * k));
    return PyBytes_FromStringAndSize((const char *)out, 8);
}

/* One point of the loop in known_points: appends its series and value and returns 1; 0
 * when the point is not a known series in the SDK layout at `time`; -1 on error. */
static int known_point(bytes_t p, Py_ssize_t i, Py_ssize_t stop, PyObject *cache,
                       bytes_t time, PyObject *stale_value, PyObject *series_out,
                       PyObject *values_out)
{
    Py_ssize_t o = i < stop && p[i] == 0x11 ? i + 9 : i; /* past the start time */
    if (o + 18 > stop || p[o] != 0x19 || (p[o + 9] != 0x21 && p[o + 9] != 0x31) ||
        memcmp(p + o + 1, time, 8) != 0)
        return 0;
    PyObject *key = PyBytes_FromStringAndSize((const char *)p + o + 18, stop - o - 18);
    if (key == NULL)
        return -1;
    PyObject *series = PyDict_GetItemWithError(cache, key); /* borrowed */
    Py_DECREF(key);
    if (series == NULL)
        return PyErr_Occurred() ? -1 : 0;
    if (series == Py_None)
        return 0;
    PyObject *stale = PyObject_GetAttr(series, str_stale);
    if (stale == NULL)
        return -1;
    int is_stale = PyObject_IsTrue(stale);
    Py_DECREF(stale);
    if (is_stale < 0)
        return -1;
    PyObject *value;
    if (is_stale) {
        value = Py_NewRef(stale_value);
    } else if (p[o + 9] == 0x21) {
        value = PyBytes_FromStringAndSize((const char *)p + o + 10, 8);
    } else {
        value = int_as_double_bytes(p + o + 10);
    }
    if (value == NULL)
        return -1;
    int failed = PyList_Append(series_out, series) < 0 || PyList_Append(values_out, value) < 0;
    Py_DECREF(value);
    return failed ? -1 : 1;
}

static PyObject *known_points(PyObject *self, PyObject *args)
{
    Py_buffer buf, time;
    Py_ssize_t pos, end, index, last;
    PyObject *cache, *series_out, *values_out, *stale_value;
    if (!PyArg_ParseTuple(args, "y*nnnnO!y*O!O!S:known_points", &buf, &pos, &end, &index,
                          &last, &PyDict_Type, &cache, &time, &PyList_Type, &series_out,
                          &PyList_Type, &values_out, &stale_value))
        return NULL;
    bytes_t p = buf.buf;
    int failed = 0;
    if (end > buf.len)
        end = buf.len;
    while (time.len == 8 && pos < end && index < last && p[pos] == 0x0A) {
        Py_ssize_t i = pos + 1;
        uint64_t length;
        if (read_varint(p, end, &i, &length) < 0 || length > (uint64_t)(end - i))
            break;
        Py_ssize_t stop = i + (Py_ssize_t)length;
        int known = known_point(p, i, stop, cache, time.buf, stale_value, series_out,
                                values_out);
        if (known <= 0) {
            failed = known < 0;
            break;
        }
        pos = stop;
        index++;
    }
    PyBuffer_Release(&buf);
    PyBuffer_Release(&time);
    return failed ? NULL : Py_BuildValue("nn", pos, index);
}

/* The bytes attribute `name` of `obj`, as a new reference; NULL with TypeError otherwise. */
static PyObject *bytes_attr(PyObject *obj, PyObject *name)
{
    PyObject *value = PyObject_GetAttr(obj, name);
    if (value != NULL && !PyBytes_Check(value)) {
        Py_DECREF(value);
        PyErr_Format(PyExc_TypeError, "%U must be bytes", name);
        return NULL;
    }
    return value;
}

static PyObject *entry_of(PyObject *series, PyObject *value, PyObject *tail)
{
    PyObject *head = bytes_attr(series, str_entry_head);
    if (head == NULL)
        return NULL;
    Py_ssize_t nh = PyBytes_GET_SIZE(head), nv = PyBytes_GET_SIZE(value);
    PyObject *entry = PyBytes_FromStringAndSize(NULL, nh + nv + PyBytes_GET_SIZE(tail));
    if (entry != NULL) {
        char *out = PyBytes_AS_STRING(entry);
        memcpy(out, PyBytes_AS_STRING(head), nh);
        memcpy(out + nh, PyBytes_AS_STRING(value), nv);
        memcpy(out + nh + nv, PyBytes_AS_STRING(tail), PyBytes_GET_SIZE(tail));
    }
    Py_DECREF(head);
    return entry;
}

static PyObject *number_entries(PyObject *self, PyObject *args)
{
    PyObject *series, *values, *tail;
    if (!PyArg_ParseTuple(args, "O!O!S:number_entries", &PyList_Type, &series, &PyList_Type,
                          &values, &tail))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(series);
    if (PyList_GET_SIZE(values) != n) {
        PyErr_SetString(PyExc_ValueError, "series and values differ in length");
        return NULL;
    }
    PyObject *labels = PyList_New(n), *entries = PyList_New(n);
    if (labels == NULL || entries == NULL)
        goto fail;
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *one = PyList_GET_ITEM(series, k), *value = PyList_GET_ITEM(values, k);
        if (!PyBytes_Check(value)) {
            PyErr_SetString(PyExc_TypeError, "values must be bytes");
            goto fail;
        }
        PyObject *label = bytes_attr(one, str_labels);
        if (label == NULL)
            goto fail;
        PyList_SET_ITEM(labels, k, label);
        PyObject *entry = entry_of(one, value, tail);
        if (entry == NULL)
            goto fail;
        PyList_SET_ITEM(entries, k, entry);
    }
    return Py_BuildValue("NN", labels, entries);
fail:
    Py_XDECREF(labels);
    Py_XDECREF(entries);
    return NULL;
}

static PyMethodDef methods[] = {
    {"count_items", count_items, METH_VARARGS,
     "count_items(raw, metrics) -> int\n\nSpans or log records (metrics: data points) of a "
     "serialized export request, counted as a parser would hold them, without parsing."},
    {"known_points", known_points, METH_VARARGS,
     "known_points(buf, pos, end, index, last, cache, time, series, values, stale) -> "
     "(pos, index)\n\nRemote write's gauge/sum loop over the data_points fields of a "
     "Gauge/Sum message in buf[pos:end]: while a point is laid out as SDKs write it, has the "
     "8-byte `time` and its bytes after the value name a series in `cache`, append the series "
     "and the value's 8 bytes (`stale` for a stale series) to the lists. Stops at the first "
     "other point (or at point number `last`) and returns where."},
    {"number_entries", number_entries, METH_VARARGS,
     "number_entries(series, values, tail) -> (labels, entries)\n\nEach series' labels and "
     "its one-sample TimeSeries field: entry_head + value + tail."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "otelflow._native",
    "Native loops over OTLP wire bytes (see each function).", -1, methods,
};

PyMODINIT_FUNC PyInit__native(void)
{
    PyObject *wire = PyImport_ImportModule("otelflow.wire");
    if (wire == NULL)
        return NULL;
    WireError = PyObject_GetAttrString(wire, "WireError");
    Py_DECREF(wire);
    str_stale = PyUnicode_InternFromString("stale");
    str_labels = PyUnicode_InternFromString("labels");
    str_entry_head = PyUnicode_InternFromString("entry_head");
    if (WireError == NULL || str_stale == NULL || str_labels == NULL || str_entry_head == NULL)
        return NULL;
    return PyModule_Create(&module);
}
