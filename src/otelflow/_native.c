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

/* The varint of at most `max_bytes` bytes at p[*i], before `end`: 0 on success, -1 when
 * truncated, -2 when longer. */
static int varint_upto(bytes_t p, Py_ssize_t end, Py_ssize_t *i, int max_bytes, uint64_t *out)
{
    uint64_t value = 0;
    for (int k = 0; k < max_bytes; k++) {
        if (*i >= end)
            return -1;
        unsigned char b = p[(*i)++];
        value |= (uint64_t)(b & 0x7F) << (7 * k);
        if (b < 0x80) {
            *out = value;
            return 0;
        }
    }
    return -2;
}

static int read_varint(bytes_t p, Py_ssize_t end, Py_ssize_t *i, uint64_t *out)
{
    return varint_upto(p, end, i, 10, out) < 0 ? -1 : 0;
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
    int is_stale = stale == NULL ? -1 : PyObject_IsTrue(stale);
    Py_XDECREF(stale);
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
    if (pos < 0)
        pos = end; /* nothing to take: the caller's loop reads the bytes itself */
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

/* ---- validation: would a protobuf parser accept these bytes as this message type? ---- */

/* What a schema knows of a field, by number. ID16/ID8: bytes fields holding a trace or span id,
 * 16 or 8 bytes when not empty; `validate` reports another length for the caller to judge on
 * the parsed message (a parser keeps the last of repeated ids). */
enum kind { K_UNKNOWN, K_VARINT, K_FIXED64, K_FIXED32, K_BYTES, K_STRING, K_MESSAGE, K_ID16, K_ID8 };

typedef struct {
    Py_ssize_t size;        /* field numbers 0 .. size-1 are in the tables */
    unsigned char *kinds;   /* enum kind */
    unsigned char *repeated;
    int *subs;              /* message index of a K_MESSAGE field */
} message_t;

typedef struct {
    Py_ssize_t count;
    message_t *messages;
} schema_t;

#define MAX_DEPTH 100 /* nested messages below the root, as upb's default decode depth */

typedef struct {
    const schema_t *schema;
    bytes_t p;
    const char *error;  /* why the bytes were refused */
    Py_ssize_t at;      /* where */
    int suspect_id;     /* an id field of another length than its kind's (or 0) */
} check_t;

static int refuse(check_t *c, const char *why, Py_ssize_t at)
{
    c->error = why;
    c->at = at;
    return -1;
}

/* Strict UTF-8: no overlong forms, surrogates or code points past U+10FFFF. */
static int valid_utf8(bytes_t s, Py_ssize_t n)
{
    Py_ssize_t i = 0;
    while (i < n) {
        uint64_t word;
        if (n - i >= 8 && (memcpy(&word, s + i, 8), (word & 0x8080808080808080u) == 0)) {
            i += 8; /* eight ASCII bytes */
            continue;
        }
        unsigned char b = s[i];
        if (b < 0x80) {
            i++;
            continue;
        }
        int more;
        uint32_t cp, min;
        if (b >= 0xC2 && b <= 0xDF) {
            more = 1, cp = b & 0x1F, min = 0x80;
        } else if (b >= 0xE0 && b <= 0xEF) {
            more = 2, cp = b & 0x0F, min = 0x800;
        } else if (b >= 0xF0 && b <= 0xF4) {
            more = 3, cp = b & 0x07, min = 0x10000;
        } else {
            return 0;
        }
        if (n - i <= more)
            return 0;
        for (int k = 1; k <= more; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += more + 1;
    }
    return 1;
}

/* A varint of at most `max_bytes` bytes (10 for values, 5 for tags and lengths). */
static int check_varint(check_t *c, Py_ssize_t end, Py_ssize_t *i, int max_bytes, uint64_t *out)
{
    Py_ssize_t start = *i;
    int read = varint_upto(c->p, end, i, max_bytes, out);
    if (read == 0)
        return 0;
    return refuse(c, read == -1 ? "truncated varint" : "varint longer than allowed", start);
}

static const message_t NO_FIELDS = {0, NULL, NULL, NULL}; /* an unknown group's fields */

static int check_fields(check_t *c, Py_ssize_t *pi, Py_ssize_t end, const message_t *m,
                        int depth, uint64_t group);

/* The packed values of a repeated scalar field in p[i:end]. */
static int check_packed(check_t *c, Py_ssize_t i, Py_ssize_t end, int kind)
{
    if (kind == K_FIXED64 || kind == K_FIXED32) {
        if ((end - i) % (kind == K_FIXED64 ? 8 : 4) != 0)
            return refuse(c, "packed fixed-size values of a wrong total length", i);
        return 0;
    }
    uint64_t ignored;
    while (i < end)
        if (check_varint(c, end, &i, 10, &ignored) < 0)
            return -1;
    return 0;
}

/* The length-delimited value p[i:end] of a field of `kind` in message `m`. */
static int check_delimited(check_t *c, Py_ssize_t i, Py_ssize_t end, const message_t *m,
                           uint64_t number, int depth)
{
    int kind = number < (uint64_t)m->size ? m->kinds[number] : K_UNKNOWN;
    switch (kind) {
    case K_STRING:
        return valid_utf8(c->p + i, end - i) ? 0 : refuse(c, "invalid UTF-8 in a string field", i);
    case K_MESSAGE:
        if (depth >= MAX_DEPTH)
            return refuse(c, "messages nested more than 100 deep", i);
        return check_fields(c, &i, end, &c->schema->messages[m->subs[number]], depth + 1, 0);
    case K_ID16:
    case K_ID8:
        if (end != i && end - i != (kind == K_ID16 ? 16 : 8))
            c->suspect_id = 1;
        return 0;
    case K_VARINT:
    case K_FIXED64:
    case K_FIXED32:
        return m->repeated[number] ? check_packed(c, i, end, kind) : 0;
    default:
        return 0;
    }
}

/* The fields of message `m` from p[*pi] to `end`; inside a group numbered `group` (not 0)
 * they end at its end-group tag, which must come before `end`, and *pi moves past it. */
static int check_fields(check_t *c, Py_ssize_t *pi, Py_ssize_t end, const message_t *m,
                        int depth, uint64_t group)
{
    Py_ssize_t i = *pi;
    while (i < end) {
        Py_ssize_t at = i;
        uint64_t tag, n;
        if (check_varint(c, end, &i, 5, &tag) < 0)
            return -1;
        uint64_t number = tag >> 3;
        int wire = (int)(tag & 7);
        if (tag > 0xFFFFFFFFu || (number == 0 && group == 0)) /* upb skips groups laxly */
            return refuse(c, "invalid field number", at);
        switch (wire) {
        case 0:
            if (check_varint(c, end, &i, 10, &n) < 0)
                return -1;
            break;
        case 1:
        case 5:
            if (end - i < (wire == 1 ? 8 : 4))
                return refuse(c, "truncated fixed-size value", at);
            i += wire == 1 ? 8 : 4;
            break;
        case 2:
            if (check_varint(c, end, &i, 5, &n) < 0)
                return -1;
            if (n > (uint64_t)(end - i))
                return refuse(c, "length past the end of the message", at);
            if (check_delimited(c, i, i + (Py_ssize_t)n, m, number, depth) < 0)
                return -1;
            i += (Py_ssize_t)n;
            break;
        case 3: /* a group: an unknown field here, which still has to be well formed */
            if (depth >= MAX_DEPTH)
                return refuse(c, "messages nested more than 100 deep", at);
            if (check_fields(c, &i, end, &NO_FIELDS, depth + 1, number) < 0)
                return -1;
            break;
        case 4:
            if (number != group)
                return refuse(c, "end-group tag without its start", at);
            *pi = i;
            return 0;
        default:
            return refuse(c, "invalid wire type", at);
        }
    }
    if (group != 0)
        return refuse(c, "group without its end-group tag", end);
    *pi = i;
    return 0;
}

static void free_schema(PyObject *capsule)
{
    schema_t *schema = PyCapsule_GetPointer(capsule, "otelflow._native.schema");
    if (schema == NULL)
        return;
    for (Py_ssize_t k = 0; k < schema->count; k++) {
        PyMem_Free(schema->messages[k].kinds);
        PyMem_Free(schema->messages[k].repeated);
        PyMem_Free(schema->messages[k].subs);
    }
    PyMem_Free(schema->messages);
    PyMem_Free(schema);
}

/* One message's table from a list of (number, kind, repeated, message index) tuples. */
static int fill_message(message_t *m, PyObject *fields, Py_ssize_t count)
{
    Py_ssize_t n = PyList_GET_SIZE(fields), size = 1;
    long number, kind, repeated, sub;
    for (Py_ssize_t k = 0; k < n; k++) {
        if (!PyArg_ParseTuple(PyList_GET_ITEM(fields, k), "llll", &number, &kind, &repeated, &sub))
            return -1;
        if (number <= 0 || number > 10000 || kind <= K_UNKNOWN || kind > K_ID8 || sub < 0 ||
            sub >= count) {
            PyErr_SetString(PyExc_ValueError, "bad schema field");
            return -1;
        }
        if (number >= size)
            size = number + 1;
    }
    m->size = size;
    m->kinds = PyMem_Calloc(size, 1);
    m->repeated = PyMem_Calloc(size, 1);
    m->subs = PyMem_Calloc(size, sizeof(int));
    if (m->kinds == NULL || m->repeated == NULL || m->subs == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        PyArg_ParseTuple(PyList_GET_ITEM(fields, k), "llll", &number, &kind, &repeated, &sub);
        m->kinds[number] = (unsigned char)kind;
        m->repeated[number] = repeated != 0;
        m->subs[number] = (int)sub;
    }
    return 0;
}

static PyObject *compile_schema(PyObject *self, PyObject *args)
{
    PyObject *messages;
    if (!PyArg_ParseTuple(args, "O!:compile_schema", &PyList_Type, &messages))
        return NULL;
    Py_ssize_t count = PyList_GET_SIZE(messages);
    schema_t *schema = PyMem_Calloc(1, sizeof(schema_t));
    if (schema == NULL)
        return PyErr_NoMemory();
    schema->messages = PyMem_Calloc(count ? count : 1, sizeof(message_t));
    PyObject *capsule = PyCapsule_New(schema, "otelflow._native.schema", free_schema);
    if (schema->messages == NULL || capsule == NULL) {
        if (capsule == NULL) {
            PyMem_Free(schema->messages);
            PyMem_Free(schema);
        }
        Py_XDECREF(capsule);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t k = 0; k < count; k++) {
        schema->count = k + 1; /* what free_schema releases if this one fails */
        PyObject *fields = PyList_GET_ITEM(messages, k);
        if (!PyList_Check(fields)) {
            PyErr_SetString(PyExc_TypeError, "each message is a list of fields");
            goto fail;
        }
        if (fill_message(&schema->messages[k], fields, count) < 0)
            goto fail;
    }
    return capsule;
fail:
    Py_DECREF(capsule);
    return NULL;
}

static PyObject *validate(PyObject *self, PyObject *args)
{
    Py_buffer raw;
    PyObject *capsule;
    int root;
    if (!PyArg_ParseTuple(args, "y*Oi:validate", &raw, &capsule, &root))
        return NULL;
    const schema_t *schema = PyCapsule_GetPointer(capsule, "otelflow._native.schema");
    if (schema == NULL || root < 0 || root >= schema->count) {
        PyBuffer_Release(&raw);
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "no such message in the schema");
        return NULL;
    }
    check_t c = {schema, raw.buf, NULL, 0, 0};
    Py_ssize_t i = 0;
    int failed = check_fields(&c, &i, raw.len, &schema->messages[root], 0, 0) < 0;
    PyBuffer_Release(&raw);
    if (failed)
        return PyUnicode_FromFormat("%s (at byte %zd)", c.error, c.at);
    return PyLong_FromLong(c.suspect_id ? 2 : 0);
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
    {"compile_schema", compile_schema, METH_VARARGS,
     "compile_schema(messages) -> schema\n\nThe tables `validate` reads: one list per message "
     "of (field number, kind, repeated, message index of a message field) tuples."},
    {"validate", validate, METH_VARARGS,
     "validate(raw, schema, root) -> 0, 2 or str\n\nWhether a protobuf parser would accept "
     "`raw` as message number `root` of `schema`: 0 when it would, the reason (a str) when "
     "not, 2 when it would but an id field has a length other than its kind's."},
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
