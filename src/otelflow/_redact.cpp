/* The `redaction` processor's value masking over a serialized OTLP request, with RE2.
 *
 * `Redactor.redact` does what the processor's per-value walk does to the string values of
 * log records and spans (their attributes, and log bodies), for the configurations that need
 * nothing but value patterns (with allowed_values, masked with the fixed mask or hashed),
 * ignored keys and a summary. It scans the whole request once with the relaxed value and key
 * patterns together, and each string value that scan touches is masked exactly as
 * `Rules.mask_text` masks it: RE2::Set names the patterns that match the value, each of them
 * runs over the value alone, and the refine steps of the built-in patterns (Luhn, mod-97,
 * digit and address boundaries) are ported from `redaction_patterns`. The changed values are
 * spliced into the request bytes (their records re-framed), so nothing is parsed or
 * re-encoded. With `summary` info or debug, an item with masked or spared values gets the
 * processor's `redaction.*` counts (and keys) attributes.
 *
 * What this does not follow is named in the result for the Python walk: items with a touched
 * attribute whose key the key patterns match (decided once per distinct key), or with a
 * match in a value that is not a plain ASCII string or in a field the processor walks (span
 * events, links, status, a redacted name); and touched resources and scopes. A request whose
 * framing it cannot follow gives None.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <re2/re2.h>
#include <re2/set.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace {

using re2::RE2;
using re2::StringPiece;
using Bytes = const unsigned char *;
using Spans = std::vector<std::pair<size_t, size_t>>;

enum Refine { NO_REFINE, CARD, DIGIT_BOUNDED, IPV4_BOUNDED, IPV6_BOUNDED, IBAN, REFINES };

struct Pattern {
    std::unique_ptr<RE2> re;
    int group;
    int refine;
};

struct Layout {
    uint32_t attributes = 0;  // field number of the item's attributes
    uint32_t body = 0;        // field number of an AnyValue body, 0 for none
    std::vector<uint32_t> walk;  // fields whose matches send the item to the Python walk
};

// -- protobuf framing ----------------------------------------------------------------------

struct Field {
    uint32_t number;
    int wire;
    size_t head, start, end;  // tag start, value start, value end
};

bool read_varint(Bytes p, size_t end, size_t &i, uint64_t &out)
{
    uint64_t value = 0;
    for (int shift = 0; shift < 70 && i < end; shift += 7) {
        unsigned char b = p[i++];
        value |= uint64_t(b & 0x7F) << shift;
        if (b < 0x80) {
            out = value;
            return true;
        }
    }
    return false;
}

/* The field at p[i] (i moves past it); false when it does not fit before `end` or is a
 * group (which the Python walk handles). */
bool next_field(Bytes p, size_t end, size_t &i, Field &f)
{
    uint64_t tag, n;
    f.head = i;
    if (!read_varint(p, end, i, tag) || (tag >> 3) > UINT32_MAX)
        return false;
    f.number = uint32_t(tag >> 3);
    f.wire = int(tag & 7);
    f.start = i;
    switch (f.wire) {
    case 0:
        if (!read_varint(p, end, i, n))
            return false;
        break;
    case 1:
        i += 8;
        break;
    case 2:
        if (!read_varint(p, end, i, n) || n > end - i)
            return false;
        f.start = i;
        i += n;
        break;
    case 5:
        i += 4;
        break;
    default:
        return false;
    }
    f.end = i;
    return i <= end;
}

void put_varint(std::string &out, uint64_t v)
{
    while (v >= 0x80) {
        out.push_back(char(v | 0x80));
        v >>= 7;
    }
    out.push_back(char(v));
}

char *put_varint(char *out, uint64_t v)
{
    while (v >= 0x80) {
        *out++ = char(v | 0x80);
        v >>= 7;
    }
    *out++ = char(v);
    return out;
}

size_t varint_size(uint64_t v)
{
    size_t n = 1;
    for (; v >= 0x80; v >>= 7)
        n++;
    return n;
}

/* A length-delimited field of the request whose value changes: replaced whole (a leaf, by
 * `value`) or re-framed around the changed fields inside it (`children`, in order). A leaf
 * with head == end is a field inserted there. */
struct Node {
    size_t head, start, end;  // tag start, value start, value end in the request
    uint32_t number;
    bool leaf;
    std::string value;
    std::vector<Node> children;
    size_t size = 0;  // of the new value, once measured
};

Node leaf(const Field &f, std::string value)
{
    return Node{f.head, f.start, f.end, f.number, true, std::move(value), {}};
}

Node container(const Field &f)
{
    return Node{f.head, f.start, f.end, f.number, false, {}, {}};
}

/* The size of `node`'s new value (each node under it measured on the way). */
size_t measure(Node &node)
{
    if (node.leaf)
        return node.size = node.value.size();
    size_t size = node.end - node.start;
    for (Node &child : node.children) {
        size_t inner = measure(child);
        size += varint_size(uint64_t(child.number) << 3 | 2) + varint_size(inner) + inner;
        size -= child.end - child.head;
    }
    return node.size = size;
}

/* `node`'s new value (measured) at `out`; returns its end. The request's bytes between the
 * changed fields are copied once, straight into the result. */
char *write(Bytes p, const Node &node, char *out)
{
    if (node.leaf)
        return std::copy(node.value.begin(), node.value.end(), out);
    size_t pos = node.start;
    for (const Node &child : node.children) {
        out = std::copy(p + pos, p + child.head, out);
        out = put_varint(out, uint64_t(child.number) << 3 | 2);
        out = put_varint(out, child.size);
        out = write(p, child, out);
        pos = child.end;
    }
    return std::copy(p + pos, p + node.end, out);
}

/* Successive matches over a buffer, sorted and disjoint: does any touch [start, end)? The
 * walk asks about ranges in order of their starts, so a cursor skips the spans behind. */
struct Hits {
    std::vector<std::pair<size_t, size_t>> spans;  // (start, max(end, start + 1))
    size_t next = 0;  // the first span that may end after the last start asked about

    bool touch(size_t start, size_t end)
    {
        while (next < spans.size() && spans[next].second <= start)
            next++;
        return next < spans.size() && spans[next].first < end;
    }
};

void scan(const RE2 &re, StringPiece text, Hits &hits)
{
    StringPiece m;
    size_t pos = 0, n = text.size();
    while (pos < n && re.Match(text, pos, n, RE2::UNANCHORED, &m, 1)) {
        size_t s = size_t(m.data() - text.data()), e = s + m.size();
        hits.spans.emplace_back(s, std::max(e, s + 1));
        pos = e > s ? e : e + 1;
    }
}

// -- refine steps (redaction_patterns), over ASCII text -------------------------------------

bool is_digit(int c) { return c >= '0' && c <= '9'; }
bool is_alnum(int c) { return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

bool luhn_ok(const std::string &digits)
{
    static const int doubled[10] = {0, 2, 4, 6, 8, 1, 3, 5, 7, 9};
    int sum = 0;
    size_t n = digits.size();
    for (size_t k = 0; k < n; k++) {
        int d = digits[n - 1 - k] - '0';
        sum += k % 2 ? doubled[d] : d;
    }
    return sum % 10 == 0;
}

bool card_start(const std::string &digits)
{
    return digits[0] >= '2' && digits[0] <= '6';
}

void card_spans(const std::string &t, size_t start, size_t end, Spans &out)
{
    std::string digits;
    for (size_t i = start; i < end; i++)
        if (is_digit(t[i]))
            digits.push_back(t[i]);
    if (digits.size() <= 19 && card_start(digits) && luhn_ok(digits)) {
        out.emplace_back(start, end);
        return;
    }
    if (digits.size() <= 13)
        return;
    Spans groups;  // the digit runs
    for (size_t i = start; i < end;) {
        if (!is_digit(t[i])) {
            i++;
            continue;
        }
        size_t j = i;
        while (j < end && is_digit(t[j]))
            j++;
        groups.emplace_back(i, j);
        i = j;
    }
    for (size_t g = 0; g < groups.size();) {  // the longest valid card from each group on
        std::string run;
        size_t best = SIZE_MAX;
        for (size_t last = g; last < groups.size(); last++) {
            run.append(t, groups[last].first, groups[last].second - groups[last].first);
            if (run.size() > 19)
                break;
            if (run.size() >= 13 && card_start(run) && luhn_ok(run))
                best = last;
        }
        if (best == SIZE_MAX) {
            g++;
        } else {
            out.emplace_back(groups[g].first, groups[best].second);
            g = best + 1;
        }
    }
}

int before(const std::string &t, size_t start) { return start ? t[start - 1] : -1; }
int after(const std::string &t, size_t end) { return end < t.size() ? t[end] : -1; }

void digit_bounded(const std::string &t, size_t start, size_t end, Spans &out)
{
    if (!is_digit(before(t, start)) && !is_digit(after(t, end)))
        out.emplace_back(start, end);
}

void ipv4_bounded(const std::string &t, size_t start, size_t end, Spans &out)
{
    int b = before(t, start);
    if (!is_alnum(b) && b != '.' && !is_digit(after(t, end)))
        out.emplace_back(start, end);
}

void ipv6_bounded(const std::string &t, size_t start, size_t end, Spans &out)
{
    int b = before(t, start), a = after(t, end);
    if (is_alnum(b) || b == ':' || is_alnum(a) || a == ':')
        return;
    size_t colons = std::count(t.begin() + start, t.begin() + end, ':');
    if (colons >= 2 && colons < end - start)
        out.emplace_back(start, end);
}

int mod97(const std::string &iban)
{
    std::string moved = iban.substr(4) + iban.substr(0, 4);
    int r = 0;
    for (char c : moved) {
        int v;
        if (is_digit(c))
            v = c - '0';
        else if (c >= 'a' && c <= 'z')
            v = c - 'a' + 10;
        else if (c >= 'A' && c <= 'Z')
            v = c - 'A' + 10;
        else
            return -1;
        r = (r * (v < 10 ? 10 : 100) + v) % 97;
    }
    return r;
}

void iban_spans(const std::string &t, size_t start, size_t end, Spans &out)
{
    for (size_t stop = end; stop > start; stop--) {
        std::string compact;
        for (size_t i = start; i < stop; i++)
            if (t[i] != ' ')
                compact.push_back(t[i]);
        if (compact.size() >= 15 && compact.size() <= 34 && mod97(compact) == 1) {
            out.emplace_back(start, stop);
            return;
        }
    }
}

void refine(int kind, const std::string &t, size_t start, size_t end, Spans &out)
{
    switch (kind) {
    case CARD: card_spans(t, start, end, out); break;
    case DIGIT_BOUNDED: digit_bounded(t, start, end, out); break;
    case IPV4_BOUNDED: ipv4_bounded(t, start, end, out); break;
    case IPV6_BOUNDED: ipv6_bounded(t, start, end, out); break;
    case IBAN: iban_spans(t, start, end, out); break;
    default: out.emplace_back(start, end);
    }
}

// -- the redactor ---------------------------------------------------------------------------

enum Outcome { UNCHANGED, CHANGED, PYTHON, MALFORMED };

/* What a key makes of its value: checked, kept (ignored_keys), or the Python walk's (a key
 * pattern matches it: blocked, ignored or summary keys). */
enum KeyAction : uint8_t { KEY_CHECK, KEY_IGNORED, KEY_FLAGGED };
const size_t KEY_CACHE_MAX = 65536;

struct Engine {
    std::vector<Pattern> patterns;
    std::unique_ptr<RE2::Set> set;
    std::unique_ptr<RE2> scan;  // relaxed value and key patterns
    std::unique_ptr<RE2> keys;  // relaxed key patterns (their items go to Python), or null
    std::unique_ptr<RE2> ignored_re;  // ignored_key_patterns, or null
    std::unordered_set<std::string> ignored;
    mutable std::unordered_map<std::string, uint8_t> key_actions;  // cache, by key
    std::string mask;
    PyObject *hasher = nullptr;  // hash_function's text -> digest, used instead of `mask`
    std::vector<std::unique_ptr<RE2>> allowed;  // allowed_values
    int summary = 0;  // 0 silent, 1 info (counts), 2 debug (counts and keys)
    Layout layouts[2];

    ~Engine() { Py_XDECREF(hasher); }
};

/* What one attribute map (or a log body) had done to it, by key ("body" for the body). */
struct Report {
    std::vector<std::string> masked, allowed;
};

const std::string BODY = "body";

/* A KeyValue of the summary: `key` with a string (`text`) or an int (`count`) value. */
std::string summary_entry(const std::string &key, const std::string *text, size_t count)
{
    std::string any, kv;
    if (text) {
        put_varint(any, 1 << 3 | 2);
        put_varint(any, text->size());
        any += *text;
    } else {
        put_varint(any, 3 << 3);
        put_varint(any, count);
    }
    put_varint(kv, 1 << 3 | 2);
    put_varint(kv, key.size());
    kv += key;
    put_varint(kv, 2 << 3 | 2);
    put_varint(kv, any.size());
    kv += any;
    return kv;
}

/* One request's pass. */
struct Pass {
    const Engine &en;
    const Layout &layout;
    Bytes p;
    Hits hits;  // of the relaxed value and key patterns
    std::vector<int> which;  // reused by RE2::Set::Match

    /* Rules.mask_text for the string p[start:end] into `masked`; `exempted` when
     * allowed_values spared a match. MALFORMED with a Python error when the hasher fails. */
    Outcome mask(size_t start, size_t end, std::string &masked, bool &exempted)
    {
        StringPiece text(reinterpret_cast<const char *>(p + start), end - start);
        which.clear();
        if (!en.set->Match(text, &which) || which.empty())
            return UNCHANGED;
        for (size_t i = start; i < end; i++)
            if (p[i] >= 0x80)
                return PYTHON;  // offsets in characters, Unicode digits: the Python walk
        std::string t(text.data(), text.size());
        Spans spans;
        StringPiece sub[10];
        for (int index : which) {
            const Pattern &pat = en.patterns[size_t(index)];
            size_t pos = 0, n = text.size();
            while (pos < n && pat.re->Match(text, pos, n, RE2::UNANCHORED, sub, pat.group + 1)) {
                size_t s = size_t(sub[0].data() - text.data()), e = s + sub[0].size();
                pos = e > s ? e : e + 1;
                const StringPiece &g = sub[pat.group];
                if (g.data() == nullptr || g.empty())
                    continue;  // the group took no part, or an empty match
                size_t gs = size_t(g.data() - text.data());
                refine(pat.refine, t, gs, gs + g.size(), spans);
            }
        }
        if (spans.empty())
            return UNCHANGED;
        std::sort(spans.begin(), spans.end());
        Spans merged;
        for (size_t i = 0; i < spans.size();) {
            size_t s = spans[i].first, e = spans[i].second;
            for (i++; i < spans.size() && spans[i].first <= e; i++)
                e = std::max(e, spans[i].second);
            merged.emplace_back(s, e);
        }
        if (!en.allowed.empty())
            exempted = spare_allowed(text, merged);
        masked.clear();
        size_t pos = 0;
        for (auto [s, e] : merged) {
            masked.append(t, pos, s - pos);
            if (!en.hasher)
                masked += en.mask;
            else if (!hash(t.substr(s, e - s), masked))
                return MALFORMED;
            pos = e;
        }
        masked.append(t, pos, std::string::npos);
        return masked == t ? UNCHANGED : CHANGED;
    }

    /* Drop the spans an allowed_values match covers; whether any was. */
    bool spare_allowed(StringPiece text, Spans &spans) const
    {
        Spans allowed;
        StringPiece m;
        for (const auto &rx : en.allowed) {
            size_t pos = 0, n = text.size();
            while (pos <= n && rx->Match(text, pos, n, RE2::UNANCHORED, &m, 1)) {
                size_t s = size_t(m.data() - text.data()), e = s + m.size();
                allowed.emplace_back(s, e);
                pos = e > s ? e : e + 1;
            }
        }
        size_t before = spans.size();
        spans.erase(std::remove_if(spans.begin(), spans.end(), [&](const auto &span) {
            return std::any_of(allowed.begin(), allowed.end(), [&](const auto &a) {
                return a.first <= span.first && span.second <= a.second;
            });
        }), spans.end());
        return spans.size() < before;
    }

    /* hash_function's digest of `text`, appended to `out`; false with a Python error. */
    bool hash(const std::string &text, std::string &out) const
    {
        PyObject *arg = PyUnicode_FromStringAndSize(text.data(), Py_ssize_t(text.size()));
        PyObject *digest = arg ? PyObject_CallOneArg(en.hasher, arg) : nullptr;
        Py_XDECREF(arg);
        Py_ssize_t n;
        const char *data = digest ? PyUnicode_AsUTF8AndSize(digest, &n) : nullptr;
        if (data)
            out.append(data, size_t(n));
        Py_XDECREF(digest);
        return data != nullptr;
    }

    /* An AnyValue that is one plain string: its new encoding into `out`. */
    Outcome any_value(size_t start, size_t end, std::string &out, bool &exempted)
    {
        size_t i = start;
        Field f;
        if (!next_field(p, end, i, f))
            return MALFORMED;
        if (f.number != 1 || f.wire != 2 || i != end)
            return PYTHON;  // not a plain string value
        std::string masked;
        Outcome o = mask(f.start, f.end, masked, exempted);
        if (o == CHANGED) {
            out.clear();
            put_varint(out, 1 << 3 | 2);
            put_varint(out, masked.size());
            out += masked;
        }
        return o;
    }

    /* The action of the key p[start:end]. A key pattern match anywhere in an item is
     * inside one of its fields, which the scan then touches: only the keys of touched
     * attributes need asking (nested values and span events and links go to Python when
     * touched). */
    uint8_t key_action(size_t start, size_t end) const
    {
        std::string key(reinterpret_cast<const char *>(p + start), end - start);
        auto known = en.key_actions.find(key);
        if (known != en.key_actions.end())
            return known->second;
        StringPiece text(key);
        uint8_t action = KEY_CHECK;
        if (en.keys && RE2::PartialMatch(text, *en.keys))
            action = KEY_FLAGGED;
        else if (en.ignored.count(key)
                 || (en.ignored_re && RE2::PartialMatch(text, *en.ignored_re)))
            action = KEY_IGNORED;
        if (en.key_actions.size() >= KEY_CACHE_MAX)
            en.key_actions.clear();
        en.key_actions.emplace(std::move(key), action);
        return action;
    }

    /* A KeyValue (`kv`); its changed value into `kv.children` (its key into `key_out`
     * when it changes or allowed_values spared a match). */
    Outcome attribute(Node &kv, std::string &key_out, bool &exempted)
    {
        size_t start = kv.start, end = kv.end;
        Field f, key{}, value{};
        bool has_key = false, has_value = false;
        for (size_t i = start; i < end;) {
            if (!next_field(p, end, i, f))
                return MALFORMED;
            if (f.wire != 2 || (f.number != 1 && f.number != 2))
                continue;
            bool &seen = f.number == 1 ? has_key : has_value;
            if (seen)
                return PYTHON;  // a repeated singular field: the parser merges
            seen = true;
            (f.number == 1 ? key : value) = f;
        }
        if (!has_key || !has_value)
            return PYTHON;
        uint8_t action = key_action(key.start, key.end);
        if (action == KEY_FLAGGED)
            return PYTHON;
        if (action == KEY_IGNORED || !hits.touch(value.start, value.end))
            return UNCHANGED;
        std::string any;
        Outcome o = any_value(value.start, value.end, any, exempted);
        if (o == CHANGED)
            kv.children.push_back(leaf(value, std::move(any)));
        if (o == CHANGED || exempted)
            key_out.assign(reinterpret_cast<const char *>(p + key.start), key.end - key.start);
        return o;
    }

    /* One span or log record (`record`): its changed fields into `record.children`. */
    Outcome item(Node &record)
    {
        size_t start = record.start, end = record.end;
        std::vector<Node> &edits = record.children;
        int bodies = 0;
        Report attributes, body_report;
        std::string key;
        Field f;
        for (size_t i = start; i < end;) {
            if (!next_field(p, end, i, f))
                return MALFORMED;
            bodies += f.number == layout.body;
            if (!hits.touch(f.start, f.end))
                continue;
            if (std::find(layout.walk.begin(), layout.walk.end(), f.number) != layout.walk.end())
                return PYTHON;
            if (f.wire != 2 || (f.number != layout.attributes && f.number != layout.body))
                continue;
            bool body = f.number == layout.body, exempted = false;
            Node field = body ? leaf(f, {}) : container(f);
            Outcome o = body ? any_value(f.start, f.end, field.value, exempted)
                             : attribute(field, key, exempted);
            if (o == PYTHON || o == MALFORMED)
                return o;
            Report &report = body ? body_report : attributes;
            const std::string &path = body ? BODY : key;
            if (exempted)
                report.allowed.push_back(path);
            if (o == CHANGED) {
                report.masked.push_back(path);
                edits.push_back(std::move(field));
            }
        }
        if (bodies > 1)
            return PYTHON;  // a repeated body: the parser merges
        if (en.summary) {
            summarize(attributes, "redaction.", end, edits);
            summarize(body_report, "redaction.body.", end, edits);
        }
        return edits.empty() ? UNCHANGED : CHANGED;
    }

    /* The summary attributes `_Walk.summarize` appends for one report: masked then allowed
     * keys (debug) and count, named `prefix` + masked.keys, ... */
    void summarize(Report &report, const std::string &prefix, size_t end,
                   std::vector<Node> &edits) const
    {
        for (auto [keys, kind] : {std::pair{&report.masked, "masked"},
                                  std::pair{&report.allowed, "allowed"}}) {
            if (keys->empty())
                continue;
            std::sort(keys->begin(), keys->end());
            std::string joined;
            for (const std::string &k : *keys)
                joined += (joined.empty() ? "" : ",") + k;
            Field at{layout.attributes, 2, end, end, end};
            std::string name = prefix + kind;
            if (en.summary == 2)
                edits.push_back(leaf(at, summary_entry(name + ".keys", &joined, 0)));
            edits.push_back(leaf(at, summary_entry(name + ".count", nullptr, keys->size())));
        }
    }
};

// -- the Python type ------------------------------------------------------------------------

struct RedactorObject {
    PyObject_HEAD
    Engine *engine;
};

std::unique_ptr<RE2> compile(PyObject *pattern, bool longest, bool capture)
{
    Py_ssize_t n;
    const char *text = PyUnicode_AsUTF8AndSize(pattern, &n);
    if (text == nullptr)
        return nullptr;
    RE2::Options options;
    options.set_longest_match(longest);
    options.set_never_capture(!capture);
    options.set_log_errors(false);
    auto re = std::make_unique<RE2>(StringPiece(text, size_t(n)), options);
    if (!re->ok()) {
        PyErr_Format(PyExc_ValueError, "RE2 refuses %R: %s", pattern, re->error().c_str());
        return nullptr;
    }
    return re;
}

bool set_layout(PyObject *spec, Layout &layout)
{
    PyObject *walk;
    unsigned int attributes, body;
    if (!PyArg_ParseTuple(spec, "IIO", &attributes, &body, &walk))
        return false;
    layout.attributes = attributes;
    layout.body = body;
    PyObject *seq = PySequence_Fast(walk, "walk fields must be a sequence");
    if (seq == nullptr)
        return false;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        unsigned long number = PyLong_AsUnsignedLong(PySequence_Fast_GET_ITEM(seq, i));
        if (PyErr_Occurred()) {
            Py_DECREF(seq);
            return false;
        }
        layout.walk.push_back(uint32_t(number));
    }
    Py_DECREF(seq);
    return true;
}

bool build(Engine &en, PyObject *patterns, PyObject *scan, PyObject *keys, PyObject *ignored,
           PyObject *ignored_re, PyObject *mask, PyObject *logs, PyObject *traces,
           PyObject *hasher, PyObject *allowed)
{
    RE2::Options set_options;
    set_options.set_never_capture(true);
    set_options.set_log_errors(false);
    en.set = std::make_unique<RE2::Set>(set_options, RE2::UNANCHORED);
    PyObject *seq = PySequence_Fast(patterns, "patterns must be a sequence");
    if (seq == nullptr)
        return false;
    bool ok = true;
    for (Py_ssize_t i = 0; ok && i < PySequence_Fast_GET_SIZE(seq); i++) {
        PyObject *regex;
        int group, kind;
        ok = PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "Uii", &regex, &group, &kind);
        if (ok && (group < 0 || group > 9 || kind < 0 || kind >= REFINES)) {
            PyErr_SetString(PyExc_ValueError, "group must be 0-9 and refine a known step");
            ok = false;
        }
        std::unique_ptr<RE2> re = ok ? compile(regex, true, group > 0) : nullptr;
        std::string error;
        if (re && en.set->Add(re->pattern(), &error) != int(i)) {
            PyErr_Format(PyExc_ValueError, "RE2::Set refuses %R: %s", regex, error.c_str());
            re = nullptr;
        }
        ok = re != nullptr;
        if (ok)
            en.patterns.push_back(Pattern{std::move(re), group, kind});
    }
    Py_DECREF(seq);
    if (!ok)
        return false;
    if (!en.set->Compile()) {
        PyErr_SetString(PyExc_ValueError, "RE2::Set does not compile (out of memory)");
        return false;
    }
    en.scan = compile(scan, false, false);
    if (!en.scan || (keys != Py_None && !(en.keys = compile(keys, false, false))))
        return false;
    if (ignored_re != Py_None && !(en.ignored_re = compile(ignored_re, false, false)))
        return false;
    PyObject *it = PyObject_GetIter(ignored);
    if (it == nullptr)
        return false;
    for (PyObject *key; (key = PyIter_Next(it)) != nullptr; Py_DECREF(key)) {
        Py_ssize_t n;
        const char *text = PyUnicode_AsUTF8AndSize(key, &n);
        if (text == nullptr) {
            Py_DECREF(key);
            break;
        }
        en.ignored.emplace(text, size_t(n));
    }
    Py_DECREF(it);
    if (PyErr_Occurred())
        return false;
    Py_ssize_t n;
    const char *text = PyUnicode_AsUTF8AndSize(mask, &n);
    if (text == nullptr)
        return false;
    en.mask.assign(text, size_t(n));
    if (hasher != Py_None) {
        if (!PyCallable_Check(hasher)) {
            PyErr_SetString(PyExc_TypeError, "hasher must be callable or None");
            return false;
        }
        en.hasher = Py_NewRef(hasher);
    }
    PyObject *rxs = PySequence_Fast(allowed, "allowed must be a sequence");
    if (rxs == nullptr)
        return false;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(rxs); i++) {
        std::unique_ptr<RE2> rx = compile(PySequence_Fast_GET_ITEM(rxs, i), true, false);
        if (!rx)
            break;
        en.allowed.push_back(std::move(rx));
    }
    Py_DECREF(rxs);
    if (PyErr_Occurred())
        return false;
    return set_layout(logs, en.layouts[0]) && set_layout(traces, en.layouts[1]);
}

int Redactor_init(RedactorObject *self, PyObject *args, PyObject *kwargs)
{
    static const char *names[] = {"patterns", "scan", "keys", "ignored", "ignored_re",
                                  "mask", "logs", "traces", "summary", "hasher", "allowed",
                                  nullptr};
    PyObject *patterns, *scan, *keys, *ignored, *ignored_re, *mask, *logs, *traces;
    PyObject *hasher = Py_None, *allowed = nullptr;
    int summary = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OUOOOUOO|iOO", const_cast<char **>(names),
                                     &patterns, &scan, &keys, &ignored, &ignored_re, &mask,
                                     &logs, &traces, &summary, &hasher, &allowed))
        return -1;
    PyObject *no_allowed = PyTuple_New(0);
    if (no_allowed == nullptr)
        return -1;
    auto engine = std::make_unique<Engine>();
    engine->summary = summary;
    bool ok = summary >= 0 && summary <= 2;
    if (!ok)
        PyErr_SetString(PyExc_ValueError, "summary must be 0 (silent), 1 (info) or 2 (debug)");
    ok = ok && build(*engine, patterns, scan, keys, ignored, ignored_re, mask, logs, traces,
                     hasher, allowed ? allowed : no_allowed);
    Py_DECREF(no_allowed);
    if (!ok)
        return -1;
    delete self->engine;
    self->engine = engine.release();
    return 0;
}

void Redactor_dealloc(RedactorObject *self)
{
    delete self->engine;
    Py_TYPE(self)->tp_free(reinterpret_cast<PyObject *>(self));
}

PyObject *index_tuple(std::initializer_list<size_t> indices)
{
    PyObject *t = PyTuple_New(Py_ssize_t(indices.size()));
    if (t == nullptr)
        return nullptr;
    Py_ssize_t k = 0;
    for (size_t i : indices) {
        PyObject *n = PyLong_FromSize_t(i);
        if (n == nullptr) {
            Py_DECREF(t);
            return nullptr;
        }
        PyTuple_SET_ITEM(t, k++, n);
    }
    return t;
}

bool append(PyObject *list, PyObject *item)
{
    if (item == nullptr)
        return false;
    int rc = PyList_Append(list, item);
    Py_DECREF(item);
    return rc == 0;
}

/* What the walk hands to the Python walk, by index. */
struct Listed {
    PyObject *items, *resources, *scopes;
};

enum Depth { REQUEST, RESOURCE, SCOPE };

/* One level of request -> resource_X -> scope_X -> items (the same layout for every
 * signal): its changed fields into `node.children`. `rx`, `sx`: the indices of the enclosing
 * resource_X and scope_X. */
Outcome level(Pass &pass, Depth depth, Node &node, size_t rx, size_t sx, Listed &listed)
{
    Field f;
    size_t index = 0;
    for (size_t i = node.start; i < node.end;) {
        if (!next_field(pass.p, node.end, i, f))
            return MALFORMED;
        if (f.wire != 2 || f.number < 1 || f.number > 2 || (depth == REQUEST && f.number != 1))
            continue;
        if (depth != REQUEST && f.number == 1) {  // the resource or the scope
            if (pass.hits.touch(f.start, f.end)
                && !append(depth == RESOURCE ? listed.resources : listed.scopes,
                           depth == RESOURCE ? PyLong_FromSize_t(rx) : index_tuple({rx, sx})))
                return MALFORMED;
            continue;
        }
        size_t at = index++;
        if (!pass.hits.touch(f.start, f.end))
            continue;
        Node child = container(f);
        Outcome o;
        if (depth == SCOPE) {
            o = pass.item(child);
            if (o != CHANGED)
                child.children.clear();  // the Python walk takes the item as received
            if (o == PYTHON && !append(listed.items, index_tuple({rx, sx, at})))
                return MALFORMED;
        } else {
            o = depth == REQUEST ? level(pass, RESOURCE, child, at, 0, listed)
                                 : level(pass, SCOPE, child, rx, at, listed);
        }
        if (o == MALFORMED)
            return o;
        if (!child.children.empty())
            node.children.push_back(std::move(child));
    }
    return node.children.empty() ? UNCHANGED : CHANGED;
}

/* The request with its changed fields, as a new bytes object. */
PyObject *rewritten(Bytes p, Node &request)
{
    size_t size = measure(request);
    PyObject *out = PyBytes_FromStringAndSize(nullptr, Py_ssize_t(size));
    if (out != nullptr)
        write(p, request, PyBytes_AS_STRING(out));
    return out;
}

PyObject *Redactor_redact(RedactorObject *self, PyObject *args)
{
    PyObject *blob;
    int traces;
    if (!PyArg_ParseTuple(args, "Sp", &blob, &traces))
        return nullptr;
    const Engine &en = *self->engine;
    Bytes p = reinterpret_cast<Bytes>(PyBytes_AS_STRING(blob));
    size_t n = size_t(PyBytes_GET_SIZE(blob));
    Pass pass{en, en.layouts[traces ? 1 : 0], p, {}, {}};
    StringPiece text(reinterpret_cast<const char *>(p), n);
    Py_BEGIN_ALLOW_THREADS
    scan(*en.scan, text, pass.hits);
    Py_END_ALLOW_THREADS
    Listed listed{PyList_New(0), PyList_New(0), PyList_New(0)};
    Node request{0, 0, n, 0, false, {}, {}};
    PyObject *result = nullptr;
    if (listed.items && listed.resources && listed.scopes) {
        Outcome o = level(pass, REQUEST, request, 0, 0, listed);
        if (PyErr_Occurred())
            result = nullptr;
        else if (o == MALFORMED)
            result = Py_NewRef(Py_None);
        else if (o == UNCHANGED)
            result = Py_BuildValue("(OOOO)", blob, listed.items, listed.resources, listed.scopes);
        else if (PyObject *out = rewritten(p, request))
            result = Py_BuildValue("(NOOO)", out, listed.items, listed.resources, listed.scopes);
    }
    Py_XDECREF(listed.items);
    Py_XDECREF(listed.resources);
    Py_XDECREF(listed.scopes);
    return result;
}

PyMethodDef Redactor_methods[] = {
    {"redact", reinterpret_cast<PyCFunction>(Redactor_redact), METH_VARARGS,
     "redact(request, traces) -> (request, items, resources, scopes) | None\n\n"
     "The request's bytes with the located string values masked (the same object when "
     "nothing changed), the (resource, scope, item) indices of the items left to the Python "
     "walk, the indices of the resources and the (resource, scope) indices of the scopes it "
     "has to visit. None when the framing is not one this follows."},
    {nullptr, nullptr, 0, nullptr},
};

PyTypeObject RedactorType = {PyVarObject_HEAD_INIT(nullptr, 0)};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "otelflow._redact",
                      "Value masking over serialized OTLP requests with RE2 (see Redactor).",
                      -1, nullptr};

}  // namespace

PyMODINIT_FUNC PyInit__redact(void)
{
    RedactorType.tp_name = "otelflow._redact.Redactor";
    RedactorType.tp_basicsize = sizeof(RedactorObject);
    RedactorType.tp_flags = Py_TPFLAGS_DEFAULT;
    RedactorType.tp_doc =
        "Redactor(patterns, scan, keys, ignored, ignored_re, mask, logs, traces, summary=0, "
        "hasher=None, allowed=())\n\n"
        "patterns: (regex, group, refine) per value pattern; scan: the relaxed alternation "
        "of their scans and the key patterns; keys: the relaxed key alternation or None; "
        "ignored: keys whose values stay; ignored_re: a regex of more such keys or None; "
        "mask: the replacement text; logs, traces: (attributes field, body field or 0, walk "
        "fields); summary: 0 silent, 1 info, 2 debug; hasher: hash_function's text -> digest "
        "(instead of mask); allowed: the allowed_values regexes.";
    RedactorType.tp_new = PyType_GenericNew;
    RedactorType.tp_init = reinterpret_cast<initproc>(Redactor_init);
    RedactorType.tp_dealloc = reinterpret_cast<destructor>(Redactor_dealloc);
    RedactorType.tp_methods = Redactor_methods;
    if (PyType_Ready(&RedactorType) < 0)
        return nullptr;
    PyObject *m = PyModule_Create(&module);
    if (m == nullptr)
        return nullptr;
    Py_INCREF(&RedactorType);
    if (PyModule_AddObject(m, "Redactor", reinterpret_cast<PyObject *>(&RedactorType)) < 0) {
        Py_DECREF(&RedactorType);
        Py_DECREF(m);
        return nullptr;
    }
    return m;
}
