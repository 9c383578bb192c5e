/*
 * `.npy` reader and writer (numpy `lib/format.py`, format versions 1.0, 2.0
 * and 3.0).
 *
 * Layout: "\x93NUMPY", major, minor, header length (u16 LE for 1.0, u32 LE
 * for 2.0/3.0), then the header -- a Python dict literal
 * {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), } padded with
 * spaces and ended by '\n' -- then the raw elements.
 *
 * The header is untrusted input: it is parsed in place by a small,
 * bounds-checked recogniser of Python literals (strings, integers,
 * True/False/None, tuples, lists, dicts, nesting depth <= 16), never
 * evaluated, and never read past its declared length.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "io_internal.h"

#define NPY_MAGIC "\x93NUMPY"
#define NPY_MAGIC_LEN 6
/* Headers are tiny (< 300 bytes for 8 dims); numpy >= 1.24 refuses > 10000
 * by default.  We accept up to 1 MiB so heavily padded headers still load,
 * and refuse larger ones before allocating anything. */
#define NPY_MAX_HEADER (1u << 20)
#define NPY_ALIGN 64
#define NPY_MAX_DEPTH 16

/* ---- header parsing ---- */

typedef struct npy_header {
  const char *descr;  /* points into the header (not NUL-terminated) */
  size_t descr_len;
  int descr_is_str;   /* 0: a list/other (structured dtype) */
  int fortran;
  int ndim;           /* number of shape entries seen (may exceed EFFML_TENSOR_MAX_DIMS) */
  int64_t shape[EFFML_TENSOR_MAX_DIMS];
  int shape_bad;      /* 1: negative entry, 2: entry overflows int64 */
  int64_t shape_bad_value;
  int seen_descr, seen_fortran, seen_shape;
} npy_header;

typedef struct lit_parser {
  const char *p, *end;
} lit_parser;

static int is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
static int is_digit(char c) { return c >= '0' && c <= '9'; }
static int is_ident(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) || c == '_';
}

static void skip_ws(lit_parser *lp) {
  while (lp->p < lp->end && is_space(*lp->p)) lp->p++;
}

/* A quoted string; on success [*s, *s + *n) is its raw body. */
static int parse_str(lit_parser *lp, const char **s, size_t *n) {
  if (lp->p >= lp->end || (*lp->p != '\'' && *lp->p != '"')) return 0;
  char q = *lp->p++;
  const char *b = lp->p;
  while (lp->p < lp->end && *lp->p != q) {
    if (*lp->p == '\n') return 0;
    if (*lp->p == '\\') {
      if (lp->end - lp->p < 2) return 0;
      lp->p++;
    }
    lp->p++;
  }
  if (lp->p >= lp->end) return 0;
  *s = b;
  *n = (size_t)(lp->p - b);
  lp->p++;
  return 1;
}

/* A decimal integer with optional sign and Python 2 'L' suffix.  *ovf is
 * set when it does not fit int64. */
static int parse_int(lit_parser *lp, int64_t *v, int *ovf) {
  int neg = 0;
  *ovf = 0;
  if (lp->p < lp->end && (*lp->p == '-' || *lp->p == '+')) neg = *lp->p++ == '-';
  if (lp->p >= lp->end || !is_digit(*lp->p)) return 0;
  uint64_t acc = 0;
  while (lp->p < lp->end && is_digit(*lp->p)) {
    unsigned d = (unsigned)(*lp->p++ - '0');
    if (acc > (UINT64_MAX - d) / 10) *ovf = 1;
    else acc = acc * 10 + d;
  }
  if (lp->p < lp->end && (*lp->p == 'L' || *lp->p == 'l')) lp->p++;
  if (lp->p < lp->end && (is_ident(*lp->p) || *lp->p == '.')) return 0; /* 1.5, 1e3, 0x1 */
  if (acc > (uint64_t)INT64_MAX) *ovf = 1;
  *v = *ovf ? 0 : (neg ? -(int64_t)acc : (int64_t)acc);
  return 1;
}

static int parse_word(lit_parser *lp, const char *w) {
  size_t n = strlen(w);
  if ((size_t)(lp->end - lp->p) < n || memcmp(lp->p, w, n) != 0) return 0;
  if ((size_t)(lp->end - lp->p) > n && is_ident(lp->p[n])) return 0;
  lp->p += n;
  return 1;
}

/* Skip any literal: string, integer, word, or a bracketed sequence. */
static int skip_value(lit_parser *lp, int depth) {
  skip_ws(lp);
  if (lp->p >= lp->end) return 0;
  char c = *lp->p;
  if (c == '\'' || c == '"') {
    const char *s;
    size_t n;
    return parse_str(lp, &s, &n);
  }
  if (c == '-' || c == '+' || is_digit(c)) {
    int64_t v;
    int ovf;
    return parse_int(lp, &v, &ovf);
  }
  if (parse_word(lp, "True") || parse_word(lp, "False") || parse_word(lp, "None")) return 1;
  char close = c == '(' ? ')' : c == '[' ? ']' : c == '{' ? '}' : 0;
  if (close == 0 || depth >= NPY_MAX_DEPTH) return 0;
  lp->p++;
  for (;;) {
    skip_ws(lp);
    if (lp->p < lp->end && *lp->p == close) break;
    if (!skip_value(lp, depth + 1)) return 0;
    skip_ws(lp);
    if (close == '}') {
      if (lp->p >= lp->end || *lp->p != ':') return 0;
      lp->p++;
      if (!skip_value(lp, depth + 1)) return 0;
      skip_ws(lp);
    }
    if (lp->p < lp->end && *lp->p == ',') {
      lp->p++;
      continue;
    }
    if (lp->p < lp->end && *lp->p == close) break;
    return 0;
  }
  lp->p++;
  return 1;
}

/* The shape: a tuple of integers, "()" "(5,)" "(3, 4)". */
static int parse_shape(lit_parser *lp, npy_header *h) {
  if (lp->p >= lp->end || *lp->p != '(') return 0;
  lp->p++;
  int commas = 0;
  h->ndim = 0;
  for (;;) {
    skip_ws(lp);
    if (lp->p < lp->end && *lp->p == ')') break;
    int64_t v;
    int ovf;
    if (!parse_int(lp, &v, &ovf)) return 0;
    if (ovf && !h->shape_bad) h->shape_bad = 2;
    else if (v < 0 && !h->shape_bad) {
      h->shape_bad = 1;
      h->shape_bad_value = v;
    }
    if (h->ndim < EFFML_TENSOR_MAX_DIMS) h->shape[h->ndim] = v;
    if (h->ndim < 1000000) h->ndim++;
    skip_ws(lp);
    if (lp->p < lp->end && *lp->p == ',') {
      lp->p++;
      commas++;
      continue;
    }
    if (lp->p < lp->end && *lp->p == ')') break;
    return 0;
  }
  lp->p++;
  /* "(3)" is the integer 3 in Python, not a tuple. */
  return !(h->ndim == 1 && commas == 0);
}

static effml_status parse_header(effml_context *ctx, const char *fn, const char *s, size_t n,
                                 npy_header *h) {
  memset(h, 0, sizeof *h);
  lit_parser lp = {s, s + n};
  if (memchr(s, '\0', n) != NULL)
    return effml__err(ctx, EFFML_E_FORMAT, "%s: .npy header contains a NUL byte", fn);
  skip_ws(&lp);
  if (lp.p >= lp.end || *lp.p != '{')
    return effml__err(ctx, EFFML_E_FORMAT, "%s: .npy header is not a dict literal", fn);
  lp.p++;
  for (;;) {
    skip_ws(&lp);
    if (lp.p < lp.end && *lp.p == '}') break;
    const char *key;
    size_t klen;
    if (!parse_str(&lp, &key, &klen))
      return effml__err(ctx, EFFML_E_FORMAT, "%s: .npy header: expected a quoted key at offset %zu",
                        fn, (size_t)(lp.p - s));
    skip_ws(&lp);
    if (lp.p >= lp.end || *lp.p != ':')
      return effml__err(ctx, EFFML_E_FORMAT, "%s: .npy header: expected ':' after key '%.*s'", fn,
                        (int)(klen > 40 ? 40 : klen), key);
    lp.p++;
    skip_ws(&lp);
    const char *vstart = lp.p;
    int ok, dup = 0;
    if (klen == 5 && memcmp(key, "descr", 5) == 0) {
      dup = h->seen_descr++;
      h->descr_is_str = parse_str(&lp, &h->descr, &h->descr_len);
      ok = h->descr_is_str;
      if (!ok) {
        lp.p = vstart;
        ok = skip_value(&lp, 1);
      }
    } else if (klen == 13 && memcmp(key, "fortran_order", 13) == 0) {
      dup = h->seen_fortran++;
      if (parse_word(&lp, "True")) h->fortran = 1, ok = 1;
      else if (parse_word(&lp, "False")) h->fortran = 0, ok = 1;
      else ok = 0;
    } else if (klen == 5 && memcmp(key, "shape", 5) == 0) {
      dup = h->seen_shape++;
      ok = parse_shape(&lp, h);
    } else {
      return effml__err(ctx, EFFML_E_FORMAT,
                        "%s: .npy header has the unexpected key '%.*s' (expected descr, "
                        "fortran_order, shape)",
                        fn, (int)(klen > 40 ? 40 : klen), key);
    }
    if (dup)
      return effml__err(ctx, EFFML_E_FORMAT, "%s: .npy header repeats the key '%.*s'", fn,
                        (int)klen, key);
    if (!ok)
      return effml__err(ctx, EFFML_E_FORMAT,
                        "%s: .npy header: malformed value for '%.*s' at offset %zu", fn, (int)klen,
                        key, (size_t)(vstart - s));
    skip_ws(&lp);
    if (lp.p < lp.end && *lp.p == ',') {
      lp.p++;
      continue;
    }
    if (lp.p < lp.end && *lp.p == '}') break;
    return effml__err(ctx, EFFML_E_FORMAT, "%s: .npy header: expected ',' or '}' at offset %zu",
                      fn, (size_t)(lp.p - s));
  }
  lp.p++;
  skip_ws(&lp);
  if (lp.p != lp.end)
    return effml__err(ctx, EFFML_E_FORMAT, "%s: .npy header has trailing bytes after the dict", fn);
  if (!h->seen_descr || !h->seen_fortran || !h->seen_shape)
    return effml__err(ctx, EFFML_E_FORMAT, "%s: .npy header lacks the key '%s'", fn,
                      !h->seen_descr ? "descr" : !h->seen_fortran ? "fortran_order" : "shape");
  return EFFML_OK;
}

/* ---- dtypes ---- */

typedef struct npy_dtype {
  const char *code; /* kind + size, after the byte-order character */
  int32_t dtype;
} npy_dtype;

static const npy_dtype npy_dtypes[] = {
    {"f4", EFFML_F32}, {"f8", EFFML_F64}, {"i4", EFFML_I32}, {"i8", EFFML_I64},
    {"u1", EFFML_U8},  {"i1", EFFML_I8},  {"i2", EFFML_I16}, {"u2", EFFML_U16},
    {"u4", EFFML_U32}, {"u8", EFFML_U64}, {"f2", EFFML_F16}, {"b1", EFFML_BOOL},
};

static effml_status map_descr(effml_context *ctx, const char *fn, const npy_header *h,
                              int32_t *dtype) {
  if (!h->descr_is_str)
    return effml__err(ctx, EFFML_E_UNSUPPORTED,
                      "%s: structured .npy dtypes (descr is a list) are not supported", fn);
  const char *d = h->descr;
  size_t n = h->descr_len;
  int shown = (int)(n > 40 ? 40 : n);
  if (n >= 1 && (d[n - 1] == 'O' && (n == 1 || (n == 2 && strchr("<>|=", d[0])))))
    return effml__err(ctx, EFFML_E_UNSUPPORTED,
                      "%s: .npy object dtype descr='%.*s' is not supported (it holds pickled "
                      "Python objects)",
                      fn, shown, d);
  if (n == 3) {
    char order = d[0];
    for (size_t i = 0; i < sizeof npy_dtypes / sizeof npy_dtypes[0]; ++i) {
      if (memcmp(d + 1, npy_dtypes[i].code, 2) != 0) continue;
      int one_byte = d[2] == '1';
      /* Byte order is irrelevant for one-byte types ('|', '<', '>' all fine). */
      if (order == '<' || (one_byte && (order == '|' || order == '>' || order == '='))) {
        *dtype = npy_dtypes[i].dtype;
        return EFFML_OK;
      }
      if (order == '>')
        return effml__err(ctx, EFFML_E_UNSUPPORTED,
                          "%s: big-endian .npy dtype descr='%.*s' is not supported (save it "
                          "with a little-endian dtype, e.g. arr.astype('<%s'))",
                          fn, shown, d, npy_dtypes[i].code);
      break;
    }
  }
  return effml__err(ctx, EFFML_E_UNSUPPORTED,
                    "%s: .npy dtype descr='%.*s' is not supported (supported: <f4 <f8 <f2 <i8 "
                    "<i4 <i2 |i1 <u8 <u4 <u2 |u1 |b1)",
                    fn, shown, d);
}

static const char *descr_of(int32_t dtype) {
  switch (dtype) {
    case EFFML_F32: return "<f4";
    case EFFML_F64: return "<f8";
    case EFFML_I32: return "<i4";
    case EFFML_I64: return "<i8";
    case EFFML_U8: return "|u1";
    case EFFML_I8: return "|i1";
    case EFFML_I16: return "<i2";
    case EFFML_U16: return "<u2";
    case EFFML_U32: return "<u4";
    case EFFML_U64: return "<u8";
    case EFFML_F16: return "<f2";
    case EFFML_BOOL: return "|b1";
    default: return NULL;
  }
}

/* ---- loading ---- */

/* A byte source: a memory buffer, or a FILE whose size (len) is known, so
 * every size is checked against the input before anything is allocated. */
typedef struct npy_src {
  const unsigned char *buf;
  size_t len, pos;
  FILE *f;
} npy_src;

static size_t src_read(npy_src *s, void *dst, size_t n) {
  size_t k = s->len - s->pos < n ? s->len - s->pos : n;
  if (s->f) k = fread(dst, 1, k, s->f);
  else memcpy(dst, s->buf + s->pos, k);
  s->pos += k;
  return k;
}

/* Reorder Fortran-order (column-major) elements `src` into C order `dst`. */
static void fortran_to_c(char *dst, const char *src, const effml_tensor *t, size_t es) {
  int nd = t->ndim;
  int64_t fstride[EFFML_TENSOR_MAX_DIMS], idx[EFFML_TENSOR_MAX_DIMS] = {0};
  int64_t s = 1;
  for (int k = 0; k < nd; ++k) {
    fstride[k] = s;
    s *= t->shape[k];
  }
  int64_t total = s, off = 0;
  for (int64_t i = 0; i < total; ++i) {
    memcpy(dst + (size_t)i * es, src + (size_t)off * es, es);
    /* Advance the C-order index (last dimension fastest), tracking the
     * Fortran offset incrementally. */
    for (int k = nd - 1; k >= 0; --k) {
      if (++idx[k] < t->shape[k]) {
        off += fstride[k];
        break;
      }
      off -= (idx[k] - 1) * fstride[k];
      idx[k] = 0;
    }
  }
}

/* Magic, version and header length (*hlen, checked against the limit). */
static effml_status read_preamble(effml_context *ctx, const char *fn, npy_src *src,
                                  size_t *hlen) {
  unsigned char pre[12];
  if (src_read(src, pre, 8) != 8)
    return effml__err(ctx, EFFML_E_FORMAT, "%s: truncated .npy: fewer than 8 bytes", fn);
  if (memcmp(pre, NPY_MAGIC, NPY_MAGIC_LEN) != 0)
    return effml__err(ctx, EFFML_E_FORMAT, "%s: wrong magic: not a .npy file (expected \\x93NUMPY)",
                      fn);
  int major = pre[6], minor = pre[7];
  if ((major != 1 && major != 2 && major != 3) || minor != 0)
    return effml__err(ctx, EFFML_E_UNSUPPORTED,
                      "%s: .npy format version %d.%d is not supported (1.0, 2.0, 3.0)", fn, major,
                      minor);
  size_t lenbytes = major == 1 ? 2 : 4;
  if (src_read(src, pre + 8, lenbytes) != lenbytes)
    return effml__err(ctx, EFFML_E_FORMAT, "%s: truncated .npy: no header length", fn);
  *hlen = major == 1 ? (size_t)pre[8] | (size_t)pre[9] << 8
                     : (size_t)pre[8] | (size_t)pre[9] << 8 | (size_t)pre[10] << 16 |
                           (size_t)pre[11] << 24;
  if (*hlen > NPY_MAX_HEADER)
    return effml__err(ctx, EFFML_E_FORMAT,
                      "%s: .npy header_len=%zu exceeds the limit of %u bytes", fn, *hlen,
                      NPY_MAX_HEADER);
  return EFFML_OK;
}

/* The header dictionary (hlen bytes) parsed into *h and its descr mapped to *dtype.
 * From a buffer the header is parsed in place; from a file it is read first. */
static effml_status read_header(effml_context *ctx, const char *fn, npy_src *src, size_t hlen,
                                npy_header *h, int32_t *dtype) {
  const char *hdr;
  char *hbuf = NULL;
  if (src->len - src->pos < hlen)
    return effml__err(ctx, EFFML_E_FORMAT,
                      "%s: .npy header_len=%zu runs past the end of the %zu-byte input", fn,
                      hlen, src->len);
  if (src->f == NULL) {
    hdr = (const char *)src->buf + src->pos;
    src->pos += hlen;
  } else {
    hbuf = (char *)effml__alloc_or_err(ctx, hlen ? hlen : 1, "the .npy header");
    if (hbuf == NULL) return EFFML_E_NOMEM;
    if (src_read(src, hbuf, hlen) != hlen) {
      effml__free(ctx, hbuf);
      return effml__err(ctx, EFFML_E_FORMAT,
                        "%s: .npy header_len=%zu runs past the end of the file", fn, hlen);
    }
    hdr = hbuf;
  }
  effml_status st = parse_header(ctx, fn, hdr, hlen, h);
  if (st == EFFML_OK) st = map_descr(ctx, fn, h, dtype);
  effml__free(ctx, hbuf); /* h->descr is not used after this point */
  return st;
}

/* The shape of *h checked (rank, every dimension >= 1) and its payload size *nbytes
 * (elements of es bytes) without overflow. */
static effml_status payload_size(effml_context *ctx, const char *fn, const npy_header *h,
                                 size_t es, size_t *nbytes) {
  if (h->ndim > EFFML_TENSOR_MAX_DIMS)
    return effml__err(ctx, EFFML_E_UNSUPPORTED, "%s: .npy shape has %d dimensions (max %d)", fn,
                      h->ndim, EFFML_TENSOR_MAX_DIMS);
  if (h->shape_bad == 2)
    return effml__err(ctx, EFFML_E_OVERFLOW, "%s: .npy shape entry does not fit in int64", fn);
  for (int k = 0; k < h->ndim; ++k) {
    if (h->shape[k] < 1)
      return effml__err(ctx, EFFML_E_SHAPE,
                        "%s: .npy shape[%d]=%lld: libeffml tensors need every dimension >= 1",
                        fn, k, (long long)h->shape[k]);
  }
  *nbytes = es;
  for (int k = 0; k < h->ndim; ++k) {
    if ((uint64_t)h->shape[k] > SIZE_MAX || !effml__mul_size(*nbytes, (size_t)h->shape[k], nbytes) ||
        *nbytes > (size_t)INT64_MAX)
      return effml__err(ctx, EFFML_E_OVERFLOW,
                        "%s: .npy shape overflows the byte size (dimension %d = %lld)", fn, k,
                        (long long)h->shape[k]);
  }
  return EFFML_OK;
}

/* nbytes of payload into dst, in 64 MiB pieces, each after a progress report
 * (cancellation point). */
static effml_status read_payload(effml_context *ctx, const char *fn, npy_src *src, char *dst,
                                 size_t nbytes) {
  size_t got = 0;
  while (got < nbytes) {
    if (effml__progress(ctx, (int64_t)got, (int64_t)nbytes, "bytes") != EFFML_OK)
      return EFFML_E_CANCELLED;
    const size_t want = nbytes - got < ((size_t)1 << 26) ? nbytes - got : ((size_t)1 << 26);
    const size_t k = src_read(src, (unsigned char *)dst + got, want);
    got += k;
    if (k < want) break;
  }
  if (got != nbytes)
    return effml__err(ctx, EFFML_E_FORMAT,
                      "%s: truncated .npy: data has %zu bytes, shape needs %zu", fn, got, nbytes);
  return EFFML_OK;
}

/* Phases: preamble (read_preamble), header (read_header), shape and size (payload_size),
 * the payload (read_payload), reordered to C order when the file is Fortran-ordered. */
static effml_status load_src(effml_context *ctx, const char *fn, npy_src *src,
                             effml_tensor **out) {
  if (EFFML__HOST_BIG_ENDIAN)
    return effml__err(ctx, EFFML_E_UNSUPPORTED, "%s: big-endian hosts are not supported", fn);
  size_t hlen = 0;
  EFFML__TRY(read_preamble(ctx, fn, src, &hlen));
  npy_header h;
  int32_t dtype = 0;
  EFFML__TRY(read_header(ctx, fn, src, hlen, &h, &dtype));
  size_t es = effml_tensor_dtype_size(dtype), nbytes = 0;
  EFFML__TRY(payload_size(ctx, fn, &h, es, &nbytes));
  /* The input must hold the whole payload before anything is allocated. */
  if (src->len - src->pos < nbytes)
    return effml__err(ctx, EFFML_E_FORMAT,
                      "%s: truncated .npy: data has %zu bytes, shape needs %zu", fn,
                      src->len - src->pos, nbytes);
  effml_tensor *t = NULL;
  EFFML__TRY(effml_tensor_create(ctx, dtype, h.ndim, h.shape, &t));
  char *tmp = NULL;
  char *dst = t->data;
  if (h.fortran && h.ndim > 1) {
    tmp = (char *)effml__alloc_or_err(ctx, nbytes, "the Fortran-order .npy data");
    if (tmp == NULL) {
      effml_tensor_free(t);
      return EFFML_E_NOMEM;
    }
    dst = tmp;
  }
  effml_status st = read_payload(ctx, fn, src, dst, nbytes);
  if (st == EFFML_OK && tmp) fortran_to_c(t->data, tmp, t, es);
  effml__free(ctx, tmp);
  if (st != EFFML_OK) {
    effml_tensor_free(t);
    return st;
  }
  *out = t;
  return EFFML_OK;
}

effml_status effml_io_npy_load_buffer(effml_context *ctx, const void *buf, size_t len,
                                   effml_tensor **out) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, buf);
  EFFML__CHECK_NULL(ctx, out);
  npy_src src = {(const unsigned char *)buf, len, 0, NULL};
  return load_src(ctx, "effml_io_npy_load_buffer", &src, out);
}

effml_status effml_io_npy_load(effml_context *ctx, const char *path, effml_tensor **out) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, path);
  EFFML__CHECK_NULL(ctx, out);
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return effml__err(ctx, EFFML_E_IO, "effml_io_npy_load: cannot open '%s': %s", path,
                      strerror(errno));
  struct stat sb;
  if (fstat(fileno(f), &sb) != 0 || S_ISDIR(sb.st_mode)) {
    fclose(f);
    return effml__err(ctx, EFFML_E_IO, "effml_io_npy_load: '%s' is a directory or cannot be read",
                      path);
  }
  if ((uint64_t)sb.st_size > SIZE_MAX) {
    fclose(f);
    return effml__err(ctx, EFFML_E_OVERFLOW, "effml_io_npy_load: '%s' is too large", path);
  }
  npy_src src = {NULL, (size_t)sb.st_size, 0, f};
  effml_status st = load_src(ctx, "effml_io_npy_load", &src, out);
  if (st == EFFML_OK && ferror(f)) {
    effml_tensor_free(*out);
    st = effml__err(ctx, EFFML_E_IO, "effml_io_npy_load: read error on '%s'", path);
  }
  fclose(f);
  return st;
}

/* ---- saving ---- */

/* numpy's header text for `t`: dict keys sorted, repr() of the shape tuple,
 * then numpy >= 1.24's spare spaces so the growth axis can be rewritten in
 * place, then padding to a multiple of 64 and '\n' (format._wrap_header). */
static size_t format_header(char *buf, size_t cap, const effml_tensor *t, const char *descr,
                            int *major) {
  char shape[EFFML_TENSOR_MAX_DIMS * 24 + 4];
  size_t n = 0;
  n += (size_t)snprintf(shape + n, sizeof shape - n, "(");
  for (int k = 0; k < t->ndim; ++k)
    n += (size_t)snprintf(shape + n, sizeof shape - n, k ? ", %lld" : "%lld",
                          (long long)t->shape[k]);
  snprintf(shape + n, sizeof shape - n, t->ndim == 1 ? ",)" : ")");
  size_t len = (size_t)snprintf(buf, cap, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }",
                                descr, shape);
  if (t->ndim > 0) {
    char d0[24];
    int digits = snprintf(d0, sizeof d0, "%lld", (long long)t->shape[0]);
    for (int k = digits; k < 21; ++k) buf[len++] = ' ';
  }
  *major = 1;
  size_t pre = NPY_MAGIC_LEN + 2 + 2;
  if (len + 1 + NPY_ALIGN > 65535) {
    *major = 2;
    pre = NPY_MAGIC_LEN + 2 + 4;
  }
  size_t pad = NPY_ALIGN - (pre + len + 1) % NPY_ALIGN;
  for (size_t k = 0; k < pad; ++k) buf[len++] = ' ';
  buf[len++] = '\n';
  (void)cap;
  return len;
}

effml_status effml_io_npy_save(effml_context *ctx, const char *path, const effml_tensor *t) {
  EFFML__ENTER(ctx);
  static const char fn[] = "effml_io_npy_save";
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, path);
  EFFML__CHECK_NULL(ctx, t);
  if (EFFML__HOST_BIG_ENDIAN)
    return effml__err(ctx, EFFML_E_UNSUPPORTED, "%s: big-endian hosts are not supported", fn);
  const char *descr = descr_of(t->dtype);
  if (descr == NULL)
    return effml__err(ctx, EFFML_E_DTYPE, "%s: dtype %s has no .npy equivalent (convert it first)",
                      fn, effml_tensor_dtype_name(t->dtype));
  /* Worst case: 8 dims of 20 digits, 21 spare spaces, 64 padding. */
  char header[512];
  int major;
  size_t hlen = format_header(header, sizeof header, t, descr, &major);
  const effml_tensor *src = t;
  effml_tensor *copy = NULL;
  if (!effml_tensor_is_contiguous(t)) {
    EFFML__TRY(effml_tensor_contiguous(ctx, t, &copy));
    src = copy;
  }
  effml__afile af;
  effml_status st = effml__afile_open(ctx, &af, path, fn);
  if (st != EFFML_OK) {
    effml_tensor_free(copy);
    return st;
  }
  unsigned char pre[12];
  memcpy(pre, NPY_MAGIC, NPY_MAGIC_LEN);
  pre[6] = (unsigned char)major;
  pre[7] = 0;
  size_t npre = 10;
  pre[8] = (unsigned char)(hlen & 0xff);
  pre[9] = (unsigned char)((hlen >> 8) & 0xff);
  if (major == 2) {
    pre[10] = (unsigned char)((hlen >> 16) & 0xff);
    pre[11] = (unsigned char)((hlen >> 24) & 0xff);
    npre = 12;
  }
  effml__afile_write(&af, pre, npre);
  effml__afile_write(&af, header, hlen);
  effml__afile_write(&af, effml_tensor_data_const(src), effml_tensor_nbytes(src));
  effml_tensor_free(copy);
  return effml__afile_commit(ctx, &af, fn);
}
