/* The HTTP/2 side of the OTLP/gRPC receiver's server (otelflow.receivers.otlp_grpc), over
 * nghttp2.
 *
 * A Session is one server connection. Python feeds it the bytes the socket read and writes
 * what send() returns; nghttp2 does the framing, HPACK, flow control, SETTINGS and PING. The
 * session collects each unary gRPC request (its headers and its one length-prefixed message)
 * while the stream arrives and hands the complete ones back from feed(), so Python runs once
 * per request, not once per frame.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <nghttp2/nghttp2.h>
#include <stdint.h>
#include <string.h>

#define GRPC_PREFIX 5
#define MAX_HEADER_BYTES (16 * 1024) /* gRPC's default hard limit on request metadata */
#define FIRST_ALLOCATION (64 * 1024) /* a message's buffer grows from here, not from the
                                         size its prefix claims */

/* gRPC status codes a request can fail with before any handler sees it */
#define STATUS_RESOURCE_EXHAUSTED 8
#define STATUS_INTERNAL 13

static PyObject *ProtocolError; /* otelflow._h2.ProtocolError */

/* One request stream: its headers and message as they arrive, then the response body. */
typedef struct Stream {
    struct Stream *prev, *next; /* every live stream of the session, to free on dealloc */
    int32_t id;
    PyObject *headers;   /* list of (name, value) str pairs, pseudo-headers left out */
    PyObject *path, *content_type, *encoding; /* str or NULL */
    size_t header_bytes;
    unsigned char prefix[GRPC_PREFIX];
    size_t prefix_len;
    PyObject *message;   /* bytes growing toward the declared length as DATA arrives */
    size_t declared;     /* the message length the prefix declares */
    size_t message_len;  /* bytes of `message` received */
    int status;          /* nonzero: the request failed (a gRPC status), `error` says why */
    const char *error;
    int delivered;
    /* response */
    PyObject *body;      /* bytes being sent, after the 5-byte prefix */
    size_t body_sent;    /* bytes of prefix + body sent */
    PyObject *trailers;  /* list of (bytes, bytes), sent after the body */
} Stream;

typedef struct {
    PyObject_HEAD
    nghttp2_session *session;
    Stream *streams;
    PyObject *done;      /* requests completed during one feed() */
    size_t max_message;
    Py_ssize_t pings;    /* PING frames received from the client (not acks) */
    int failed;          /* a Python error is set inside a callback */
} Session;

static void stream_free(Stream *s)
{
    Py_XDECREF(s->headers);
    Py_XDECREF(s->path);
    Py_XDECREF(s->content_type);
    Py_XDECREF(s->encoding);
    Py_XDECREF(s->message);
    Py_XDECREF(s->body);
    Py_XDECREF(s->trailers);
    PyMem_Free(s);
}

static void stream_unlink(Session *self, Stream *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        self->streams = s->next;
    if (s->next)
        s->next->prev = s->prev;
}

static Stream *stream_of(Session *self, int32_t stream_id)
{
    return nghttp2_session_get_stream_user_data(self->session, stream_id);
}

static int fail(Session *self)
{
    self->failed = 1;
    return NGHTTP2_ERR_CALLBACK_FAILURE;
}

static void reject(Stream *s, int status, const char *error)
{
    if (!s->status) {
        s->status = status;
        s->error = error;
    }
    Py_CLEAR(s->message);
}

/* -- receiving ------------------------------------------------------------------------- */

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user)
{
    Session *self = user;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    Stream *s = PyMem_Calloc(1, sizeof(Stream));
    if (s == NULL || (s->headers = PyList_New(0)) == NULL) {
        if (s)
            PyMem_Free(s);
        PyErr_NoMemory();
        return fail(self);
    }
    s->id = frame->hd.stream_id;
    s->next = self->streams;
    if (self->streams)
        self->streams->prev = s;
    self->streams = s;
    nghttp2_session_set_stream_user_data(session, s->id, s);
    return 0;
}

static PyObject *latin1(const uint8_t *text, size_t len)
{
    return PyUnicode_DecodeLatin1((const char *)text, (Py_ssize_t)len, NULL);
}

static int keep_field(PyObject **slot, const uint8_t *value, size_t len)
{
    Py_XDECREF(*slot);
    *slot = latin1(value, len);
    return *slot == NULL ? -1 : 0;
}

#define NAME_IS(literal) (namelen == sizeof(literal) - 1 && !memcmp(name, literal, namelen))

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user)
{
    Session *self = user;
    Stream *s = stream_of(self, frame->hd.stream_id);
    if (s == NULL)
        return 0;
    s->header_bytes += namelen + valuelen + 32; /* HTTP/2's accounting of a header's size */
    if (s->header_bytes > MAX_HEADER_BYTES)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* resets this stream only */
    int rc = 0;
    if (NAME_IS(":path"))
        rc = keep_field(&s->path, value, valuelen);
    else if (NAME_IS("content-type"))
        rc = keep_field(&s->content_type, value, valuelen);
    else if (NAME_IS("grpc-encoding"))
        rc = keep_field(&s->encoding, value, valuelen);
    else if (namelen && name[0] != ':') {
        PyObject *pair = Py_BuildValue("(NN)", latin1(name, namelen), latin1(value, valuelen));
        rc = pair == NULL ? -1 : PyList_Append(s->headers, pair);
        Py_XDECREF(pair);
    }
    return rc < 0 ? fail(self) : 0;
}

/* The 5-byte gRPC prefix is complete: make room for the message it declares. */
static int start_message(Session *self, Stream *s)
{
    uint32_t declared = ((uint32_t)s->prefix[1] << 24) | ((uint32_t)s->prefix[2] << 16)
                        | ((uint32_t)s->prefix[3] << 8) | s->prefix[4];
    if (declared > self->max_message) {
        reject(s, STATUS_RESOURCE_EXHAUSTED, "received message larger than max");
        return 0;
    }
    s->declared = declared;
    s->message = PyBytes_FromStringAndSize(
        NULL, declared < FIRST_ALLOCATION ? declared : FIRST_ALLOCATION);
    return s->message == NULL ? fail(self) : 0;
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                         const uint8_t *data, size_t len, void *user)
{
    Session *self = user;
    Stream *s = stream_of(self, stream_id);
    if (s == NULL || s->status)
        return 0;
    if (s->prefix_len < GRPC_PREFIX) {
        size_t take = GRPC_PREFIX - s->prefix_len;
        if (take > len)
            take = len;
        memcpy(s->prefix + s->prefix_len, data, take);
        s->prefix_len += take;
        data += take;
        len -= take;
        if (s->prefix_len == GRPC_PREFIX && start_message(self, s) < 0)
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        if (s->status)
            return 0;
    }
    if (len == 0)
        return 0;
    if (len > s->declared - s->message_len) {
        reject(s, STATUS_INTERNAL, "more than one request message for a unary call");
        return 0;
    }
    size_t size = (size_t)PyBytes_GET_SIZE(s->message);
    if (s->message_len + len > size) { /* double, up to the declared length */
        size_t grown = size * 2 > s->message_len + len ? size * 2 : s->message_len + len;
        if (_PyBytes_Resize(&s->message, (Py_ssize_t)(grown < s->declared ? grown : s->declared)) < 0)
            return fail(self);
    }
    memcpy(PyBytes_AS_STRING(s->message) + s->message_len, data, len);
    s->message_len += len;
    return 0;
}

static PyObject *or_none(PyObject *value)
{
    return value ? value : Py_None;
}

/* The request is complete: (stream_id, path, content_type, encoding, headers, compressed,
 * message, status, error); `message` is None when `status` is not 0. */
static int deliver(Session *self, Stream *s)
{
    s->delivered = 1;
    if (!s->status && (s->message == NULL || s->message_len != s->declared))
        reject(s, STATUS_INTERNAL, "request message truncated");
    PyObject *request = Py_BuildValue(
        "(iOOOOiOis)", s->id, or_none(s->path), or_none(s->content_type), or_none(s->encoding),
        s->headers, s->prefix[0], or_none(s->message), s->status, s->error);
    if (request == NULL || PyList_Append(self->done, request) < 0) {
        Py_XDECREF(request);
        return fail(self);
    }
    Py_DECREF(request);
    Py_CLEAR(s->message);
    return 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user)
{
    Session *self = user;
    if (frame->hd.type == NGHTTP2_PING && !(frame->hd.flags & NGHTTP2_FLAG_ACK))
        self->pings++;
    if (!(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    if (frame->hd.type != NGHTTP2_DATA && frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    Stream *s = stream_of(self, frame->hd.stream_id);
    if (s == NULL || s->delivered)
        return 0;
    return deliver(self, s);
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                           void *user)
{
    Session *self = user;
    Stream *s = stream_of(self, stream_id);
    if (s != NULL) {
        nghttp2_session_set_stream_user_data(session, stream_id, NULL);
        stream_unlink(self, s);
        stream_free(s);
    }
    return 0;
}

/* -- sending --------------------------------------------------------------------------- */

/* nghttp2 header entries for a list of (bytes, bytes); NULL with an error set otherwise. */
static nghttp2_nv *header_entries(PyObject *list, size_t *count)
{
    if (!PyList_Check(list)) {
        PyErr_SetString(PyExc_TypeError, "headers must be a list of (bytes, bytes)");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(list);
    nghttp2_nv *nva = PyMem_Calloc(n ? n : 1, sizeof(nghttp2_nv));
    if (nva == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *pair = PyList_GET_ITEM(list, i);
        PyObject *name, *value;
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2
            || !PyBytes_Check(name = PyTuple_GET_ITEM(pair, 0))
            || !PyBytes_Check(value = PyTuple_GET_ITEM(pair, 1))) {
            PyMem_Free(nva);
            PyErr_SetString(PyExc_TypeError, "headers must be a list of (bytes, bytes)");
            return NULL;
        }
        nva[i].name = (uint8_t *)PyBytes_AS_STRING(name);
        nva[i].namelen = (size_t)PyBytes_GET_SIZE(name);
        nva[i].value = (uint8_t *)PyBytes_AS_STRING(value);
        nva[i].valuelen = (size_t)PyBytes_GET_SIZE(value);
        nva[i].flags = NGHTTP2_NV_FLAG_NONE; /* nghttp2 copies them */
    }
    *count = (size_t)n;
    return nva;
}

static int submit_headers(Session *self, int32_t stream_id, PyObject *list, int trailer,
                          const nghttp2_data_provider *body)
{
    size_t count;
    nghttp2_nv *nva = header_entries(list, &count);
    if (nva == NULL)
        return -1;
    int rc = trailer ? nghttp2_submit_trailer(self->session, stream_id, nva, count)
                     : nghttp2_submit_response(self->session, stream_id, nva, count, body);
    PyMem_Free(nva);
    return rc;
}

/* The response body: the gRPC prefix, the message, then the trailers as HEADERS. */
static ssize_t read_body(nghttp2_session *session, int32_t stream_id, uint8_t *buf,
                         size_t length, uint32_t *data_flags, nghttp2_data_source *source,
                         void *user)
{
    Session *self = user;
    Stream *s = source->ptr;
    size_t body_len = (size_t)PyBytes_GET_SIZE(s->body);
    size_t total = GRPC_PREFIX + body_len, written = 0;
    while (written < length && s->body_sent < total) {
        if (s->body_sent < GRPC_PREFIX) {
            unsigned char prefix[GRPC_PREFIX] = {0, (unsigned char)(body_len >> 24),
                                                 (unsigned char)(body_len >> 16),
                                                 (unsigned char)(body_len >> 8),
                                                 (unsigned char)body_len};
            buf[written++] = prefix[s->body_sent++];
            continue;
        }
        size_t take = total - s->body_sent;
        if (take > length - written)
            take = length - written;
        memcpy(buf + written, PyBytes_AS_STRING(s->body) + (s->body_sent - GRPC_PREFIX), take);
        written += take;
        s->body_sent += take;
    }
    if (s->body_sent == total) {
        *data_flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
        int rc = submit_headers(self, stream_id, s->trailers, 1, NULL);
        if (rc != 0) {
            if (rc < 0 && PyErr_Occurred())
                self->failed = 1;
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
    }
    return (ssize_t)written;
}

/* -- the Python type ------------------------------------------------------------------- */

static int Session_init(Session *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"max_message", "max_concurrent_streams", "window", NULL};
    Py_ssize_t max_message, max_streams = 0, window = 1 << 20;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "n|nn", kwlist, &max_message, &max_streams,
                                     &window))
        return -1;
    if (self->session != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Session already initialised");
        return -1;
    }
    if (max_message < 0 || max_streams < 0 || window <= 0 || window > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "out of range");
        return -1;
    }
    self->max_message = (size_t)max_message;
    nghttp2_session_callbacks *callbacks;
    if (nghttp2_session_callbacks_new(&callbacks) != 0) {
        PyErr_NoMemory();
        return -1;
    }
    nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(callbacks, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, on_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, on_stream_close);
    int rc = nghttp2_session_server_new(&self->session, callbacks, self);
    nghttp2_session_callbacks_del(callbacks);
    if (rc != 0) {
        PyErr_NoMemory();
        return -1;
    }
    nghttp2_settings_entry settings[3] = {
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, (uint32_t)window},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, MAX_HEADER_BYTES},
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, (uint32_t)max_streams},
    };
    rc = nghttp2_submit_settings(self->session, NGHTTP2_FLAG_NONE, settings, max_streams ? 3 : 2);
    if (rc == 0) /* the connection's window: room for several streams' messages at once */
        rc = nghttp2_session_set_local_window_size(self->session, NGHTTP2_FLAG_NONE, 0,
                                                   (int32_t)(window > INT32_MAX / 8 ? INT32_MAX : window * 8));
    if (rc != 0) {
        PyErr_Format(ProtocolError, "nghttp2: %s", nghttp2_strerror(rc));
        return -1;
    }
    return 0;
}

static void Session_dealloc(Session *self)
{
    if (self->session)
        nghttp2_session_del(self->session); /* closes no stream through the callbacks */
    while (self->streams) {
        Stream *s = self->streams;
        self->streams = s->next;
        stream_free(s);
    }
    Py_XDECREF(self->done);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int ready(Session *self)
{
    if (self->session == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Session not initialised");
        return 0;
    }
    return 1;
}

PyDoc_STRVAR(feed_doc, "feed(data) -> list of requests completed by these bytes: (stream_id, "
                       "path, content_type, encoding, headers, compressed, message, status, "
                       "error). Raises ProtocolError when the connection must close.");

static PyObject *Session_feed(Session *self, PyObject *arg)
{
    Py_buffer view;
    if (!ready(self) || PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *done = PyList_New(0);
    if (done == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    self->done = done;
    self->failed = 0;
    ssize_t rc = nghttp2_session_mem_recv(self->session, view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    self->done = NULL;
    if (self->failed || PyErr_Occurred()) {
        Py_DECREF(done);
        return NULL;
    }
    if (rc < 0) {
        Py_DECREF(done);
        PyErr_Format(ProtocolError, "%s", nghttp2_strerror((int)rc));
        return NULL;
    }
    return done;
}

PyDoc_STRVAR(send_doc, "send() -> the bytes to write to the socket now (b'' when none).");

static PyObject *Session_send(Session *self, PyObject *unused)
{
    if (!ready(self))
        return NULL;
    PyObject *out = NULL;
    Py_ssize_t size = 0;
    self->failed = 0;
    for (;;) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(self->session, &data);
        if (n < 0 || self->failed) {
            Py_XDECREF(out);
            if (!PyErr_Occurred())
                PyErr_Format(ProtocolError, "%s", nghttp2_strerror((int)n));
            return NULL;
        }
        if (n == 0)
            break;
        if (out == NULL)
            out = PyBytes_FromStringAndSize((const char *)data, n);
        else if (_PyBytes_Resize(&out, size + n) == 0)
            memcpy(PyBytes_AS_STRING(out) + size, data, (size_t)n);
        if (out == NULL)
            return NULL;
        size += n;
    }
    return out ? out : PyBytes_FromStringAndSize(NULL, 0);
}

PyDoc_STRVAR(respond_doc,
             "respond(stream_id, headers, body=None, trailers=None) -> bool\n\n"
             "Answer a request: `headers`, then, when `body` is bytes, one gRPC message and "
             "`trailers` (lists of (bytes, bytes)). Without a body the headers end the stream "
             "(a trailers-only response). False when the stream is already gone.");

static PyObject *Session_respond(Session *self, PyObject *args)
{
    int stream_id;
    PyObject *headers, *body = Py_None, *trailers = Py_None;
    if (!ready(self) || !PyArg_ParseTuple(args, "iO|OO", &stream_id, &headers, &body, &trailers))
        return NULL;
    Stream *s = stream_of(self, stream_id);
    if (s == NULL || s->body != NULL)
        Py_RETURN_FALSE;
    nghttp2_data_provider provider = {.source.ptr = s, .read_callback = read_body};
    if (body != Py_None) {
        if (!PyBytes_Check(body) || !PyList_Check(trailers)) {
            PyErr_SetString(PyExc_TypeError, "body must be bytes and trailers a list");
            return NULL;
        }
        Py_INCREF(body);
        Py_INCREF(trailers);
        s->body = body;
        s->trailers = trailers;
    }
    int rc = submit_headers(self, stream_id, headers, 0, body != Py_None ? &provider : NULL);
    if (rc < 0 && PyErr_Occurred())
        return NULL;
    return PyBool_FromLong(rc == 0);
}

/* None, or ProtocolError naming nghttp2's error when a submission failed. */
static PyObject *submitted(int rc)
{
    if (rc != 0)
        return PyErr_Format(ProtocolError, "nghttp2: %s", nghttp2_strerror(rc));
    Py_RETURN_NONE;
}

PyDoc_STRVAR(goaway_doc, "goaway(error_code=0, debug=b'') -> tell the client no new stream "
                         "will be served; the streams already open are still answered.");

static PyObject *Session_goaway(Session *self, PyObject *args)
{
    unsigned int error_code = NGHTTP2_NO_ERROR;
    Py_buffer debug = {0};
    if (!ready(self) || !PyArg_ParseTuple(args, "|Iy*", &error_code, &debug))
        return NULL;
    int rc = nghttp2_submit_goaway(self->session, NGHTTP2_FLAG_NONE,
                                   nghttp2_session_get_last_proc_stream_id(self->session),
                                   error_code, debug.buf, (size_t)debug.len);
    if (debug.obj)
        PyBuffer_Release(&debug);
    return submitted(rc);
}

PyDoc_STRVAR(ping_doc, "ping() -> queue a PING for the client to answer.");

static PyObject *Session_ping(Session *self, PyObject *unused)
{
    if (!ready(self))
        return NULL;
    return submitted(nghttp2_submit_ping(self->session, NGHTTP2_FLAG_NONE, NULL));
}

PyDoc_STRVAR(pings_doc, "pings() -> the PINGs the client sent since the last call.");

static PyObject *Session_pings(Session *self, PyObject *unused)
{
    Py_ssize_t pings = self->pings;
    self->pings = 0;
    return PyLong_FromSsize_t(pings);
}

PyDoc_STRVAR(open_doc, "open() -> whether the connection still reads or has bytes to write.");

static PyObject *Session_open(Session *self, PyObject *unused)
{
    if (!ready(self))
        return NULL;
    return PyBool_FromLong(nghttp2_session_want_read(self->session)
                           || nghttp2_session_want_write(self->session));
}

static PyMethodDef Session_methods[] = {
    {"feed", (PyCFunction)Session_feed, METH_O, feed_doc},
    {"send", (PyCFunction)Session_send, METH_NOARGS, send_doc},
    {"respond", (PyCFunction)Session_respond, METH_VARARGS, respond_doc},
    {"goaway", (PyCFunction)Session_goaway, METH_VARARGS, goaway_doc},
    {"ping", (PyCFunction)Session_ping, METH_NOARGS, ping_doc},
    {"pings", (PyCFunction)Session_pings, METH_NOARGS, pings_doc},
    {"open", (PyCFunction)Session_open, METH_NOARGS, open_doc},
    {NULL},
};

static PyTypeObject SessionType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "otelflow._h2.Session",
    .tp_basicsize = sizeof(Session),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = PyDoc_STR("Session(max_message, max_concurrent_streams=0, window=1 MiB): the "
                        "server side of one HTTP/2 connection carrying unary gRPC calls."),
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Session_init,
    .tp_dealloc = (destructor)Session_dealloc,
    .tp_methods = Session_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "otelflow._h2",
    "HTTP/2 server sessions (nghttp2) for the OTLP/gRPC receiver.", -1, NULL,
};

PyMODINIT_FUNC PyInit__h2(void)
{
    if (PyType_Ready(&SessionType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    ProtocolError = PyErr_NewException("otelflow._h2.ProtocolError", PyExc_ConnectionError, NULL);
    if (ProtocolError == NULL || PyModule_AddObjectRef(m, "ProtocolError", ProtocolError) < 0
        || PyModule_AddObjectRef(m, "Session", (PyObject *)&SessionType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
