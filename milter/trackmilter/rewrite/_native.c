/* The native rewriting engine's hot path: trackmilter.rewrite._native.
 *
 * Each function here is a port of a Python function of the reference engine and must
 * return exactly what it returns, for every input (tests/unit/rewrite/test_native_*.py
 * run both on the same inputs):
 *
 *   find_hrefs(data, optout)                scan.find_hrefs
 *   html_links(work, optout, codec, prefix, unescape)
 *                                           engine._html_links_python (scan, decode,
 *                                           unescape_attr, normalize, scheme and prefix)
 *   link_edits(work, candidates, first, linker, html, leaf, kind, tracks, Link, check)
 *                                           engine._link_edits_python (the linker called,
 *                                           its answer checked, the edits and Links made)
 *   qp_splice(raw, decoded, edits, eol)     transfer.qp_splice
 *   a2b_qp, b2a_qp, qp_encode               binascii's and transfer.qp_encode
 *   hmac_states(key), sign(states, body, n) tokens.MessageSigner's HMAC and base64url
 *   click(states, head, kid, tid, index, url, max_tail)
 *                                           tokens.MessageSigner.click for a URL already
 *                                           canonical (None: take the Python path)
 *
 * MIME structure, charsets and every decision about what to touch stay in Python.
 *
 * Safety rules: every index is checked against its buffer's length before it is read;
 * nothing recurses; no Python object is touched without the GIL (it is never released:
 * the work per call is tens of microseconds). Lengths are Py_ssize_t throughout; outputs
 * are sized exactly before they are written (a counting pass where needed).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

typedef const unsigned char *bptr;


/* ---------------------------------------------------------------- HTML scanning */

/* [\t\n\f\r ]: white space around '=' */
static inline int is_ws(unsigned char c)
{
    return c == '\t' || c == '\n' || c == '\f' || c == '\r' || c == ' ';
}

/* [\t\n\f\r /]: what separates attributes */
static inline int is_sep(unsigned char c)
{
    return is_ws(c) || c == '/';
}

static inline int is_alpha(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static inline unsigned char lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

/* Case-insensitive (ASCII) comparison of d[i:i+len(word)] with a lower-case word. */
static int ci_at(bptr d, Py_ssize_t n, Py_ssize_t i, const char *word)
{
    Py_ssize_t k = 0;
    for (; word[k]; k++) {
        if (i + k >= n || lower(d[i + k]) != (unsigned char)word[k])
            return 0;
    }
    return 1;
}

/* Python's bytes.find(sub, start, end) for a short sub; -1 when absent. */
static Py_ssize_t find_sub(bptr d, Py_ssize_t start, Py_ssize_t end, const char *sub,
                           Py_ssize_t sublen)
{
    if (start < 0)
        start = 0;
    if (sublen == 0)
        return start <= end ? start : -1;
    while (start + sublen <= end) {
        const unsigned char *p = memchr(d + start, (unsigned char)sub[0],
                                        (size_t)(end - start - sublen + 1));
        if (p == NULL)
            return -1;
        Py_ssize_t i = p - d;
        if (memcmp(d + i, sub, (size_t)sublen) == 0)
            return i;
        start = i + 1;
    }
    return -1;
}

/* Case-insensitive search of a lower-case ASCII word from `start`; -1 when absent. */
static Py_ssize_t find_ci(bptr d, Py_ssize_t n, Py_ssize_t start, const char *word)
{
    Py_ssize_t wl = (Py_ssize_t)strlen(word);
    for (Py_ssize_t i = start; i + wl <= n; i++) {
        if (lower(d[i]) == (unsigned char)word[0] && ci_at(d, n, i, word))
            return i;
    }
    return -1;
}

/* An attribute value (scan._VALUE) starting at i, past the white space after '=':
 * its end, or -1 at the end of the data (the value, and the tag, never end). A quoted
 * value without its closing quote runs to the end of the data. */
static Py_ssize_t skip_value(bptr d, Py_ssize_t n, Py_ssize_t i)
{
    if (i >= n)
        return -1;
    unsigned char c = d[i];
    if (c == '"' || c == '\'') {
        const unsigned char *q = memchr(d + i + 1, c, (size_t)(n - i - 1));
        return q == NULL ? n : (q - d) + 1;
    }
    if (c == '>')
        return i;
    while (i < n && !is_ws(d[i]) && d[i] != '>')
        i++;
    return i;
}

/* One attribute (scan._NAME + scan._EQ_VALUE) at i, where d[i] is neither a separator
 * nor '>'; returns its end and sets *name_end. */
static Py_ssize_t skip_attribute(bptr d, Py_ssize_t n, Py_ssize_t i, Py_ssize_t *name_end)
{
    i++;
    while (i < n && !is_sep(d[i]) && d[i] != '=' && d[i] != '>')
        i++;
    *name_end = i;
    Py_ssize_t j = i;
    while (j < n && is_ws(d[j]))
        j++;
    if (j < n && d[j] == '=') {
        j++;
        while (j < n && is_ws(d[j]))
            j++;
        Py_ssize_t v = skip_value(d, n, j);
        if (v >= 0)
            return v;
    }
    return i;
}

/* Whether d[s:e] equals `name` (already lower-case) once lower-cased. */
static int name_is(bptr d, Py_ssize_t s, Py_ssize_t e, bptr name, Py_ssize_t nlen)
{
    if (nlen == 0 || e - s != nlen)
        return 0;
    for (Py_ssize_t k = 0; k < nlen; k++) {
        if (lower(d[s + k]) != name[k])
            return 0;
    }
    return 1;
}

/* scan._ATTRIBUTES + scan._SEP + '>' from i: past the '>' that ends the tag, or -1 when
 * the tag never ends. Sets *optout_seen when an attribute is named `optout`. */
static Py_ssize_t attributes_end(bptr d, Py_ssize_t n, Py_ssize_t i, bptr optout,
                                 Py_ssize_t olen, int *optout_seen)
{
    for (;;) {
        while (i < n && is_sep(d[i]))
            i++;
        if (i >= n)
            return -1;
        if (d[i] == '>')
            return i + 1;
        Py_ssize_t ne;
        Py_ssize_t s = i;
        i = skip_attribute(d, n, i, &ne);
        if (optout_seen != NULL && name_is(d, s, ne, optout, olen))
            *optout_seen = 1;
    }
}

/* scan._inside_tag */
static Py_ssize_t inside_tag(bptr d, Py_ssize_t n, Py_ssize_t floor, Py_ssize_t at)
{
    Py_ssize_t lt = -1;
    for (Py_ssize_t k = at - 1; k >= floor; k--) {
        if (d[k] == '<') {
            lt = k;
            break;
        }
    }
    if (lt < 0)
        return 0;
    if (!(lt + 1 < n && is_alpha(d[lt + 1])))
        return 0;
    Py_ssize_t i = lt + 2;
    while (i < n && !is_sep(d[i]) && d[i] != '>')
        i++;
    Py_ssize_t end = attributes_end(d, n, i, NULL, 0, NULL);
    if (end < 0)
        return -1;
    return end > at ? end : 0;
}

enum { TOK_NONE, TOK_COMMENT, TOK_A, TOK_SCRIPT, TOK_STYLE };

static inline int tag_follow(bptr d, Py_ssize_t n, Py_ssize_t i)
{
    return i < n && (is_sep(d[i]) || d[i] == '>');
}

/* scan._TOKEN.search(data, pos): the kind, *start ('<') and *end (past the name). */
static int next_token(bptr d, Py_ssize_t n, Py_ssize_t pos, Py_ssize_t *start, Py_ssize_t *end)
{
    while (pos < n) {
        const unsigned char *p = memchr(d + pos, '<', (size_t)(n - pos));
        if (p == NULL)
            return TOK_NONE;
        Py_ssize_t i = p - d;
        *start = i;
        if (i + 3 < n && d[i + 1] == '!' && d[i + 2] == '-' && d[i + 3] == '-') {
            *end = i + 4;
            return TOK_COMMENT;
        }
        if (i + 1 < n) {
            unsigned char c = lower(d[i + 1]);
            if (c == 'a') {
                if (tag_follow(d, n, i + 2)) {
                    *end = i + 2;
                    return TOK_A;
                }
                if (ci_at(d, n, i + 1, "area") && tag_follow(d, n, i + 5)) {
                    *end = i + 5;
                    return TOK_A;
                }
            } else if (c == 's') {
                if (ci_at(d, n, i + 1, "script") && tag_follow(d, n, i + 7)) {
                    *end = i + 7;
                    return TOK_SCRIPT;
                }
                if (ci_at(d, n, i + 1, "style") && tag_follow(d, n, i + 6)) {
                    *end = i + 6;
                    return TOK_STYLE;
                }
            }
        }
        pos = i + 1;
    }
    return TOK_NONE;
}

/* The <a>/<area> tag whose name ends at p (scan._HREF_TAG, or scan._TAG_REST when it has
 * no href). Returns the tag's end (past '>') or -1 when it never ends; *vs and *ve the first
 * href's value span (-1 when it has no href or no value), *optout_seen as above. */
static Py_ssize_t href_tag(bptr d, Py_ssize_t n, Py_ssize_t p, bptr optout, Py_ssize_t olen,
                           Py_ssize_t *vs, Py_ssize_t *ve, int *optout_seen)
{
    Py_ssize_t i = p;
    *vs = *ve = -1;
    for (;;) {
        while (i < n && is_sep(d[i]))
            i++;
        if (i >= n)
            return -1;
        if (d[i] == '>')
            return i + 1; /* no href: _HREF_TAG fails, _TAG_REST ends here */
        if (ci_at(d, n, i, "href") && i + 4 < n &&
            (is_sep(d[i + 4]) || d[i + 4] == '=' || d[i + 4] == '>'))
            break;
        Py_ssize_t ne;
        Py_ssize_t s = i;
        i = skip_attribute(d, n, i, &ne);
        if (name_is(d, s, ne, optout, olen))
            *optout_seen = 1;
    }
    if (name_is(d, i, i + 4, optout, olen))
        *optout_seen = 1;
    Py_ssize_t after = i + 4;
    Py_ssize_t j = after;
    while (j < n && is_ws(d[j]))
        j++;
    if (j < n && d[j] == '=') {
        Py_ssize_t eq = j;
        Py_ssize_t k = j + 1;
        while (k < n && is_ws(d[k]))
            k++;
        if (k < n) {
            unsigned char c = d[k];
            if (c == '"' || c == '\'') {
                const unsigned char *q = memchr(d + k + 1, c, (size_t)(n - k - 1));
                if (q != NULL) {
                    *vs = k + 1;
                    *ve = q - d;
                    after = *ve + 1;
                }
            } else if (c == '>') {
                *vs = *ve = eq + 1;
                after = k;
            } else {
                Py_ssize_t m = k;
                while (m < n && !is_ws(d[m]) && d[m] != '>')
                    m++;
                *vs = k;
                *ve = m;
                after = m;
            }
        }
    }
    Py_ssize_t end = attributes_end(d, n, after, optout, olen, optout_seen);
    if (end < 0)
        *vs = *ve = -1;
    return end;
}

/* Calls found(ctx, start, end) for each href value, as scan.find_hrefs returns them.
 * Returns 0, or -1 when found() fails (a Python exception is set). */
typedef int (*href_cb)(void *ctx, Py_ssize_t s, Py_ssize_t e);

static int scan_hrefs(bptr d, Py_ssize_t n, bptr optout, Py_ssize_t olen, href_cb found,
                      void *ctx)
{
    Py_ssize_t pos = 0;
    for (;;) {
        Py_ssize_t start = 0, p = 0;
        int kind = next_token(d, n, pos, &start, &p);
        if (kind == TOK_NONE)
            return 0;
        Py_ssize_t inside = inside_tag(d, n, pos, start);
        if (inside) {
            if (inside < 0)
                return 0;
            pos = inside;
            continue;
        }
        if (kind == TOK_COMMENT) {
            if (p + 3 <= n && lower(d[p]) == '[' && lower(d[p + 1]) == 'i' &&
                lower(d[p + 2]) == 'f') {
                const unsigned char *gt = memchr(d + p, '>', (size_t)(n - p));
                if (gt == NULL)
                    return 0;
                pos = (gt - d) + 1;
            } else if (p < n && d[p] == '>') {
                pos = p + 1;
            } else if (p + 2 <= n && d[p] == '-' && d[p + 1] == '>') {
                pos = p + 2;
            } else {
                Py_ssize_t close = find_sub(d, p, n, "-->", 3);
                if (close < 0)
                    return 0;
                pos = close + 3;
            }
            continue;
        }
        if (kind == TOK_SCRIPT || kind == TOK_STYLE) {
            const char *word = kind == TOK_SCRIPT ? "</script" : "</style";
            Py_ssize_t em = find_ci(d, n, p, word);
            if (em < 0)
                return 0;
            pos = em + (Py_ssize_t)strlen(word);
            continue;
        }
        Py_ssize_t vs, ve;
        int optout_seen = 0;
        Py_ssize_t end = href_tag(d, n, p, optout, olen, &vs, &ve, &optout_seen);
        if (end < 0)
            return 0; /* the tag never ends: neither does the document's markup */
        pos = end;
        if (vs < 0 || optout_seen)
            continue;
        if (found(ctx, vs, ve) < 0)
            return -1;
    }
}

static int append_span(void *ctx, Py_ssize_t s, Py_ssize_t e)
{
    PyObject *t = Py_BuildValue("(nn)", s, e);
    if (t == NULL)
        return -1;
    int rc = PyList_Append((PyObject *)ctx, t);
    Py_DECREF(t);
    return rc;
}

static PyObject *find_hrefs(PyObject *self, PyObject *args)
{
    Py_buffer data, optout;
    if (!PyArg_ParseTuple(args, "y*y*:find_hrefs", &data, &optout))
        return NULL;
    PyObject *out = PyList_New(0);
    if (out != NULL && scan_hrefs(data.buf, data.len, optout.buf, optout.len, append_span,
                                  out) < 0)
        Py_CLEAR(out);
    PyBuffer_Release(&data);
    PyBuffer_Release(&optout);
    return out;
}

/* Appends a new reference to a list, consuming it; -1 on failure. */
static int push(PyObject *list, PyObject *item)
{
    if (item == NULL)
        return -1;
    int rc = PyList_Append(list, item);
    Py_DECREF(item);
    return rc;
}

/* ---------------------------------------------------------------- link candidates */

typedef struct {
    bptr data;
    const char *codec;
    PyObject *prefix;   /* str; "" for none */
    PyObject *unescape; /* scan.unescape_attr, for values with references other than &amp; */
    PyObject *out;
} links_ctx;

static PyObject *amp_entity, *amp; /* "&amp;", "&" */

/* scan.unescape_attr: the &amp;-only fast path here, anything else in Python. */
static PyObject *unescape_attr(links_ctx *c, PyObject *value)
{
    Py_ssize_t ands = PyUnicode_FindChar(value, '&', 0, PyUnicode_GET_LENGTH(value), 1);
    if (ands == -2)
        return NULL;
    if (ands == -1)
        return Py_NewRef(value);
    Py_ssize_t n_and = PyUnicode_Count(value, amp, 0, PY_SSIZE_T_MAX);
    Py_ssize_t n_ent = PyUnicode_Count(value, amp_entity, 0, PY_SSIZE_T_MAX);
    if (n_and < 0 || n_ent < 0)
        return NULL;
    if (n_and == n_ent)
        return PyUnicode_Replace(value, amp_entity, amp, -1);
    return PyObject_CallOneArg(c->unescape, value);
}

static inline int tab_nl(Py_UCS4 ch)
{
    return ch == '\t' || ch == '\n' || ch == '\r';
}

/* links.normalize: C0 controls and spaces stripped around, tabs and newlines removed. */
static PyObject *normalize(PyObject *url)
{
    int kind = PyUnicode_KIND(url);
    const void *data = PyUnicode_DATA(url);
    Py_ssize_t n = PyUnicode_GET_LENGTH(url);
    Py_ssize_t s = 0, e = n;
    while (s < e && PyUnicode_READ(kind, data, s) <= 0x20)
        s++;
    while (e > s && PyUnicode_READ(kind, data, e - 1) <= 0x20)
        e--;
    Py_ssize_t drop = 0;
    for (Py_ssize_t k = s; k < e; k++)
        drop += tab_nl(PyUnicode_READ(kind, data, k));
    if (drop == 0)
        return (s == 0 && e == n) ? Py_NewRef(url) : PyUnicode_Substring(url, s, e);
    Py_UCS4 *buf = PyMem_New(Py_UCS4, (size_t)(e - s - drop) + 1);
    if (buf == NULL)
        return PyErr_NoMemory();
    Py_ssize_t m = 0;
    for (Py_ssize_t k = s; k < e; k++) {
        Py_UCS4 ch = PyUnicode_READ(kind, data, k);
        if (!tab_nl(ch))
            buf[m++] = ch;
    }
    PyObject *res = PyUnicode_FromKindAndData(PyUnicode_4BYTE_KIND, buf, m);
    PyMem_Free(buf);
    return res;
}

/* links._HTTP.match: "https?://" with re.IGNORECASE, whose 's' also matches U+017F. */
static int is_http(PyObject *url)
{
    int kind = PyUnicode_KIND(url);
    const void *data = PyUnicode_DATA(url);
    Py_ssize_t n = PyUnicode_GET_LENGTH(url);
    static const char http[] = "http";
    if (n < 7)
        return 0;
    for (int k = 0; k < 4; k++) {
        Py_UCS4 ch = PyUnicode_READ(kind, data, k);
        if (ch != (Py_UCS4)http[k] && ch != (Py_UCS4)(http[k] - 32))
            return 0;
    }
    Py_UCS4 c4 = PyUnicode_READ(kind, data, 4);
    Py_ssize_t i = (c4 == 's' || c4 == 'S' || c4 == 0x17F) ? 5 : 4;
    if (i + 3 <= n && PyUnicode_READ(kind, data, i) == ':' &&
        PyUnicode_READ(kind, data, i + 1) == '/' && PyUnicode_READ(kind, data, i + 2) == '/')
        return 1;
    /* "s?" giving its 's' back would need that 's' to be ':' */
    return 0;
}

static int link_candidate(void *ctx, Py_ssize_t s, Py_ssize_t e)
{
    links_ctx *c = ctx;
    PyObject *value = PyUnicode_Decode((const char *)c->data + s, e - s, c->codec, NULL);
    if (value == NULL) {
        if (PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
            PyErr_Clear();
            return 0; /* bytes that are not text in the part's charset */
        }
        return -1;
    }
    PyObject *unescaped = unescape_attr(c, value);
    Py_DECREF(value);
    if (unescaped == NULL)
        return -1;
    if (!PyUnicode_Check(unescaped)) {
        Py_DECREF(unescaped);
        PyErr_SetString(PyExc_TypeError, "unescape_attr must return str");
        return -1;
    }
    PyObject *url = normalize(unescaped);
    Py_DECREF(unescaped);
    if (url == NULL)
        return -1;
    int keep = is_http(url);
    if (keep && PyUnicode_GET_LENGTH(c->prefix) > 0) {
        Py_ssize_t m = PyUnicode_Tailmatch(url, c->prefix, 0, PY_SSIZE_T_MAX, -1);
        if (m < 0) {
            Py_DECREF(url);
            return -1;
        }
        keep = !m;
    }
    int rc = 0;
    if (keep) {
        PyObject *t = Py_BuildValue("(nnO)", s, e, url);
        rc = t == NULL ? -1 : PyList_Append(c->out, t);
        Py_XDECREF(t);
    }
    Py_DECREF(url);
    return rc;
}

static PyObject *html_links(PyObject *self, PyObject *args)
{
    Py_buffer data, optout;
    links_ctx c;
    if (!PyArg_ParseTuple(args, "y*y*sUO:html_links", &data, &optout, &c.codec, &c.prefix,
                          &c.unescape))
        return NULL;
    c.data = data.buf;
    c.out = PyList_New(0);
    if (c.out != NULL &&
        scan_hrefs(data.buf, data.len, optout.buf, optout.len, link_candidate, &c) < 0)
        Py_CLEAR(c.out);
    PyBuffer_Release(&data);
    PyBuffer_Release(&optout);
    return c.out;
}

/* ---------------------------------------------------------------- link edits */

/* links._REPLACEMENT: [!#-&(-;=?-~]+ (printable ASCII but space, quotes, '<' and '>') */
static int replacement_ok(PyObject *url)
{
    if (!PyUnicode_Check(url) || !PyUnicode_IS_ASCII(url))
        return 0;
    Py_ssize_t n = PyUnicode_GET_LENGTH(url);
    const unsigned char *d = PyUnicode_1BYTE_DATA(url);
    if (n == 0)
        return 0;
    for (Py_ssize_t k = 0; k < n; k++) {
        unsigned char c = d[k];
        if (c < 0x21 || c > 0x7E || c == '"' || c == '\'' || c == '<' || c == '>')
            return 0;
    }
    return 1;
}

/* The tracking URL as the bytes that replace the link: ASCII, '&' as "&amp;" in HTML. */
static PyObject *replacement_bytes(PyObject *url, int html)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(url);
    const char *d = (const char *)PyUnicode_1BYTE_DATA(url);
    Py_ssize_t amps = 0;
    if (html) {
        for (Py_ssize_t k = 0; k < n; k++)
            amps += d[k] == '&';
    }
    if (amps > (PY_SSIZE_T_MAX - n) / 4)
        return PyErr_NoMemory();
    PyObject *out = PyBytes_FromStringAndSize(NULL, n + 4 * amps);
    if (out == NULL)
        return NULL;
    char *o = PyBytes_AS_STRING(out);
    for (Py_ssize_t k = 0; k < n; k++) {
        *o++ = d[k];
        if (html && d[k] == '&') {
            memcpy(o, "amp;", 4);
            o += 4;
        }
    }
    return out;
}

static PyObject *link_edits(PyObject *self, PyObject *args)
{
    Py_buffer work;
    PyObject *cands, *linker, *kind, *tracks, *link_cls, *check;
    Py_ssize_t first, leaf;
    int html;
    if (!PyArg_ParseTuple(args, "y*O!nOpnUOOO:link_edits", &work, &PyList_Type, &cands, &first,
                          &linker, &html, &leaf, &kind, &tracks, &link_cls, &check))
        return NULL;
    PyObject *edits = PyList_New(0), *links = PyList_New(0), *result = NULL;
    PyObject *what = PyUnicode_FromString("linker result");
    PyObject *leaf_o = PyLong_FromSsize_t(leaf);
    if (edits == NULL || links == NULL || what == NULL || leaf_o == NULL)
        goto done;
    /* The list is ours (built by html_links or _text_links), but index defensively. */
    for (Py_ssize_t k = 0; k < PyList_GET_SIZE(cands); k++) {
        PyObject *cand = PyList_GET_ITEM(cands, k);
        Py_ssize_t s, e;
        PyObject *url;
        if (!PyTuple_Check(cand) || !PyArg_ParseTuple(cand, "nnU", &s, &e, &url))
            goto fail_type;
        if (s < 0 || e < s || e > work.len) {
            PyErr_SetString(PyExc_ValueError, "link candidate outside the part");
            goto done;
        }
        if (tracks != Py_None) {
            PyObject *r = PyObject_CallOneArg(tracks, url);
            if (r == NULL)
                goto done;
            int yes = PyObject_IsTrue(r);
            Py_DECREF(r);
            if (yes < 0)
                goto done;
            if (!yes)
                continue;
        }
        PyObject *index = PyLong_FromSsize_t(first + PyList_GET_SIZE(links));
        if (index == NULL)
            goto done;
        PyObject *tracking = PyObject_CallFunctionObjArgs(linker, index, url, NULL);
        if (tracking == NULL) {
            Py_DECREF(index);
            goto done;
        }
        int same = PyObject_RichCompareBool(tracking, url, Py_EQ);
        if (same != 0) { /* declined (1), or an error (-1) */
            Py_DECREF(index);
            Py_DECREF(tracking);
            if (same < 0)
                goto done;
            continue;
        }
        if (!replacement_ok(tracking)) {
            /* links.check_replacement raises the error the Python engine raises */
            PyObject *r = PyObject_CallFunctionObjArgs(check, tracking, what, NULL);
            Py_DECREF(tracking);
            Py_DECREF(index);
            if (r != NULL) {
                Py_DECREF(r);
                PyErr_SetString(PyExc_SystemError, "check_replacement accepted a bad URL");
            }
            goto done;
        }
        PyObject *new = replacement_bytes(tracking, html);
        Py_DECREF(tracking);
        PyObject *edit = new == NULL ? NULL : Py_BuildValue("(nnN)", s, e, new);
        PyObject *raw = edit == NULL ? NULL : PyBytes_FromStringAndSize((const char *)work.buf + s, e - s);
        PyObject *link = raw == NULL ? NULL
                                     : PyObject_CallFunctionObjArgs(link_cls, index, url, raw,
                                                                    leaf_o, kind, NULL);
        Py_DECREF(index);
        Py_XDECREF(raw);
        if (link == NULL) {
            Py_XDECREF(edit);
            goto done;
        }
        int rc = PyList_Append(edits, edit);
        Py_DECREF(edit);
        if (rc < 0 || push(links, link) < 0)
            goto done;
    }
    result = PyTuple_Pack(2, edits, links);
    goto done;
fail_type:
    if (!PyErr_Occurred())
        PyErr_SetString(PyExc_TypeError, "a link candidate is a (start, end, url) tuple");
done:
    Py_XDECREF(edits);
    Py_XDECREF(links);
    Py_XDECREF(what);
    Py_XDECREF(leaf_o);
    PyBuffer_Release(&work);
    return result;
}

/* ---------------------------------------------------------------- quoted-printable */

#define QP_LINE 76
#define CLUSTER_GAP 480

/* Python's bytes.count(sub, start, end), non-overlapping. */
static Py_ssize_t count_sub(bptr d, Py_ssize_t n, Py_ssize_t start, Py_ssize_t end, bptr sub,
                            Py_ssize_t sublen)
{
    if (end > n)
        end = n;
    if (start < 0)
        start = 0;
    Py_ssize_t count = 0;
    while (start + sublen <= end) {
        const unsigned char *p = memchr(d + start, sub[0], (size_t)(end - start - sublen + 1));
        if (p == NULL)
            break;
        Py_ssize_t i = p - d;
        if (memcmp(d + i, sub, (size_t)sublen) == 0) {
            count++;
            start = i + sublen;
        } else {
            start = i + 1;
        }
    }
    return count;
}

static Py_ssize_t count_eq(bptr d, Py_ssize_t n, Py_ssize_t start, Py_ssize_t end)
{
    static const unsigned char eq = '=';
    return count_sub(d, n, start, end, &eq, 1);
}

/* Python's slice bounds: a[i:j] of a sequence of length n is a[*i:*j] afterwards. */
static void slice_bounds(Py_ssize_t n, Py_ssize_t *i, Py_ssize_t *j)
{
    if (*i < 0) {
        *i += n;
        if (*i < 0)
            *i = 0;
    } else if (*i > n) {
        *i = n;
    }
    if (*j < 0) {
        *j += n;
        if (*j < 0)
            *j = 0;
    } else if (*j > n) {
        *j = n;
    }
    if (*j < *i)
        *j = *i;
}

/* transfer._QPCursor */
typedef struct {
    bptr raw;
    Py_ssize_t n;
    bptr soft;
    Py_ssize_t slen;
    Py_ssize_t dec, pos;
} qp_cursor;

static Py_ssize_t raw_offset(qp_cursor *c, Py_ssize_t dec)
{
    Py_ssize_t pos = c->pos;
    Py_ssize_t extra = c->slen - 2;
    Py_ssize_t overlap = c->slen - 1;
    Py_ssize_t target = pos + dec - c->dec;
    Py_ssize_t est = target;
    Py_ssize_t eq = 0, sb = 0;
    Py_ssize_t counted = pos;
    for (int round = 0; round < 64; round++) {
        if (est > c->n || est < counted)
            return -1;
        /* One pass for both counts: the '=' in [counted, est) and the soft breaks in
         * [max(pos, counted - overlap), est) (two cannot overlap: each holds one '='). */
        Py_ssize_t i = counted - overlap > pos ? counted - overlap : pos;
        while (i < est) {
            const unsigned char *q = memchr(c->raw + i, '=', (size_t)(est - i));
            if (q == NULL)
                break;
            i = q - c->raw;
            eq += i >= counted;
            sb += i + c->slen <= est && memcmp(q, c->soft, (size_t)c->slen) == 0;
            i++;
        }
        counted = est;
        Py_ssize_t next = target + 2 * eq + extra * sb;
        if (next == est) {
            c->dec = dec;
            c->pos = est;
            return est;
        }
        est = next;
    }
    return -1;
}

/* binascii.a2b_qp(data) (header=False), written anew: the same bytes for every input
 * (the differential tests compare them). Writes at most n bytes to o; returns the count. */
static inline int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static Py_ssize_t qp_decode_into(bptr d, Py_ssize_t n, unsigned char *o)
{
    Py_ssize_t in = 0, out = 0;
    while (in < n) {
        const unsigned char *eq = memchr(d + in, '=', (size_t)(n - in));
        Py_ssize_t run = (eq == NULL ? n : eq - d) - in;
        memcpy(o + out, d + in, (size_t)run);
        out += run;
        in += run;
        if (in >= n)
            break;
        in++; /* the '=' */
        if (in >= n)
            break; /* a final '=': a soft break at the end */
        unsigned char c = d[in];
        if (c == '\n' || c == '\r') {
            /* a soft break: up to and past the next LF */
            if (c != '\n') {
                const unsigned char *lf = memchr(d + in, '\n', (size_t)(n - in));
                in = lf == NULL ? n : lf - d;
            }
            if (in < n)
                in++;
        } else if (c == '=') {
            o[out++] = '=';
            in++;
        } else if (in + 1 < n && hex_value(c) >= 0 && hex_value(d[in + 1]) >= 0) {
            o[out++] = (unsigned char)(hex_value(c) << 4 | hex_value(d[in + 1]));
            in += 2;
        } else {
            o[out++] = '=';
        }
    }
    return out;
}

static PyObject *qp_decode_bytes(bptr d, Py_ssize_t n)
{
    PyObject *res = PyBytes_FromStringAndSize(NULL, n);
    if (res == NULL)
        return NULL;
    Py_ssize_t len = qp_decode_into(d, n, (unsigned char *)PyBytes_AS_STRING(res));
    if (len != n && _PyBytes_Resize(&res, len) < 0)
        return NULL;
    return res;
}

#define QP_MAX 76 /* binascii's MAXLINESIZE */
static const char HEX[] = "0123456789ABCDEF";

/* binascii.b2a_qp(data, quotetabs=False, istext=istext, header=False), written anew: the
 * same bytes for every input. With o == NULL it only counts them (the output is sized
 * exactly, as binascii sizes it: a 1 MB part never costs a 6 MB scratch buffer). */
/* A byte b2a_qp writes as it is (but for a soft break before it) in a run: printable but
 * '=', or white space; the run's conditions below cover '.' and white space. */
static inline int qp_plain(unsigned char c)
{
    return (c >= 33 && c <= 126 && c != '=') || c == ' ' || c == '\t';
}

static Py_ssize_t qp_encode_into(bptr d, Py_ssize_t n, int istext, int crlf, unsigned char *o)
{
    if (crlf < 0) {
        /* binascii: CRLF soft breaks when the first LF follows a CR */
        const unsigned char *lf = memchr(d, '\n', (size_t)n);
        crlf = lf != NULL && lf > d && lf[-1] == '\r';
    }
    Py_ssize_t in = 0, out = 0, linelen = 0;
    unsigned char prev = 0; /* the last byte written (out > 0) */
#define PUT(ch)                                                                            \
    do {                                                                                   \
        unsigned char put_ = (unsigned char)(ch);                                          \
        if (o != NULL)                                                                     \
            o[out] = put_;                                                                 \
        out++;                                                                             \
        prev = put_;                                                                       \
    } while (0)
#define SOFT_BREAK()                                                                       \
    do {                                                                                   \
        PUT('=');                                                                          \
        if (crlf)                                                                          \
            PUT('\r');                                                                     \
        PUT('\n');                                                                         \
        linelen = 0;                                                                       \
    } while (0)
    while (in < n) {
        unsigned char c = d[in];
        if (qp_plain(c) && linelen + 1 < QP_MAX && in + 1 < n && (c != '.' || linelen > 0)) {
            /* A run of bytes written as they are, none needing a soft break before it
             * (what the general case below does for each of them, one at a time): '.' is
             * escaped only first on a line, white space only as the data's last byte (one
             * before a line break is escaped there, by the line-break case, via prev). */
            Py_ssize_t stop = in + 1, room = QP_MAX - 1 - linelen;
            while (stop < n - 1 && stop - in < room && qp_plain(d[stop]))
                stop++;
            if (o != NULL)
                memcpy(o + out, d + in, (size_t)(stop - in));
            out += stop - in;
            linelen += stop - in;
            prev = d[stop - 1];
            in = stop;
            continue;
        }
        int last = in + 1 == n;
        if (c > 126 || c == '=' ||
            (c == '.' && linelen == 0 &&
             (last || d[in + 1] == '\n' || d[in + 1] == '\r' || d[in + 1] == 0)) ||
            (!istext && (c == '\r' || c == '\n')) || ((c == '\t' || c == ' ') && last) ||
            (c < 33 && c != '\r' && c != '\n' && c != '\t' && c != ' ')) {
            if (linelen + 3 >= QP_MAX)
                SOFT_BREAK();
            PUT('=');
            PUT(HEX[c >> 4]);
            PUT(HEX[c & 15]);
            linelen += 3;
            in++;
        } else if (istext && (c == '\n' || (!last && c == '\r' && d[in + 1] == '\n'))) {
            linelen = 0;
            if (out > 0 && (prev == ' ' || prev == '\t')) {
                /* white space before a line break is escaped */
                unsigned char ws = prev;
                out--;
                PUT('=');
                PUT(HEX[ws >> 4]);
                PUT(HEX[ws & 15]);
            }
            if (crlf)
                PUT('\r');
            PUT('\n');
            in += c == '\r' ? 2 : 1;
        } else {
            if (!last && d[in + 1] != '\n' && linelen + 1 >= QP_MAX)
                SOFT_BREAK();
            linelen++;
            PUT(c);
            in++;
        }
    }
#undef SOFT_BREAK
#undef PUT
    return out;
}

static PyObject *qp_encode_bytes(bptr d, Py_ssize_t n, int istext)
{
    if (n > PY_SSIZE_T_MAX / 8)
        return PyErr_NoMemory();
    Py_ssize_t len = qp_encode_into(d, n, istext, -1, NULL);
    PyObject *res = PyBytes_FromStringAndSize(NULL, len);
    if (res == NULL)
        return NULL;
    Py_ssize_t written =
        qp_encode_into(d, n, istext, -1, (unsigned char *)PyBytes_AS_STRING(res));
    if (written != len) {
        Py_DECREF(res);
        PyErr_SetString(PyExc_SystemError, "qp_encode: sizing and encoding disagree");
        return NULL;
    }
    return res;
}

static PyObject *py_a2b_qp(PyObject *self, PyObject *arg)
{
    Py_buffer b;
    if (PyObject_GetBuffer(arg, &b, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *res = qp_decode_bytes(b.buf, b.len);
    PyBuffer_Release(&b);
    return res;
}

static PyObject *py_b2a_qp(PyObject *self, PyObject *args)
{
    Py_buffer b;
    int istext = 1;
    if (!PyArg_ParseTuple(args, "y*|p:b2a_qp", &b, &istext))
        return NULL;
    PyObject *res = qp_encode_bytes(b.buf, b.len, istext);
    PyBuffer_Release(&b);
    return res;
}

/* transfer.qp_encode(data, eol), into o (NULL: only count). The Python function's three
 * cases come down to binascii's encoder with soft breaks in `eol`: data without line breaks
 * (b2a_qp's LF soft breaks then replaced by eol's), data whose breaks are all eol (b2a_qp
 * takes eol from them), and the rest, line by line in binary mode (LF soft breaks replaced
 * by eol's: a binary-mode line holds no raw line break to be mistaken for one). */
static Py_ssize_t qp_encode_eol(bptr d, Py_ssize_t n, int crlf, unsigned char *o)
{
    int clean;
    if (memchr(d, '\n', (size_t)n) == NULL && memchr(d, '\r', (size_t)n) == NULL) {
        clean = 1;
    } else if (crlf) {
        Py_ssize_t lf = 0, cr = 0, pairs = 0;
        for (Py_ssize_t k = 0; k < n; k++) {
            if (d[k] == '\n')
                lf++;
            else if (d[k] == '\r') {
                cr++;
                if (k + 1 < n && d[k + 1] == '\n')
                    pairs++;
            }
        }
        clean = lf == cr && cr == pairs;
    } else {
        clean = memchr(d, '\r', (size_t)n) == NULL;
    }
    if (clean)
        return qp_encode_into(d, n, 1, crlf, o);
    /* eol.join(b2a_qp(line, istext=False) ... for line in data.split(eol)) */
    Py_ssize_t w = crlf ? 2 : 1, out = 0, start = 0;
    for (;;) {
        Py_ssize_t stop = start;
        while (stop < n && !(d[stop] == (crlf ? '\r' : '\n') &&
                             (!crlf || (stop + 1 < n && d[stop + 1] == '\n'))))
            stop++;
        out += qp_encode_into(d + start, stop - start, 0, crlf, o == NULL ? NULL : o + out);
        if (stop >= n)
            return out;
        if (o != NULL)
            memcpy(o + out, crlf ? "\r\n" : "\n", (size_t)w);
        out += w;
        start = stop + w;
    }
}

/* transfer.qp_encode as a new bytes object. */
static PyObject *qp_encode_new(bptr d, Py_ssize_t n, int crlf)
{
    if (n > PY_SSIZE_T_MAX / 8)
        return PyErr_NoMemory();
    Py_ssize_t len = qp_encode_eol(d, n, crlf, NULL);
    PyObject *res = PyBytes_FromStringAndSize(NULL, len);
    if (res == NULL)
        return NULL;
    if (qp_encode_eol(d, n, crlf, (unsigned char *)PyBytes_AS_STRING(res)) != len) {
        Py_DECREF(res);
        PyErr_SetString(PyExc_SystemError, "qp_encode: sizing and encoding disagree");
        return NULL;
    }
    return res;
}

static PyObject *py_qp_encode(PyObject *self, PyObject *args)
{
    PyObject *data, *eol;
    if (!PyArg_ParseTuple(args, "SS:qp_encode", &data, &eol))
        return NULL;
    Py_ssize_t w = PyBytes_GET_SIZE(eol);
    if (!((w == 1 && PyBytes_AS_STRING(eol)[0] == '\n') ||
          (w == 2 && memcmp(PyBytes_AS_STRING(eol), "\r\n", 2) == 0))) {
        PyErr_SetString(PyExc_ValueError, "eol must be LF or CRLF");
        return NULL;
    }
    return qp_encode_new((bptr)PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), w == 2);
}


typedef struct {
    Py_ssize_t start, end, d_start, d_end, first, past;
} qp_region;

typedef struct {
    Py_ssize_t s, e;
    PyObject *new; /* borrowed from the edits list */
} edit;

/* Reads the edits list: sorted (start, end, new bytes) tuples. */
static edit *read_edits(PyObject *edits, Py_ssize_t *count)
{
    if (!PyList_Check(edits)) {
        PyErr_SetString(PyExc_TypeError, "edits must be a list");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(edits);
    edit *out = PyMem_New(edit, (size_t)(n > 0 ? n : 1));
    if (out == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *t = PyList_GET_ITEM(edits, k);
        if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 3 ||
            !PyBytes_Check(PyTuple_GET_ITEM(t, 2))) {
            PyMem_Free(out);
            PyErr_SetString(PyExc_TypeError, "an edit is a (start, end, bytes) tuple");
            return NULL;
        }
        out[k].s = PyLong_AsSsize_t(PyTuple_GET_ITEM(t, 0));
        out[k].e = PyLong_AsSsize_t(PyTuple_GET_ITEM(t, 1));
        out[k].new = PyTuple_GET_ITEM(t, 2);
        if ((out[k].s == -1 || out[k].e == -1) && PyErr_Occurred()) {
            PyMem_Free(out);
            return NULL;
        }
    }
    *count = n;
    return out;
}

static PyObject *qp_splice(PyObject *self, PyObject *args)
{
    PyObject *raw_o, *decoded, *edits_o, *eol;
    if (!PyArg_ParseTuple(args, "SSOS:qp_splice", &raw_o, &decoded, &edits_o, &eol))
        return NULL;
    Py_ssize_t n_edits = 0;
    edit *edits = read_edits(edits_o, &n_edits);
    if (edits == NULL)
        return NULL;
    if (n_edits == 0) {
        PyMem_Free(edits);
        PyErr_SetString(PyExc_IndexError, "no edits");
        return NULL;
    }
    bptr raw = (bptr)PyBytes_AS_STRING(raw_o);
    Py_ssize_t n = PyBytes_GET_SIZE(raw_o);
    bptr el = (bptr)PyBytes_AS_STRING(eol);
    Py_ssize_t width = PyBytes_GET_SIZE(eol);
    PyObject *result = NULL;
    unsigned char **encs = NULL, *joined = NULL;
    Py_ssize_t *enc_lens = NULL, made = 0;
    qp_region *regions = PyMem_New(qp_region, (size_t)n_edits);
    unsigned char *soft = PyMem_Malloc((size_t)width + 1);
    if (regions == NULL || soft == NULL || width < 1) {
        if (width < 1)
            PyErr_SetString(PyExc_ValueError, "empty eol");
        else
            PyErr_NoMemory();
        goto done;
    }
    soft[0] = '=';
    memcpy(soft + 1, el, (size_t)width);
    qp_cursor cursor = {raw, n, soft, width + 1, 0, 0};
    Py_ssize_t n_regions = 0;

    /* _clusters, walked as they are made */
    Py_ssize_t first = 0, cstart = edits[0].s, cend = edits[0].e;
    for (Py_ssize_t k = 1; k <= n_edits; k++) {
        int close = k == n_edits;
        if (!close && edits[k].s - cend > CLUSTER_GAP)
            close = 1;
        if (close) {
            Py_ssize_t s = cstart, e = cend, past = k;
            Py_ssize_t rs = raw_offset(&cursor, s);
            Py_ssize_t re_ = e == s ? rs : raw_offset(&cursor, e);
            if (rs < 0 || re_ < 0) {
                result = Py_NewRef(Py_None);
                goto done;
            }
            Py_ssize_t j = -1;
            Py_ssize_t lim = rs > n ? n : rs;
            for (Py_ssize_t q = lim - width; q >= 0; q--) {
                if (memcmp(raw + q, el, (size_t)width) == 0) {
                    j = q;
                    break;
                }
            }
            Py_ssize_t start = j < 0 ? 0 : j + width;
            j = find_sub(raw, re_, n, (const char *)el, width);
            if (j < 0)
                j = n;
            Py_ssize_t end = (j > re_ && raw[j - 1] == '=') ? j - 1 : j;
            Py_ssize_t d_start = s - (rs - start - 2 * count_eq(raw, n, start, rs));
            Py_ssize_t d_end = e + (end - re_ - 2 * count_eq(raw, n, re_, end));
            if (n_regions > 0 && start < regions[n_regions - 1].end) {
                qp_region *last = &regions[n_regions - 1];
                last->end = end > last->end ? end : last->end;
                last->d_end = d_end > last->d_end ? d_end : last->d_end;
                last->past = past;
            } else {
                regions[n_regions++] = (qp_region){start, end, d_start, d_end, first, past};
            }
            if (k == n_edits)
                break;
            first = k;
            cstart = edits[k].s;
        }
        if (edits[k].e > cend)
            cend = edits[k].e;
    }

    /* Each region's new encoding in a buffer of its own, then the whole body in one. */
    encs = PyMem_New(unsigned char *, (size_t)n_regions + 1);
    enc_lens = PyMem_New(Py_ssize_t, (size_t)n_regions + 1);
    if (encs == NULL || enc_lens == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    const unsigned char *dd = (const unsigned char *)PyBytes_AS_STRING(decoded);
    Py_ssize_t dn = PyBytes_GET_SIZE(decoded);
    int crlf = width == 2;
    for (Py_ssize_t r = 0; r < n_regions; r++) {
        qp_region *g = &regions[r];
        if (g->d_start < 0) {
            result = Py_NewRef(Py_None);
            goto done;
        }
        Py_ssize_t rs = g->start, re_ = g->end, ds = g->d_start, de = g->d_end;
        slice_bounds(n, &rs, &re_);
        slice_bounds(dn, &ds, &de);
        /* a2b_qp(raw[start:end]) == decoded[d_start:d_end], without the objects */
        unsigned char *scratch = PyMem_Malloc((size_t)(re_ - rs) + 1);
        if (scratch == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        Py_ssize_t got = qp_decode_into(raw + rs, re_ - rs, scratch);
        int same = got == de - ds && memcmp(scratch, dd + ds, (size_t)got) == 0;
        PyMem_Free(scratch);
        if (!same) {
            result = Py_NewRef(Py_None);
            goto done;
        }
        /* The region's decoded text with its edits: decoded[d_start:s0] + new0 + ... +
         * decoded[e_last:d_end], with Python's slice bounds. */
        Py_ssize_t jl = 0, cur = g->d_start;
        for (int pass = 0; pass < 2; pass++) {
            unsigned char *j = pass == 0 ? NULL : joined;
            Py_ssize_t at = 0;
            cur = g->d_start;
            for (Py_ssize_t k = g->first; k <= g->past; k++) {
                Py_ssize_t a = cur, b = k < g->past ? edits[k].s : g->d_end;
                slice_bounds(dn, &a, &b);
                if (j != NULL)
                    memcpy(j + at, dd + a, (size_t)(b - a));
                at += b - a;
                if (k == g->past)
                    break;
                Py_ssize_t nl = PyBytes_GET_SIZE(edits[k].new);
                if (j != NULL)
                    memcpy(j + at, PyBytes_AS_STRING(edits[k].new), (size_t)nl);
                at += nl;
                cur = edits[k].e;
            }
            if (pass == 0) {
                jl = at;
                joined = PyMem_Malloc((size_t)jl + 1);
                if (joined == NULL) {
                    PyErr_NoMemory();
                    goto done;
                }
            }
        }
        Py_ssize_t enl = qp_encode_eol(joined, jl, crlf, NULL);
        unsigned char *enc = PyMem_Malloc((size_t)enl + 1 + (size_t)width);
        if (enc == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        encs[made] = enc;
        made++;
        qp_encode_eol(joined, jl, crlf, enc);
        PyMem_Free(joined);
        joined = NULL;
        if (g->end < n && raw[g->end] == '=') {
            /* transfer._room_for_soft_break */
            Py_ssize_t line_start = 0;
            for (Py_ssize_t q = enl - width; q >= 0; q--) {
                if (memcmp(enc + q, el, (size_t)width) == 0) {
                    line_start = q + width;
                    break;
                }
            }
            if (enl - line_start >= QP_LINE) {
                Py_ssize_t cut = enl - ((enl >= 3 && enc[enl - 3] == '=') ? 3 : 1);
                memmove(enc + cut + 1 + width, enc + cut, (size_t)(enl - cut));
                enc[cut] = '=';
                memcpy(enc + cut + 1, el, (size_t)width);
                enl += 1 + width;
            }
        }
        enc_lens[r] = enl;
    }
    Py_ssize_t total = 0, copied = 0;
    for (Py_ssize_t r = 0; r <= n_regions; r++) {
        Py_ssize_t a = copied, b = r < n_regions ? regions[r].start : n;
        slice_bounds(n, &a, &b);
        total += b - a;
        if (r == n_regions)
            break;
        total += enc_lens[r];
        copied = regions[r].end;
    }
    result = PyBytes_FromStringAndSize(NULL, total);
    if (result == NULL)
        goto done;
    unsigned char *o = (unsigned char *)PyBytes_AS_STRING(result);
    copied = 0;
    for (Py_ssize_t r = 0; r <= n_regions; r++) {
        Py_ssize_t a = copied, b = r < n_regions ? regions[r].start : n;
        slice_bounds(n, &a, &b);
        memcpy(o, raw + a, (size_t)(b - a));
        o += b - a;
        if (r == n_regions)
            break;
        memcpy(o, encs[r], (size_t)enc_lens[r]);
        o += enc_lens[r];
        copied = regions[r].end;
    }
done:
    for (Py_ssize_t r = 0; r < made; r++)
        PyMem_Free(encs[r]);
    PyMem_Free(encs);
    PyMem_Free(enc_lens);
    PyMem_Free(joined);
    PyMem_Free(regions);
    PyMem_Free(soft);
    PyMem_Free(edits);
    return result;
}

/* ---------------------------------------------------------------- signing */

/* HMAC-SHA256 (RFC 2104, FIPS 180-4) from precomputed states, for tokens.MessageSigner:
 * the key's inner and outer pads are compressed once (hmac_states), each token then costs
 * two short hashes. Checked against hashlib/hmac by the tests. */
static const uint32_t SHA_K[64] = {
0x428a2f98U, 0x71374491U, 0xb5c0fbcfU, 0xe9b5dba5U,
0x3956c25bU, 0x59f111f1U, 0x923f82a4U, 0xab1c5ed5U,
0xd807aa98U, 0x12835b01U, 0x243185beU, 0x550c7dc3U,
0x72be5d74U, 0x80deb1feU, 0x9bdc06a7U, 0xc19bf174U,
0xe49b69c1U, 0xefbe4786U, 0x0fc19dc6U, 0x240ca1ccU,
0x2de92c6fU, 0x4a7484aaU, 0x5cb0a9dcU, 0x76f988daU,
0x983e5152U, 0xa831c66dU, 0xb00327c8U, 0xbf597fc7U,
0xc6e00bf3U, 0xd5a79147U, 0x06ca6351U, 0x14292967U,
0x27b70a85U, 0x2e1b2138U, 0x4d2c6dfcU, 0x53380d13U,
0x650a7354U, 0x766a0abbU, 0x81c2c92eU, 0x92722c85U,
0xa2bfe8a1U, 0xa81a664bU, 0xc24b8b70U, 0xc76c51a3U,
0xd192e819U, 0xd6990624U, 0xf40e3585U, 0x106aa070U,
0x19a4c116U, 0x1e376c08U, 0x2748774cU, 0x34b0bcb5U,
0x391c0cb3U, 0x4ed8aa4aU, 0x5b9cca4fU, 0x682e6ff3U,
0x748f82eeU, 0x78a5636fU, 0x84c87814U, 0x8cc70208U,
0x90befffaU, 0xa4506cebU, 0xbef9a3f7U, 0xc67178f2U
};
static const uint32_t SHA_IV[8] = {0x6a09e667U, 0xbb67ae85U, 0x3c6ef372U, 0xa54ff53aU, 0x510e527fU, 0x9b05688cU, 0x1f83d9abU, 0x5be0cd19U};

static inline uint32_t ror(uint32_t x, int n)
{
    return (x >> n) | (x << (32 - n));
}

static void sha256_block(uint32_t h[8], const unsigned char *p)
{
    uint32_t w[64];
    for (int t = 0; t < 16; t++)
        w[t] = (uint32_t)p[4 * t] << 24 | (uint32_t)p[4 * t + 1] << 16 |
               (uint32_t)p[4 * t + 2] << 8 | (uint32_t)p[4 * t + 3];
    for (int t = 16; t < 64; t++) {
        uint32_t s0 = ror(w[t - 15], 7) ^ ror(w[t - 15], 18) ^ (w[t - 15] >> 3);
        uint32_t s1 = ror(w[t - 2], 17) ^ ror(w[t - 2], 19) ^ (w[t - 2] >> 10);
        w[t] = w[t - 16] + s0 + w[t - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
    for (int t = 0; t < 64; t++) {
        uint32_t t1 = k + (ror(e, 6) ^ ror(e, 11) ^ ror(e, 25)) + ((e & f) ^ (~e & g)) +
                      SHA_K[t] + w[t];
        uint32_t t2 = (ror(a, 2) ^ ror(a, 13) ^ ror(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        k = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
    h[5] += f;
    h[6] += g;
    h[7] += k;
}

/* SHA-256 of (`prefix` bytes already compressed into `state`) + data[0:n]. */
static void sha256_finish(const uint32_t state[8], uint64_t prefix, const unsigned char *data,
                          Py_ssize_t n, unsigned char out[32])
{
    uint32_t h[8];
    memcpy(h, state, sizeof h);
    Py_ssize_t i = 0;
    for (; n - i >= 64; i += 64)
        sha256_block(h, data + i);
    unsigned char last[128];
    Py_ssize_t rest = n - i;
    memcpy(last, data + i, (size_t)rest);
    last[rest] = 0x80;
    Py_ssize_t total = rest + 9 <= 64 ? 64 : 128;
    memset(last + rest + 1, 0, (size_t)(total - rest - 1));
    uint64_t bits = (prefix + (uint64_t)n) * 8;
    for (int k = 0; k < 8; k++)
        last[total - 1 - k] = (unsigned char)(bits >> (8 * k));
    sha256_block(h, last);
    if (total == 128)
        sha256_block(h, last + 64);
    for (int k = 0; k < 8; k++) {
        out[4 * k] = (unsigned char)(h[k] >> 24);
        out[4 * k + 1] = (unsigned char)(h[k] >> 16);
        out[4 * k + 2] = (unsigned char)(h[k] >> 8);
        out[4 * k + 3] = (unsigned char)h[k];
    }
}

/* hmac_states(key) -> 64 bytes: the inner and outer pads' SHA-256 states (8 words each). */
static PyObject *hmac_states(PyObject *self, PyObject *args)
{
    Py_buffer key;
    if (!PyArg_ParseTuple(args, "y*:hmac_states", &key))
        return NULL;
    unsigned char k[64] = {0};
    if (key.len > 64)
        sha256_finish(SHA_IV, 0, key.buf, key.len, k);
    else
        memcpy(k, key.buf, (size_t)key.len);
    PyBuffer_Release(&key);
    unsigned char pad[64];
    uint32_t st[16];
    for (int half = 0; half < 2; half++) {
        unsigned char x = half == 0 ? 0x36 : 0x5c;
        for (int i = 0; i < 64; i++)
            pad[i] = k[i] ^ x;
        memcpy(st + 8 * half, SHA_IV, sizeof SHA_IV);
        sha256_block(st + 8 * half, pad);
    }
    unsigned char out[64];
    for (int w = 0; w < 16; w++) {
        out[4 * w] = (unsigned char)(st[w] >> 24);
        out[4 * w + 1] = (unsigned char)(st[w] >> 16);
        out[4 * w + 2] = (unsigned char)(st[w] >> 8);
        out[4 * w + 3] = (unsigned char)st[w];
    }
    return PyBytes_FromStringAndSize((const char *)out, 64);
}

static const char B64URL[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* sign(states, body, mac_len) -> str: base64url(body + HMAC(body)[:mac_len]), unpadded. */
static PyObject *sign(PyObject *self, PyObject *args)
{
    Py_buffer states, body;
    Py_ssize_t mac_len;
    if (!PyArg_ParseTuple(args, "y*y*n:sign", &states, &body, &mac_len))
        return NULL;
    PyObject *res = NULL;
    unsigned char *buf = NULL;
    if (states.len != 64 || mac_len < 0 || mac_len > 32 || body.len > (1 << 20)) {
        PyErr_SetString(PyExc_ValueError, "sign: 64 bytes of states, a MAC of 0-32 bytes, "
                                          "a body of at most 1 MiB");
        goto done;
    }
    uint32_t st[16];
    const unsigned char *sb = states.buf;
    for (int w = 0; w < 16; w++)
        st[w] = (uint32_t)sb[4 * w] << 24 | (uint32_t)sb[4 * w + 1] << 16 |
                (uint32_t)sb[4 * w + 2] << 8 | (uint32_t)sb[4 * w + 3];
    Py_ssize_t n = body.len + mac_len;
    buf = PyMem_Malloc((size_t)n + 1);
    if (buf == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    memcpy(buf, body.buf, (size_t)body.len);
    unsigned char inner[32], outer[32];
    sha256_finish(st, 64, body.buf, body.len, inner);
    sha256_finish(st + 8, 64, inner, 32, outer);
    memcpy(buf + body.len, outer, (size_t)mac_len);
    Py_ssize_t chars = n / 3 * 4 + (n % 3 ? n % 3 + 1 : 0);
    res = PyUnicode_New(chars, 127);
    if (res == NULL)
        goto done;
    Py_UCS1 *o = PyUnicode_1BYTE_DATA(res);
    Py_ssize_t i = 0, j = 0;
    for (; n - i >= 3; i += 3) {
        uint32_t v = (uint32_t)buf[i] << 16 | (uint32_t)buf[i + 1] << 8 | buf[i + 2];
        o[j++] = (Py_UCS1)B64URL[v >> 18];
        o[j++] = (Py_UCS1)B64URL[(v >> 12) & 63];
        o[j++] = (Py_UCS1)B64URL[(v >> 6) & 63];
        o[j++] = (Py_UCS1)B64URL[v & 63];
    }
    if (n - i == 1) {
        o[j++] = (Py_UCS1)B64URL[buf[i] >> 2];
        o[j++] = (Py_UCS1)B64URL[(buf[i] & 3) << 4];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)buf[i] << 8 | buf[i + 1];
        o[j++] = (Py_UCS1)B64URL[v >> 10];
        o[j++] = (Py_UCS1)B64URL[(v >> 4) & 63];
        o[j++] = (Py_UCS1)B64URL[(v & 15) << 2];
    }
done:
    PyMem_Free(buf);
    PyBuffer_Release(&states);
    PyBuffer_Release(&body);
    return res;
}

/* tokens._PLAIN_URL.fullmatch: https?://[A-Za-z0-9.-]+(?::[0-9]{1,5})?(?:[/?#][!#-;=?-~]*)?
 * Returns the length of the scheme ("http://" 7, "https://" 8), or 0 when it does not match. */
static Py_ssize_t plain_url(const unsigned char *u, Py_ssize_t n)
{
    Py_ssize_t i;
    if (n >= 7 && memcmp(u, "http://", 7) == 0)
        i = 7;
    else if (n >= 8 && memcmp(u, "https://", 8) == 0)
        i = 8;
    else
        return 0;
    Py_ssize_t scheme = i, host = i;
    while (i < n && (is_alpha(u[i]) || (u[i] >= '0' && u[i] <= '9') || u[i] == '.' || u[i] == '-'))
        i++;
    if (i == host)
        return 0;
    if (i < n && u[i] == ':') {
        Py_ssize_t digits = ++i;
        while (i < n && u[i] >= '0' && u[i] <= '9' && i - digits < 5)
            i++;
        if (i == digits)
            return 0;
    }
    if (i == n)
        return scheme;
    if (u[i] != '/' && u[i] != '?' && u[i] != '#')
        return 0;
    for (; i < n; i++) {
        unsigned char c = u[i];
        if (c < 0x21 || c > 0x7E || c == '"' || c == '<' || c == '>')
            return 0;
    }
    return scheme;
}

/* click(states, head, kid, tid, index, url, max_tail) -> str | None: tokens.MessageSigner
 * .click for a URL that is already canonical (tokens._PLAIN_URL) with 0 <= index < 128 and
 * a tail of at most max_tail bytes; None for anything else (the caller then takes the
 * general path, which raises where it must). `head` is byte 0 without the https bit. */
static PyObject *click(PyObject *self, PyObject *args)
{
    Py_buffer states, tid;
    int head, kid;
    Py_ssize_t index, max_tail;
    PyObject *url;
    if (!PyArg_ParseTuple(args, "y*iiy*nUn:click", &states, &head, &kid, &tid, &index, &url,
                          &max_tail))
        return NULL;
    PyObject *res = NULL;
    if (states.len != 64 || tid.len > 64 || head < 0 || head > 255 || kid < 0 || kid > 255) {
        PyErr_SetString(PyExc_ValueError, "click: bad states, head, key id or tracking id");
        goto done;
    }
    Py_ssize_t n = PyUnicode_GET_LENGTH(url);
    Py_ssize_t scheme = PyUnicode_IS_ASCII(url) && index >= 0 && index < 0x80
                            ? plain_url(PyUnicode_1BYTE_DATA(url), n)
                            : 0;
    if (scheme == 0 || n - scheme > max_tail || n - scheme > (1 << 16)) {
        res = Py_NewRef(Py_None);
        goto done;
    }
    Py_ssize_t len = 2 + tid.len + 1 + (n - scheme);
    unsigned char *body = PyMem_Malloc((size_t)len);
    if (body == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    body[0] = (unsigned char)(head | (scheme == 8));
    body[1] = (unsigned char)kid;
    memcpy(body + 2, tid.buf, (size_t)tid.len);
    body[2 + tid.len] = (unsigned char)index;
    memcpy(body + 3 + tid.len, PyUnicode_1BYTE_DATA(url) + scheme, (size_t)(n - scheme));
    PyObject *packed = PyBytes_FromStringAndSize((const char *)body, len);
    PyMem_Free(body);
    if (packed == NULL)
        goto done;
    PyObject *sargs = Py_BuildValue("(y#Nn)", (const char *)states.buf, states.len, packed,
                                    (Py_ssize_t)10);
    if (sargs != NULL) {
        res = sign(self, sargs);
        Py_DECREF(sargs);
    }
done:
    PyBuffer_Release(&states);
    PyBuffer_Release(&tid);
    return res;
}

/* ---------------------------------------------------------------- module */

static PyMethodDef methods[] = {
    {"find_hrefs", find_hrefs, METH_VARARGS,
     "find_hrefs(data, optout) -> [(start, end)]: scan.find_hrefs."},
    {"html_links", html_links, METH_VARARGS,
     "html_links(work, optout, codec, prefix, unescape) -> [(start, end, url)]: the href "
     "values that decode in `codec` and name an http(s) URL not starting with `prefix`."},
    {"link_edits", link_edits, METH_VARARGS,
     "link_edits(work, candidates, first, linker, html, leaf, kind, tracks, Link, check) -> "
     "(edits, links): engine._link_edits_python."},
    {"a2b_qp", py_a2b_qp, METH_O, "a2b_qp(data) -> bytes: binascii.a2b_qp(data)."},
    {"b2a_qp", py_b2a_qp, METH_VARARGS,
     "b2a_qp(data, istext=True) -> bytes: binascii.b2a_qp(data, istext=istext)."},
    {"qp_encode", py_qp_encode, METH_VARARGS,
     "qp_encode(data, eol) -> bytes: transfer.qp_encode."},
    {"hmac_states", hmac_states, METH_VARARGS,
     "hmac_states(key) -> bytes: HMAC-SHA256's inner and outer states for `key` (64 bytes)."},
    {"sign", sign, METH_VARARGS,
     "sign(states, body, mac_len) -> str: base64url(body + HMAC-SHA256(body)[:mac_len]), "
     "without padding."},
    {"click", click, METH_VARARGS,
     "click(states, head, kid, tid, index, url, max_tail) -> str | None: the click token "
     "for an already canonical URL (tokens.MessageSigner.click), None for the general path."},
    {"qp_splice", qp_splice, METH_VARARGS,
     "qp_splice(raw, decoded, edits, eol) -> bytes | None: transfer.qp_splice."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_native", "The native rewriting engine's hot path.", -1, methods,
};

PyMODINIT_FUNC PyInit__native(void)
{
    amp_entity = PyUnicode_InternFromString("&amp;");
    amp = PyUnicode_InternFromString("&");
    if (amp_entity == NULL || amp == NULL)
        return NULL;
    return PyModule_Create(&module);
}
