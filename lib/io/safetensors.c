/*
 * safetensors reader (huggingface/safetensors README "Format",
 * `safetensors/src/tensor.rs`: `read_metadata`, `Metadata::validate`).
 *
 * File: u64 LE header length N | N bytes of UTF-8 JSON | byte buffer.
 * The JSON is parsed by cJSON after our own checks (cJSON neither validates
 * UTF-8 nor refuses duplicate keys); every rule of the reference reader is
 * then enforced on the parsed entries before any tensor is made.  Note that
 * cJSON allocates its parse tree with malloc(), not through the context's
 * allocator; that tree is freed before the loader returns.
 *
 * Tensors borrow the byte buffer: a 64-byte aligned copy (COPY), or the
 * read-only mapping (MMAP).  A tensor whose offset is not a multiple of its
 * element size gets its own aligned copy.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "io_internal.h"

#define ST_MAX_HEADER 100000000u /* MAX_HEADER_SIZE */
#define ST_MAX_INT 9007199254740992.0 /* 2^53: integers exact in a double */

static const effml__st_dtype st_dtypes[] = {
    {"BOOL", EFFML_BOOL, 0, 8},      {"F4", 0, 1, 4},
    {"F6_E2M3", 0, 2, 6},            {"F6_E3M2", 0, 3, 6},
    {"U8", EFFML_U8, 4, 8},          {"I8", EFFML_I8, 5, 8},
    {"F8_E5M2", 0, 6, 8},            {"F8_E4M3", 0, 7, 8},
    {"F8_E8M0", 0, 8, 8},            {"F8_E4M3FNUZ", 0, 9, 8},
    {"F8_E5M2FNUZ", 0, 10, 8},       {"I16", EFFML_I16, 11, 16},
    {"U16", EFFML_U16, 12, 16},      {"F16", EFFML_F16, 13, 16},
    {"BF16", EFFML_BF16, 14, 16},    {"I32", EFFML_I32, 15, 32},
    {"U32", EFFML_U32, 16, 32},      {"F32", EFFML_F32, 17, 32},
    {"C64", 0, 18, 64},              {"F64", EFFML_F64, 19, 64},
    {"I64", EFFML_I64, 20, 64},      {"U64", EFFML_U64, 21, 64},
};
#define ST_NDTYPES (sizeof st_dtypes / sizeof st_dtypes[0])

const effml__st_dtype *effml__st_dtype_by_name(const char *s, size_t n) {
  for (size_t i = 0; i < ST_NDTYPES; ++i)
    if (strlen(st_dtypes[i].name) == n && memcmp(st_dtypes[i].name, s, n) == 0)
      return &st_dtypes[i];
  return NULL;
}

const effml__st_dtype *effml__st_dtype_of(int32_t dtype) {
  for (size_t i = 0; i < ST_NDTYPES; ++i)
    if (st_dtypes[i].dtype == dtype && dtype != 0) return &st_dtypes[i];
  return NULL;
}

typedef struct st_entry {
  const char *name; /* in the arena */
  int32_t dtype;
  int32_t ndim;
  int64_t shape[EFFML_TENSOR_MAX_DIMS];
  uint64_t begin, end;
} st_entry;

typedef struct st_meta {
  const char *key, *value; /* in the arena */
} st_meta;

struct effml_safetensors {
  effml_context *ctx;
  void *map;           /* MMAP: the mapping */
  size_t map_len;
  char *data;          /* COPY: the byte buffer (aligned) */
  char *arena;         /* names and metadata strings */
  int64_t n;
  st_entry *entries;   /* offset order */
  st_entry **by_name;  /* name order, for lookup */
  effml_tensor **tensors;
  int64_t n_meta;
  st_meta *meta;       /* key order */
};

void effml_safetensors_free(effml_safetensors *st) {
  if (st == NULL) return;
  effml_context *ctx = st->ctx;
  if (st->tensors)
    for (int64_t i = 0; i < st->n; ++i) effml_tensor_free(st->tensors[i]);
  effml__free(ctx, st->tensors);
  effml__free(ctx, st->by_name);
  effml__free(ctx, st->entries);
  effml__free(ctx, st->meta);
  effml__free(ctx, st->arena);
  effml__free(ctx, st->data);
  if (st->map) munmap(st->map, st->map_len);
  effml__free(ctx, st);
}

/* ---- header parsing ---- */

static int is_json_ws(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* A non-negative integer below 2^53.  The JSON parser reads numbers as doubles, so
 * from 2^53 on the value may already be rounded (2^53 + 1 reads as 2^53): those are
 * refused, never used rounded.  On failure `why` (if not NULL) says which rule failed. */
static int json_uint_why(const cJSON *v, uint64_t *out, char *why, size_t why_len) {
  if (!cJSON_IsNumber(v)) {
    if (why) snprintf(why, why_len, "is not a number");
    return 0;
  }
  double d = v->valuedouble;
  if (!(d >= 0.0)) {
    if (why) snprintf(why, why_len, "is negative (%.17g)", d);
    return 0;
  }
  if (!(d < ST_MAX_INT)) {
    if (why)
      snprintf(why, why_len,
               "is at least 2^53 = 9007199254740992 (read as %.17g): integers that large cannot "
               "be read exactly and are refused", d);
    return 0;
  }
  if (d != (double)(uint64_t)d) {
    if (why) snprintf(why, why_len, "is not an integer (%.17g)", d);
    return 0;
  }
  *out = (uint64_t)d;
  return 1;
}

static int cmp_offsets(const void *a, const void *b) {
  const st_entry *x = (const st_entry *)a, *y = (const st_entry *)b;
  if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
  if (x->end != y->end) return x->end < y->end ? -1 : 1;
  return strcmp(x->name, y->name);
}
static int cmp_entry_names(const void *a, const void *b) {
  return strcmp((*(st_entry *const *)a)->name, (*(st_entry *const *)b)->name);
}
static int cmp_meta(const void *a, const void *b) {
  return strcmp(((const st_meta *)a)->key, ((const st_meta *)b)->key);
}

static char *arena_put(char **cursor, const char *s) {
  size_t n = strlen(s) + 1;
  char *d = *cursor;
  memcpy(d, s, n);
  *cursor += n;
  return d;
}

/* One tensor entry {"dtype": ..., "shape": [...], "data_offsets": [b, e]}.
 * *too_many_dims is set (not an error here) when shape has > 8 entries. */
static effml_status parse_entry(effml_context *ctx, const char *fn, const cJSON *item,
                                st_entry *e, int *too_many_dims) {
  const char *name = item->string;
  if (!cJSON_IsObject(item))
    return effml__err(ctx, EFFML_E_FORMAT, "%s: entry '%s' is not a JSON object", fn, name);
  const cJSON *dtype = NULL, *shape = NULL, *offs = NULL;
  for (const cJSON *f = item->child; f != NULL; f = f->next) {
    const cJSON **slot = strcmp(f->string, "dtype") == 0          ? &dtype
                         : strcmp(f->string, "shape") == 0        ? &shape
                         : strcmp(f->string, "data_offsets") == 0 ? &offs
                                                                  : NULL;
    if (slot == NULL) continue; /* unknown fields are ignored, as serde does */
    if (*slot != NULL)
      return effml__err(ctx, EFFML_E_FORMAT, "%s: entry '%s' repeats the field '%s'", fn, name,
                        f->string);
    *slot = f;
  }
  if (dtype == NULL || shape == NULL || offs == NULL)
    return effml__err(ctx, EFFML_E_FORMAT, "%s: entry '%s' lacks the field '%s'", fn, name,
                      dtype == NULL ? "dtype" : shape == NULL ? "shape" : "data_offsets");
  if (!cJSON_IsString(dtype))
    return effml__err(ctx, EFFML_E_FORMAT, "%s: entry '%s': dtype is not a string", fn, name);
  const effml__st_dtype *d = effml__st_dtype_by_name(dtype->valuestring, strlen(dtype->valuestring));
  if (d == NULL)
    return effml__err(ctx, EFFML_E_DTYPE, "%s: entry '%s' has the unknown dtype '%.40s'", fn, name,
                      dtype->valuestring);
  if (d->dtype == 0)
    return effml__err(ctx, EFFML_E_DTYPE, "%s: entry '%s' has dtype '%s', which libeffml does not "
                      "support", fn, name, d->name);
  e->dtype = d->dtype;
  if (!cJSON_IsArray(shape))
    return effml__err(ctx, EFFML_E_FORMAT, "%s: entry '%s': shape is not an array", fn, name);
  int nd = 0;
  for (const cJSON *s = shape->child; s != NULL; s = s->next, ++nd) {
    uint64_t v;
    char why[160];
    if (!json_uint_why(s, &v, why, sizeof why))
      return effml__err(ctx, EFFML_E_FORMAT, "%s: entry '%s': shape[%d] %s", fn, name, nd, why);
    if (nd < EFFML_TENSOR_MAX_DIMS) e->shape[nd] = (int64_t)v;
    if (nd > 1000000) break;
  }
  *too_many_dims = nd > EFFML_TENSOR_MAX_DIMS;
  e->ndim = nd > EFFML_TENSOR_MAX_DIMS ? EFFML_TENSOR_MAX_DIMS : nd;
  uint64_t bo[2];
  int no = 0;
  char why[240] = "";
  if (cJSON_IsArray(offs))
    for (const cJSON *o = offs->child; o != NULL && no <= 2; o = o->next, ++no) {
      char tmp[160];
      if (no < 2 && !json_uint_why(o, &bo[no], tmp, sizeof tmp)) {
        snprintf(why, sizeof why, ": data_offsets[%d] %s", no, tmp);
        no = 3;
      }
    }
  if (no != 2)
    return effml__err(ctx, EFFML_E_FORMAT,
                      "%s: entry '%s': data_offsets must be [BEGIN, END] of two non-negative "
                      "integers below 2^53%s", fn, name, why);
  e->begin = bo[0];
  e->end = bo[1];
  return EFFML_OK;
}

/* Metadata: a map of strings (or null). */
static effml_status count_meta(effml_context *ctx, const char *fn, const cJSON *m, int64_t *n,
                               size_t *bytes) {
  *n = 0;
  if (cJSON_IsNull(m)) return EFFML_OK;
  if (!cJSON_IsObject(m))
    return effml__err(ctx, EFFML_E_FORMAT, "%s: __metadata__ is not a JSON object", fn);
  for (const cJSON *c = m->child; c != NULL; c = c->next) {
    if (!cJSON_IsString(c))
      return effml__err(ctx, EFFML_E_FORMAT, "%s: __metadata__['%s'] is not a string", fn,
                        c->string);
    *bytes += strlen(c->string) + strlen(c->valuestring) + 2;
    ++*n;
  }
  return EFFML_OK;
}

/* The header bytes as a cJSON tree: no NUL byte, valid UTF-8, an object. */
static effml_status header_json(effml_context *ctx, const char *fn, const unsigned char *hdr,
                                size_t hlen, cJSON **root) {
  *root = NULL;
  if (memchr(hdr, '\0', hlen) != NULL)
    return effml__err(ctx, EFFML_E_FORMAT, "%s: header contains a NUL byte", fn);
  if (!effml__utf8_valid(hdr, hlen))
    return effml__err(ctx, EFFML_E_FORMAT, "%s: header is not valid UTF-8", fn);
  size_t i = 0;
  while (i < hlen && is_json_ws(hdr[i])) ++i;
  if (i == hlen || hdr[i] != '{')
    return effml__err(ctx, EFFML_E_FORMAT, "%s: header is not a JSON object (starts with '%c')",
                      fn, i == hlen ? ' ' : (char)hdr[i]);
  char *text = (char *)effml__alloc_or_err(ctx, hlen + 1, "the safetensors header");
  if (text == NULL) return EFFML_E_NOMEM;
  memcpy(text, hdr, hlen);
  text[hlen] = '\0';
  const char *end = NULL;
  *root = cJSON_ParseWithOpts(text, &end, 1);
  if (*root == NULL) {
    size_t at = end ? (size_t)(end - text) : 0;
    effml__free(ctx, text);
    return effml__err(ctx, EFFML_E_FORMAT, "%s: header is not valid JSON (error near byte %zu)",
                      fn, at);
  }
  effml__free(ctx, text);
  if (!cJSON_IsObject(*root))
    return effml__err(ctx, EFFML_E_FORMAT, "%s: header is not a JSON object", fn);
  return EFFML_OK;
}

/* Count the tensors and metadata pairs of `root` and allocate st's tables and name
 * arena for them; *meta is the __metadata__ item (NULL when absent). */
static effml_status alloc_tables(effml_context *ctx, const char *fn, const cJSON *root,
                                 effml_safetensors *st, const cJSON **meta, int64_t *n,
                                 int64_t *n_meta) {
  effml_status rc;
  size_t bytes = 0;
  *meta = NULL;
  *n = *n_meta = 0;
  for (const cJSON *c = root->child; c != NULL; c = c->next) {
    if (strcmp(c->string, "__metadata__") == 0) {
      if (*meta != NULL) return effml__err(ctx, EFFML_E_FORMAT, "%s: duplicate key '__metadata__'", fn);
      *meta = c;
      if ((rc = count_meta(ctx, fn, c, n_meta, &bytes)) != EFFML_OK) return rc;
    } else {
      bytes += strlen(c->string) + 1;
      ++*n;
    }
  }
  st->entries = *n ? (st_entry *)effml__calloc_or_err(ctx, (size_t)*n, sizeof(st_entry), "entries")
                   : NULL;
  st->by_name = *n ? (st_entry **)effml__calloc_or_err(ctx, (size_t)*n, sizeof(st_entry *), "names")
                   : NULL;
  st->meta = *n_meta ? (st_meta *)effml__calloc_or_err(ctx, (size_t)*n_meta, sizeof(st_meta),
                                                       "metadata")
                     : NULL;
  st->arena = bytes ? (char *)effml__alloc_or_err(ctx, bytes, "names") : NULL;
  if ((*n && (!st->entries || !st->by_name)) || (*n_meta && !st->meta) || (bytes && !st->arena))
    return EFFML_E_NOMEM;
  return EFFML_OK;
}

/* Fill the tables alloc_tables made: parse each entry, copy the metadata, sort
 * both and refuse duplicate names/keys and tensors of more than 8 dimensions. */
static effml_status fill_tables(effml_context *ctx, const char *fn, const cJSON *root,
                                const cJSON *meta, int64_t n, int64_t n_meta,
                                effml_safetensors *st) {
  effml_status rc;
  char *cur = st->arena;
  int64_t k = 0;
  int too_many_dims = 0;
  for (const cJSON *c = root->child; c != NULL; c = c->next) {
    if (c == meta) continue;
    st_entry *e = &st->entries[k++];
    e->name = arena_put(&cur, c->string);
    int many = 0;
    if ((rc = parse_entry(ctx, fn, c, e, &many)) != EFFML_OK) return rc;
    if (many && !too_many_dims) too_many_dims = 1;
  }
  if (n_meta) {
    int64_t m = 0;
    for (const cJSON *c = meta->child; c != NULL; c = c->next, ++m) {
      st->meta[m].key = arena_put(&cur, c->string);
      st->meta[m].value = arena_put(&cur, c->valuestring);
    }
    qsort(st->meta, (size_t)n_meta, sizeof(st_meta), cmp_meta);
    for (m = 1; m < n_meta; ++m)
      if (strcmp(st->meta[m - 1].key, st->meta[m].key) == 0)
        return effml__err(ctx, EFFML_E_FORMAT, "%s: duplicate __metadata__ key '%s'", fn,
                          st->meta[m].key);
  }
  st->n = n;
  st->n_meta = n_meta;
  if (n) qsort(st->entries, (size_t)n, sizeof(st_entry), cmp_offsets);
  for (k = 0; k < n; ++k) st->by_name[k] = &st->entries[k];
  if (n) qsort(st->by_name, (size_t)n, sizeof(st_entry *), cmp_entry_names);
  for (k = 1; k < n; ++k)
    if (strcmp(st->by_name[k - 1]->name, st->by_name[k]->name) == 0)
      return effml__err(ctx, EFFML_E_FORMAT, "%s: duplicate tensor name '%s'", fn,
                        st->by_name[k]->name);
  if (too_many_dims)
    return effml__err(ctx, EFFML_E_UNSUPPORTED, "%s: a tensor has more than %d dimensions", fn,
                      EFFML_TENSOR_MAX_DIMS);
  return EFFML_OK;
}

/* Metadata::validate: the entries (in offset order) are contiguous from 0, each
 * holds dtype x shape bytes, the last ends at data_len; no dimension is 0. */
static effml_status check_layout(effml_context *ctx, const char *fn, const effml_safetensors *st,
                                 uint64_t data_len) {
  uint64_t expect = 0;
  for (int64_t k = 0; k < st->n; ++k) {
    const st_entry *e = &st->entries[k];
    if (e->end < e->begin)
      return effml__err(ctx, EFFML_E_FORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] end "
                        "before they begin", fn, e->name, (unsigned long long)e->begin,
                        (unsigned long long)e->end);
    if (e->begin != expect)
      return effml__err(ctx, EFFML_E_FORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] %s "
                        "(expected BEGIN = %llu)", fn, e->name, (unsigned long long)e->begin,
                        (unsigned long long)e->end,
                        e->begin < expect ? "overlap the previous tensor" : "leave a gap",
                        (unsigned long long)expect);
    const effml__st_dtype *d = effml__st_dtype_of(e->dtype);
    uint64_t bits = (uint64_t)d->bits;
    int ovf = 0;
    for (int32_t j = 0; j < e->ndim; ++j) {
      uint64_t s = (uint64_t)e->shape[j];
      if (s != 0 && bits > UINT64_MAX / s) ovf = 1;
      else bits *= s;
    }
    if (ovf || bits / 8 != e->end - e->begin)
      return effml__err(ctx, EFFML_E_FORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] hold "
                        "%llu bytes, but dtype %s x shape needs %s%llu", fn, e->name,
                        (unsigned long long)e->begin, (unsigned long long)e->end,
                        (unsigned long long)(e->end - e->begin), d->name, ovf ? "more than " : "",
                        (unsigned long long)(ovf ? UINT64_MAX / 8 : bits / 8));
    if (e->end > data_len)
      return effml__err(ctx, EFFML_E_FORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] run "
                        "past the end of the %llu-byte buffer", fn, e->name,
                        (unsigned long long)e->begin, (unsigned long long)e->end,
                        (unsigned long long)data_len);
    expect = e->end;
  }
  if (expect != data_len)
    return effml__err(ctx, EFFML_E_FORMAT, "%s: the tensors cover %llu bytes but the buffer after "
                      "the header has %llu (8 + N + last END must equal the file length)", fn,
                      (unsigned long long)expect, (unsigned long long)data_len);
  for (int64_t k = 0; k < st->n; ++k)
    for (int32_t j = 0; j < st->entries[k].ndim; ++j)
      if (st->entries[k].shape[j] == 0)
        return effml__err(ctx, EFFML_E_SHAPE, "%s: tensor '%s' has shape[%d] = 0: libeffml "
                          "tensors need every dimension >= 1", fn, st->entries[k].name, (int)j);
  return EFFML_OK;
}

/* Parse and validate the header; fills st->entries, st->by_name, st->meta.
 * data_len is the byte-buffer length (file length - 8 - N).  Phases: the JSON
 * tree, the tables sized, the tables filled and sorted, the byte layout checked. */
static effml_status parse_header(effml_context *ctx, const char *fn, const unsigned char *hdr,
                                 size_t hlen, uint64_t data_len, effml_safetensors *st) {
  cJSON *root = NULL;
  const cJSON *meta = NULL;
  int64_t n = 0, n_meta = 0;
  effml_status rc = header_json(ctx, fn, hdr, hlen, &root);
  if (rc == EFFML_OK) rc = alloc_tables(ctx, fn, root, st, &meta, &n, &n_meta);
  if (rc == EFFML_OK) rc = fill_tables(ctx, fn, root, meta, n, n_meta, st);
  if (rc == EFFML_OK) rc = check_layout(ctx, fn, st, data_len);
  cJSON_Delete(root);
  return rc;
}

static int read_full(int fd, void *dst, size_t n);

/* Make the borrowed tensors over `data`; with `report`, a progress report (bytes of
 * the data section) before the first and after each tensor (a mapped file has no
 * read pass that would report). */
static effml_status attach(effml_context *ctx, effml_safetensors *st, char *data, size_t data_len,
                           int read_only, int report) {
  if (report) EFFML__TRY(effml__progress(ctx, 0, (int64_t)data_len, "bytes"));
  if (st->n == 0) return EFFML_OK;
  st->tensors = (effml_tensor **)effml__calloc_or_err(ctx, (size_t)st->n, sizeof(effml_tensor *),
                                                      "tensor handles");
  if (st->tensors == NULL) return EFFML_E_NOMEM;
  for (int64_t k = 0; k < st->n; ++k) {
    const st_entry *e = &st->entries[k];
    char *p = data + e->begin;
    size_t es = effml_tensor_dtype_size(e->dtype);
    size_t nb = (size_t)(e->end - e->begin);
    effml_status rc;
    if ((uintptr_t)p % es == 0) {
      rc = effml_tensor_wrap(ctx, e->dtype, e->ndim, e->shape, NULL, p, nb, read_only,
                             &st->tensors[k]);
    } else {
      rc = effml_tensor_create(ctx, e->dtype, e->ndim, e->shape, &st->tensors[k]);
      if (rc == EFFML_OK) {
        memcpy(st->tensors[k]->data, p, nb);
        st->tensors[k]->read_only = read_only;
      }
    }
    if (rc != EFFML_OK) return rc;
    if (report) EFFML__TRY(effml__progress(ctx, (int64_t)e->end, (int64_t)data_len, "bytes"));
  }
  return EFFML_OK;
}

/* Copy or read `n` bytes in 64 MiB pieces, each after a progress report in bytes
 * (a cancellation point), and a last report of n of n once all are in: from `src`
 * when it is not NULL, else from `fd`.
 * EFFML_E_CANCELLED, EFFML_E_IO (a short read; message names `path`) or EFFML_OK. */
static effml_status fill_data(effml_context *ctx, const char *fn, const char *path, char *dst,
                              const unsigned char *src, int fd, size_t n) {
  const size_t piece = (size_t)1 << 26;
  for (size_t got = 0; got < n;) {
    EFFML__TRY(effml__progress(ctx, (int64_t)got, (int64_t)n, "bytes"));
    const size_t want = n - got < piece ? n - got : piece;
    if (src) memcpy(dst + got, src + got, want);
    else if (!read_full(fd, dst + got, want))
      return effml__err(ctx, EFFML_E_IO, "%s: cannot read the data of '%s'", fn, path);
    got += want;
  }
  return effml__progress(ctx, (int64_t)n, (int64_t)n, "bytes"); /* done == total */
}

static effml_status new_object(effml_context *ctx, effml_safetensors **st) {
  *st = (effml_safetensors *)effml__calloc_or_err(ctx, 1, sizeof **st, "effml_safetensors");
  if (*st == NULL) return EFFML_E_NOMEM;
  (*st)->ctx = ctx;
  return EFFML_OK;
}

/* Size checks on the first 8 bytes; *hlen receives N. */
static effml_status check_prefix(effml_context *ctx, const char *fn, const unsigned char *p,
                                 uint64_t len, uint64_t *hlen) {
  if (len < 8)
    return effml__err(ctx, EFFML_E_FORMAT, "%s: %llu bytes is too small for a safetensors file "
                      "(header length takes 8)", fn, (unsigned long long)len);
  uint64_t n = effml__load_le64(p);
  if (n > ST_MAX_HEADER)
    return effml__err(ctx, EFFML_E_FORMAT, "%s: header length N=%llu exceeds the limit of %u "
                      "bytes", fn, (unsigned long long)n, ST_MAX_HEADER);
  if (n > len - 8)
    return effml__err(ctx, EFFML_E_FORMAT, "%s: header length N=%llu runs past the end of the "
                      "%llu-byte file", fn, (unsigned long long)n, (unsigned long long)len);
  *hlen = n;
  return EFFML_OK;
}

effml_status effml_safetensors_load_buffer(effml_context *ctx, const void *buf, size_t len,
                                           effml_safetensors **out) {
  EFFML__ENTER(ctx);
  static const char fn[] = "effml_safetensors_load_buffer";
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, buf);
  EFFML__CHECK_NULL(ctx, out);
  if (EFFML__HOST_BIG_ENDIAN)
    return effml__err(ctx, EFFML_E_UNSUPPORTED, "%s: big-endian hosts are not supported", fn);
  const unsigned char *b = (const unsigned char *)buf;
  uint64_t hlen;
  EFFML__TRY(check_prefix(ctx, fn, b, len, &hlen));
  size_t data_len = len - 8 - (size_t)hlen;
  effml_safetensors *st;
  EFFML__TRY(new_object(ctx, &st));
  effml_status rc = parse_header(ctx, fn, b + 8, (size_t)hlen, data_len, st);
  if (rc == EFFML_OK && data_len > 0) {
    st->data = (char *)effml__alloc_or_err(ctx, data_len, "the safetensors byte buffer");
    if (st->data == NULL) rc = EFFML_E_NOMEM;
    else rc = fill_data(ctx, fn, "the buffer", st->data, b + 8 + hlen, -1, data_len);
  }
  if (rc == EFFML_OK) rc = attach(ctx, st, st->data, data_len, 0, 0);
  if (rc != EFFML_OK) {
    effml_safetensors_free(st);
    return rc;
  }
  *out = st;
  return EFFML_OK;
}

static int read_full(int fd, void *dst, size_t n) {
  char *p = (char *)dst;
  while (n > 0) {
    ssize_t r = read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return 0;
    p += r;
    n -= (size_t)r;
  }
  return 1;
}

effml_status effml_safetensors_load(effml_context *ctx, const char *path, uint32_t flags,
                                    effml_safetensors **out) {
  EFFML__ENTER(ctx);
  static const char fn[] = "effml_safetensors_load";
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, path);
  EFFML__CHECK_NULL(ctx, out);
  if (flags != EFFML_IO_SAFETENSORS_COPY && flags != EFFML_IO_SAFETENSORS_MMAP)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: flags=%u is not EFFML_IO_SAFETENSORS_COPY or "
                      "EFFML_IO_SAFETENSORS_MMAP", fn, (unsigned)flags);
  if (EFFML__HOST_BIG_ENDIAN)
    return effml__err(ctx, EFFML_E_UNSUPPORTED, "%s: big-endian hosts are not supported", fn);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return effml__err(ctx, EFFML_E_IO, "%s: cannot open '%s': %s", fn, path, strerror(errno));
  struct stat sb;
  if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
    int e = errno;
    close(fd);
    return effml__err(ctx, EFFML_E_IO, "%s: '%s' is not a readable regular file%s%s", fn, path,
                      e ? ": " : "", e ? strerror(e) : "");
  }
  uint64_t len = (uint64_t)sb.st_size;
  unsigned char pre[8];
  uint64_t hlen = 0;
  effml_status rc = EFFML_OK;
  if (len >= 8 && !read_full(fd, pre, 8)) rc = effml__err(ctx, EFFML_E_IO, "%s: cannot read '%s'", fn, path);
  if (rc == EFFML_OK) rc = check_prefix(ctx, fn, pre, len, &hlen);
  if (rc == EFFML_OK && len > SIZE_MAX)
    rc = effml__err(ctx, EFFML_E_OVERFLOW, "%s: '%s' is larger than the address space", fn, path);
  effml_safetensors *st = NULL;
  if (rc == EFFML_OK) rc = new_object(ctx, &st);
  if (rc != EFFML_OK) {
    close(fd);
    return rc;
  }
  size_t data_len = (size_t)(len - 8 - hlen);
  if (flags == EFFML_IO_SAFETENSORS_MMAP) {
    void *m = mmap(NULL, (size_t)len, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) {
      rc = effml__err(ctx, EFFML_E_IO, "%s: cannot map '%s': %s", fn, path, strerror(errno));
    } else {
      st->map = m;
      st->map_len = (size_t)len;
      const unsigned char *b = (const unsigned char *)m;
      rc = parse_header(ctx, fn, b + 8, (size_t)hlen, data_len, st);
      if (rc == EFFML_OK) rc = attach(ctx, st, (char *)m + 8 + hlen, data_len, 1, 1);
    }
  } else {
    unsigned char *hdr = (unsigned char *)effml__alloc_or_err(ctx, hlen ? (size_t)hlen : 1,
                                                              "the safetensors header");
    if (hdr == NULL) rc = EFFML_E_NOMEM;
    else if (!read_full(fd, hdr, (size_t)hlen))
      rc = effml__err(ctx, EFFML_E_IO, "%s: cannot read the header of '%s'", fn, path);
    if (rc == EFFML_OK) rc = parse_header(ctx, fn, hdr, (size_t)hlen, data_len, st);
    effml__free(ctx, hdr);
    if (rc == EFFML_OK && data_len > 0) {
      st->data = (char *)effml__alloc_or_err(ctx, data_len, "the safetensors byte buffer");
      if (st->data == NULL) rc = EFFML_E_NOMEM;
      else rc = fill_data(ctx, fn, path, st->data, NULL, fd, data_len);
    }
    if (rc == EFFML_OK) rc = attach(ctx, st, st->data, data_len, 0, 0);
  }
  close(fd);
  if (rc != EFFML_OK) {
    effml_safetensors_free(st);
    return rc;
  }
  *out = st;
  return EFFML_OK;
}

/* ---- accessors ---- */

int64_t effml_safetensors_count(const effml_safetensors *st) { return st ? st->n : 0; }

const char *effml_safetensors_name(const effml_safetensors *st, int64_t i) {
  if (st == NULL || i < 0 || i >= st->n) return NULL;
  return st->entries[i].name;
}

effml_status effml_safetensors_get(effml_context *ctx, const effml_safetensors *st,
                                   const char *name, const effml_tensor **out) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, st);
  EFFML__CHECK_NULL(ctx, name);
  EFFML__CHECK_NULL(ctx, out);
  int64_t lo = 0, hi = st->n;
  while (lo < hi) {
    int64_t mid = lo + (hi - lo) / 2;
    int c = strcmp(st->by_name[mid]->name, name);
    if (c == 0) {
      *out = st->tensors[st->by_name[mid] - st->entries];
      return EFFML_OK;
    }
    if (c < 0) lo = mid + 1;
    else hi = mid;
  }
  return effml__err(ctx, EFFML_E_NOT_FOUND, "effml_safetensors_get: no tensor named '%s'", name);
}

const char *effml_safetensors_metadata(const effml_safetensors *st, const char *key) {
  if (st == NULL || key == NULL) return NULL;
  int64_t lo = 0, hi = st->n_meta;
  while (lo < hi) {
    int64_t mid = lo + (hi - lo) / 2;
    int c = strcmp(st->meta[mid].key, key);
    if (c == 0) return st->meta[mid].value;
    if (c < 0) lo = mid + 1;
    else hi = mid;
  }
  return NULL;
}

int64_t effml_safetensors_metadata_count(const effml_safetensors *st) {
  return st ? st->n_meta : 0;
}

const char *effml_safetensors_metadata_key(const effml_safetensors *st, int64_t i) {
  if (st == NULL || i < 0 || i >= st->n_meta) return NULL;
  return st->meta[i].key;
}
