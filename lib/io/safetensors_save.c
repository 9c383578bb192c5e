/*
 * safetensors writer (huggingface/safetensors `tensor.rs::prepare` and
 * `Metadata` serialisation): tensors sorted by dtype descending (the enum
 * order, i.e. alignment) then by name, packed contiguously from offset 0;
 * header JSON without spaces, `__metadata__` first (keys in byte order);
 * header padded with spaces to a multiple of 8.  Written to a temporary file
 * and renamed over the destination.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io_internal.h"

/* A string builder that only counts when buf is NULL (pass 1), then writes
 * into a buffer of exactly that size (pass 2). */
typedef struct jbuf {
  char *buf;
  size_t len;
} jbuf;

static void jput(jbuf *j, const char *s, size_t n) {
  if (j->buf) memcpy(j->buf + j->len, s, n);
  j->len += n;
}
static void jputs(jbuf *j, const char *s) { jput(j, s, strlen(s)); }
static void jputu(jbuf *j, uint64_t v) {
  char tmp[24];
  int n = snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v);
  jput(j, tmp, (size_t)n);
}
/* A JSON string as serde_json writes it: '"' '\\' escaped, control
 * characters as \b \f \n \r \t or \u00XX, everything else (UTF-8) raw. */
static void jputstr(jbuf *j, const char *s) {
  static const char hex[] = "0123456789abcdef";
  jput(j, "\"", 1);
  for (const unsigned char *p = (const unsigned char *)s; *p; ++p) {
    char e[6];
    switch (*p) {
      case '"': jput(j, "\\\"", 2); break;
      case '\\': jput(j, "\\\\", 2); break;
      case '\b': jput(j, "\\b", 2); break;
      case '\f': jput(j, "\\f", 2); break;
      case '\n': jput(j, "\\n", 2); break;
      case '\r': jput(j, "\\r", 2); break;
      case '\t': jput(j, "\\t", 2); break;
      default:
        if (*p < 0x20) {
          memcpy(e, "\\u00", 4);
          e[4] = hex[*p >> 4];
          e[5] = hex[*p & 15];
          jput(j, e, 6);
        } else {
          jput(j, (const char *)p, 1);
        }
    }
  }
  jput(j, "\"", 1);
}

typedef struct save_item {
  const char *name;
  const effml_tensor *t;
  int32_t rank;
  uint64_t begin, end;
} save_item;

static int cmp_items(const void *a, const void *b) {
  const save_item *x = (const save_item *)a, *y = (const save_item *)b;
  if (x->rank != y->rank) return x->rank > y->rank ? -1 : 1;
  return strcmp(x->name, y->name);
}
static int cmp_strp(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

typedef struct meta_pair {
  const char *key, *value;
} meta_pair;

static int cmp_pairs(const void *a, const void *b) {
  return strcmp(((const meta_pair *)a)->key, ((const meta_pair *)b)->key);
}

static void write_header(jbuf *j, const save_item *items, int64_t n, const meta_pair *meta,
                         int64_t n_meta) {
  jputs(j, "{");
  int first = 1;
  if (n_meta > 0) {
    jputs(j, "\"__metadata__\":{");
    for (int64_t m = 0; m < n_meta; ++m) {
      if (m) jputs(j, ",");
      jputstr(j, meta[m].key);
      jputs(j, ":");
      jputstr(j, meta[m].value);
    }
    jputs(j, "}");
    first = 0;
  }
  for (int64_t i = 0; i < n; ++i) {
    const save_item *it = &items[i];
    if (!first) jputs(j, ",");
    first = 0;
    jputstr(j, it->name);
    jputs(j, ":{\"dtype\":");
    jputstr(j, effml__st_dtype_of(it->t->dtype)->name);
    jputs(j, ",\"shape\":[");
    for (int32_t d = 0; d < it->t->ndim; ++d) {
      if (d) jputs(j, ",");
      jputu(j, (uint64_t)it->t->shape[d]);
    }
    jputs(j, "],\"data_offsets\":[");
    jputu(j, it->begin);
    jputs(j, ",");
    jputu(j, it->end);
    jputs(j, "]}");
  }
  jputs(j, "}");
}

static effml_status check_args(effml_context *ctx, const char *fn, int64_t n,
                               const char *const *names, const effml_tensor *const *tensors,
                               int64_t n_meta, const char *const *keys,
                               const char *const *values) {
  if (n < 0)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: n=%lld must be >= 0", fn, (long long)n);
  if (n_meta < 0)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: n_meta=%lld must be >= 0", fn,
                      (long long)n_meta);
  if (n > 0 && (names == NULL || tensors == NULL))
    return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: argument '%s' is NULL with n=%lld", fn,
                      names == NULL ? "names" : "tensors", (long long)n);
  if (n_meta > 0 && (keys == NULL || values == NULL))
    return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: argument '%s' is NULL with n_meta=%lld", fn,
                      keys == NULL ? "meta_keys" : "meta_values", (long long)n_meta);
  for (int64_t i = 0; i < n; ++i) {
    const char *nm = names[i];
    if (nm == NULL || nm[0] == '\0')
      return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: names[%lld] is %s", fn, (long long)i,
                        nm == NULL ? "NULL" : "empty");
    if (strcmp(nm, "__metadata__") == 0)
      return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: names[%lld]='__metadata__' is reserved",
                        fn, (long long)i);
    if (!effml__utf8_valid((const unsigned char *)nm, strlen(nm)))
      return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: names[%lld] is not valid UTF-8", fn,
                        (long long)i);
    const effml_tensor *t = tensors[i];
    if (t == NULL)
      return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: tensors[%lld] ('%s') is NULL", fn,
                        (long long)i, nm);
    if (effml__st_dtype_of(t->dtype) == NULL)
      return effml__err(ctx, EFFML_E_DTYPE, "%s: tensors[%lld] ('%s') has dtype %s, which "
                        "safetensors cannot store", fn, (long long)i, nm,
                        effml_tensor_dtype_name(t->dtype));
  }
  for (int64_t m = 0; m < n_meta; ++m) {
    const char *k = keys[m], *v = values[m];
    if (k == NULL || v == NULL)
      return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: meta_%s[%lld] is NULL", fn,
                        k == NULL ? "keys" : "values", (long long)m);
    if (!effml__utf8_valid((const unsigned char *)k, strlen(k)) ||
        !effml__utf8_valid((const unsigned char *)v, strlen(v)))
      return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: metadata entry %lld ('%s') is not valid "
                        "UTF-8", fn, (long long)m, k);
  }
  return EFFML_OK;
}

/* items[] from names/tensors in file order (dtype rank descending, then name), names
 * unique, each item's data_offsets assigned. */
static effml_status order_items(effml_context *ctx, const char *fn, int64_t n,
                                const char *const *names, const effml_tensor *const *tensors,
                                save_item *items) {
  for (int64_t i = 0; i < n; ++i) {
    items[i].name = names[i];
    items[i].t = tensors[i];
    items[i].rank = effml__st_dtype_of(tensors[i]->dtype)->rank;
  }
  if (n) qsort(items, (size_t)n, sizeof *items, cmp_items);
  for (int64_t i = 1; i < n; ++i)
    if (strcmp(items[i - 1].name, items[i].name) == 0 && items[i - 1].rank == items[i].rank)
      return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: duplicate tensor name '%s'", fn,
                        items[i].name);
  if (n > 1) { /* same name with different dtypes is not adjacent after the sort */
    effml_status rc = EFFML_OK;
    const char **tmp = (const char **)effml__calloc_or_err(ctx, (size_t)n, sizeof(char *), "names");
    if (tmp == NULL) return EFFML_E_NOMEM;
    for (int64_t i = 0; i < n; ++i) tmp[i] = names[i];
    qsort(tmp, (size_t)n, sizeof(char *), cmp_strp);
    for (int64_t i = 1; i < n && rc == EFFML_OK; ++i)
      if (strcmp(tmp[i - 1], tmp[i]) == 0)
        rc = effml__err(ctx, EFFML_E_INVALID_ARG, "%s: duplicate tensor name '%s'", fn, tmp[i]);
    effml__free(ctx, tmp);
    if (rc != EFFML_OK) return rc;
  }
  return EFFML_OK;
}

/* meta[] from the key/value arrays sorted by key, keys unique. */
static effml_status order_meta(effml_context *ctx, const char *fn, int64_t n_meta,
                               const char *const *keys, const char *const *values,
                               meta_pair *meta) {
  for (int64_t m = 0; m < n_meta; ++m) {
    meta[m].key = keys[m];
    meta[m].value = values[m];
  }
  if (n_meta) qsort(meta, (size_t)n_meta, sizeof *meta, cmp_pairs);
  for (int64_t m = 1; m < n_meta; ++m)
    if (strcmp(meta[m - 1].key, meta[m].key) == 0)
      return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: duplicate metadata key '%s'", fn,
                        meta[m].key);
  return EFFML_OK;
}

/* The 8-byte length and the JSON header padded with spaces to a multiple of 8 bytes
 * (*len = 8 + padded length); the items' data_offsets are assigned first. */
static effml_status make_header(effml_context *ctx, save_item *items, int64_t n,
                                const meta_pair *meta, int64_t n_meta, char **header,
                                size_t *len) {
  uint64_t off = 0;
  for (int64_t i = 0; i < n; ++i) {
    items[i].begin = off;
    off += (uint64_t)effml_tensor_nbytes(items[i].t);
    items[i].end = off;
  }
  jbuf j = {NULL, 0};
  write_header(&j, items, n, meta, n_meta); /* measures */
  size_t hlen = j.len + (8 - j.len % 8) % 8;
  *header = (char *)effml__alloc_or_err(ctx, hlen + 8, "the safetensors header");
  if (*header == NULL) return EFFML_E_NOMEM;
  effml__store_le64((unsigned char *)*header, (uint64_t)hlen);
  j.buf = *header + 8;
  j.len = 0;
  write_header(&j, items, n, meta, n_meta);
  memset(*header + 8 + j.len, ' ', hlen - j.len);
  *len = hlen + 8;
  return EFFML_OK;
}

/* The file written through a temporary (renamed on success, removed on failure): the
 * header, then each tensor's bytes in item order, with a progress report before each and a
 * last one (done == total) before the rename. */
static effml_status write_file(effml_context *ctx, const char *fn, const char *path,
                               const char *header, size_t len, const save_item *items,
                               int64_t n) {
  effml__afile af;
  EFFML__TRY(effml__afile_open(ctx, &af, path, fn));
  effml__afile_write(&af, header, len);
  effml_status rc = EFFML_OK;
  int64_t total = 0, done = 0; /* progress in bytes of tensor data, before each tensor */
  for (int64_t i = 0; i < n; ++i) total += (int64_t)effml_tensor_nbytes(items[i].t);
  for (int64_t i = 0; i < n && rc == EFFML_OK; ++i) {
    const effml_tensor *t = items[i].t;
    effml_tensor *copy = NULL;
    rc = effml__progress(ctx, done, total, "bytes");
    if (rc != EFFML_OK) break; /* the temporary file is removed below; path untouched */
    done += (int64_t)effml_tensor_nbytes(t);
    if (!effml_tensor_is_contiguous(t)) {
      rc = effml_tensor_contiguous(ctx, t, &copy);
      t = copy;
    }
    if (rc == EFFML_OK) effml__afile_write(&af, effml_tensor_data_const(t), effml_tensor_nbytes(t));
    effml_tensor_free(copy);
  }
  /* the last report, done == total, once every byte is handed over and before the rename: a stop
   * here still leaves `path` as it was */
  if (rc == EFFML_OK) rc = effml__progress(ctx, done, total, "bytes");
  if (rc != EFFML_OK) {
    effml__afile_abort(ctx, &af);
    return rc;
  }
  return effml__afile_commit(ctx, &af, fn);
}

/* Phases: arguments (check_args); the tensors and metadata ordered and checked for
 * duplicates (order_items, order_meta); the header (make_header); the file (write_file). */
effml_status effml_safetensors_save(effml_context *ctx, const char *path, int64_t n,
                                    const char *const *names, const effml_tensor *const *tensors,
                                    int64_t n_meta, const char *const *meta_keys,
                                    const char *const *meta_values) {
  EFFML__ENTER(ctx);
  static const char fn[] = "effml_safetensors_save";
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, path);
  if (EFFML__HOST_BIG_ENDIAN)
    return effml__err(ctx, EFFML_E_UNSUPPORTED, "%s: big-endian hosts are not supported", fn);
  EFFML__TRY(check_args(ctx, fn, n, names, tensors, n_meta, meta_keys, meta_values));
  if ((uint64_t)n > SIZE_MAX / sizeof(save_item) || (uint64_t)n_meta > SIZE_MAX / sizeof(int64_t))
    return effml__err(ctx, EFFML_E_OVERFLOW, "%s: n=%lld is too large", fn, (long long)n);
  save_item *items = n ? (save_item *)effml__calloc_or_err(ctx, (size_t)n, sizeof *items, "items")
                       : NULL;
  meta_pair *meta = n_meta ? (meta_pair *)effml__calloc_or_err(ctx, (size_t)n_meta, sizeof *meta,
                                                              "metadata")
                           : NULL;
  char *header = NULL;
  size_t len = 0;
  effml_status rc = EFFML_OK;
  if ((n && !items) || (n_meta && !meta)) rc = EFFML_E_NOMEM;
  if (rc == EFFML_OK) rc = order_items(ctx, fn, n, names, tensors, items);
  if (rc == EFFML_OK) rc = order_meta(ctx, fn, n_meta, meta_keys, meta_values, meta);
  if (rc == EFFML_OK) rc = make_header(ctx, items, n, meta, n_meta, &header, &len);
  if (rc == EFFML_OK) rc = write_file(ctx, fn, path, header, len, items, n);
  effml__free(ctx, header);
  effml__free(ctx, meta);
  effml__free(ctx, items);
  return rc;
}
