/* IDX files (LeCun et al., the MNIST distribution format) and Fashion-MNIST.
 *
 * Layout: bytes 0-1 zero, byte 2 the element type, byte 3 the number of
 * dimensions d, then d big-endian u32 sizes, then the elements in row-major
 * order, big-endian.  zlib's gzread reads gzipped and raw files alike. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "../tensor/tensor_internal.h"

#define FMNIST_DEFAULT_DIR "/usr/share/datasets/fashion-mnist"

static int idx_dtype(int code, int32_t *dtype) {
  switch (code) {
    case 0x08: *dtype = EFFML_U8; return 1;
    case 0x09: *dtype = EFFML_I8; return 1;
    case 0x0B: *dtype = EFFML_I16; return 1;
    case 0x0C: *dtype = EFFML_I32; return 1;
    case 0x0D: *dtype = EFFML_F32; return 1;
    case 0x0E: *dtype = EFFML_F64; return 1;
    default: return 0;
  }
}

/* Read exactly len bytes; 0 on success, -1 on a read error, 1 when short, 2 when the
 * context's progress callback or cancel flag stopped it (between 16 MiB chunks). */
static int read_all(effml_context *ctx, gzFile gz, void *buf, size_t len) {
  unsigned char *p = (unsigned char *)buf;
  const size_t total = len;
  while (len > 0) {
    if (effml__progress(ctx, (int64_t)(total - len), (int64_t)total, "bytes") != EFFML_OK) return 2;
    unsigned chunk = len > (1u << 24) ? (1u << 24) : (unsigned)len;
    int got = gzread(gz, p, chunk);
    if (got < 0) return -1;
    if (got == 0) return 1;
    p += got;
    len -= (size_t)got;
  }
  return 0;
}

static effml_status idx_read(effml_context *ctx, const char *path, gzFile gz, effml_tensor **out) {
  unsigned char head[4];
  int rc = read_all(ctx, gz, head, 4);
  if (rc == 2) return EFFML_E_CANCELLED;
  if (rc != 0 || head[0] != 0 || head[1] != 0)
    return effml__err(ctx, EFFML_E_FORMAT, "effml_data_idx_load: '%s' does not start with the IDX magic 00 00", path);
  int32_t dtype;
  if (!idx_dtype(head[2], &dtype))
    return effml__err(ctx, EFFML_E_FORMAT, "effml_data_idx_load: '%s' has unknown element type 0x%02X", path, head[2]);
  const int32_t ndim = head[3];
  if (ndim < 1 || ndim > EFFML_TENSOR_MAX_DIMS)
    return effml__err(ctx, EFFML_E_FORMAT, "effml_data_idx_load: '%s' has %d dimensions (need 1..%d)", path,
                      (int)ndim, EFFML_TENSOR_MAX_DIMS);
  unsigned char dims[4 * EFFML_TENSOR_MAX_DIMS];
  rc = read_all(ctx, gz, dims, (size_t)ndim * 4);
  if (rc == 2) return EFFML_E_CANCELLED;
  if (rc != 0)
    return effml__err(ctx, EFFML_E_FORMAT, "effml_data_idx_load: '%s' is truncated in its dimensions", path);
  int64_t shape[EFFML_TENSOR_MAX_DIMS];
  for (int32_t k = 0; k < ndim; ++k) {
    const unsigned char *d = dims + 4 * k;
    shape[k] = ((int64_t)d[0] << 24) | ((int64_t)d[1] << 16) | ((int64_t)d[2] << 8) | d[3];
    if (shape[k] == 0)
      return effml__err(ctx, EFFML_E_FORMAT, "effml_data_idx_load: '%s' has a zero size in dimension %d", path, (int)k);
  }
  const size_t es = effml_tensor_dtype_size(dtype);
  size_t want = es;
  for (int32_t k = 0; k < ndim; ++k)
    if (!effml__mul_size(want, (size_t)shape[k], &want))
      return effml__err(ctx, EFFML_E_OVERFLOW, "effml_data_idx_load: '%s': the data size overflows",
                        path);
  /* Never allocate what the header claims before the file shows it has it: a raw file's
   * size is known; a gzip stream larger than IDX_DIRECT is read in growing chunks. */
  if (gzdirect(gz)) {
    struct stat sb;
    const uint64_t head_bytes = 4 + 4 * (uint64_t)ndim;
    if (stat(path, &sb) == 0 && (uint64_t)sb.st_size != head_bytes + want)
      return effml__err(ctx, EFFML_E_FORMAT,
                        "effml_data_idx_load: '%s' %s: it has %llu bytes but its header declares "
                        "%llu (%llu header + %zu data bytes)", path,
                        (uint64_t)sb.st_size < head_bytes + want ? "is truncated"
                                                                 : "has bytes after the data",
                        (unsigned long long)sb.st_size, (unsigned long long)(head_bytes + want),
                        (unsigned long long)head_bytes, want);
  }
  enum { IDX_DIRECT = 1 << 26 }; /* 64 MiB */
  unsigned char *stage = NULL;
  size_t have = 0;
  rc = 0;
  if (!gzdirect(gz) && want > IDX_DIRECT) {
    size_t cap = 0;
    while (rc == 0 && have < want) {
      size_t next = cap ? (cap > want / 2 ? want : 2 * cap) : IDX_DIRECT;
      unsigned char *grown = (unsigned char *)effml__malloc(ctx, next);
      if (!grown) {
        effml__free(ctx, stage);
        return effml__err(ctx, EFFML_E_NOMEM, "effml_data_idx_load: '%s': out of memory", path);
      }
      if (have) memcpy(grown, stage, have);
      effml__free(ctx, stage);
      stage = grown;
      cap = next;
      rc = read_all(ctx, gz, stage + have, cap - have);
      if (rc == 0) have = cap;
    }
  }
  effml_tensor *t = NULL;
  effml_status cst = rc == 0 ? effml_tensor_create(ctx, dtype, ndim, shape, &t) : EFFML_OK;
  if (cst != EFFML_OK) {
    effml__free(ctx, stage);
    return cst;
  }
  const size_t nbytes = want;
  unsigned char *p = t ? (unsigned char *)t->data : NULL;
  if (rc == 0 && stage) {
    memcpy(p, stage, nbytes);
  } else if (rc == 0) {
    rc = read_all(ctx, gz, p, nbytes);
  }
  effml__free(ctx, stage);
  if (rc == 2) {
    effml_tensor_free(t);
    return EFFML_E_CANCELLED; /* message set by effml__progress */
  }
  if (rc != 0) {
    effml_tensor_free(t);
    int zerr = 0;
    const char *msg = gzerror(gz, &zerr);
    return effml__err(ctx, EFFML_E_FORMAT, "effml_data_idx_load: '%s' is truncated: fewer than %zu data bytes (%s)",
                      path, nbytes, zerr ? msg : "end of file");
  }
  unsigned char extra;
  if (gzread(gz, &extra, 1) != 0) {
    effml_tensor_free(t);
    return effml__err(ctx, EFFML_E_FORMAT, "effml_data_idx_load: '%s' has bytes after the %zu data bytes", path, nbytes);
  }
  /* Big-endian to host order, byte by byte (no assumption about the host). */
  if (es > 1) {
    const uint16_t probe = 1;
    const int little = *(const unsigned char *)&probe == 1;
    if (little)
      for (size_t i = 0; i < nbytes; i += es)
        for (size_t a = 0, b = es - 1; a < b; ++a, --b) {
          unsigned char tmp = p[i + a];
          p[i + a] = p[i + b];
          p[i + b] = tmp;
        }
  }
  *out = t;
  return EFFML_OK;
}

effml_status effml_data_idx_load(effml_context *ctx, const char *path, effml_tensor **out) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, path);
  EFFML__CHECK_NULL(ctx, out);
  if (access(path, F_OK) != 0)
    return effml__err(ctx, EFFML_E_NOT_FOUND, "effml_data_idx_load: no file '%s'", path);
  gzFile gz = gzopen(path, "rb");
  if (!gz)
    return effml__err(ctx, EFFML_E_IO, "effml_data_idx_load: cannot open '%s': %s", path, strerror(errno));
  effml_status st = idx_read(ctx, path, gz, out);
  gzclose(gz);
  return st;
}

/* dir/name.gz, else dir/name; "" if neither exists. */
static void find_file(const char *dir, const char *name, char *buf, size_t len) {
  snprintf(buf, len, "%s/%s.gz", dir, name);
  if (access(buf, F_OK) == 0) return;
  snprintf(buf, len, "%s/%s", dir, name);
  if (access(buf, F_OK) == 0) return;
  buf[0] = '\0';
}

effml_status effml_data_fashion_mnist_load(effml_context *ctx, const char *dir, int32_t split,
                                      effml_tensor **images, effml_tensor **labels) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, images);
  EFFML__CHECK_NULL(ctx, labels);
  if (split != EFFML_DATA_SPLIT_TRAIN && split != EFFML_DATA_SPLIT_TEST)
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "effml_data_fashion_mnist_load: split=%d must be EFFML_DATA_SPLIT_TRAIN (0) or EFFML_DATA_SPLIT_TEST (1)",
                      (int)split);
  if (!dir) dir = FMNIST_DEFAULT_DIR;
  const char *stem = split == EFFML_DATA_SPLIT_TRAIN ? "train" : "t10k";
  char name[64], ipath[4096], lpath[4096];
  snprintf(name, sizeof name, "%s-images-idx3-ubyte", stem);
  find_file(dir, name, ipath, sizeof ipath);
  snprintf(name, sizeof name, "%s-labels-idx1-ubyte", stem);
  find_file(dir, name, lpath, sizeof lpath);
  if (!ipath[0] || !lpath[0])
    return effml__err(ctx, EFFML_E_NOT_FOUND,
                      "effml_data_fashion_mnist_load: %s-%s-idx%d-ubyte(.gz) not found in '%s'; install "
                      "the Debian package dataset-fashion-mnist (apt install dataset-fashion-mnist) "
                      "or pass the directory holding the IDX files",
                      stem, ipath[0] ? "labels" : "images", ipath[0] ? 1 : 3, dir);
  effml_tensor *raw_img = NULL, *raw_lab = NULL, *img = NULL, *lab = NULL;
  effml_status st = effml_data_idx_load(ctx, ipath, &raw_img);
  if (st == EFFML_OK) st = effml_data_idx_load(ctx, lpath, &raw_lab);
  if (st == EFFML_OK &&
      (raw_img->dtype != EFFML_U8 || raw_img->ndim != 3 || raw_img->shape[1] != 28 ||
       raw_img->shape[2] != 28 || raw_lab->dtype != EFFML_U8 || raw_lab->ndim != 1 ||
       raw_lab->shape[0] != raw_img->shape[0]))
    st = effml__err(ctx, EFFML_E_FORMAT,
                    "effml_data_fashion_mnist_load: '%s' and '%s' are not u8 [n, 28, 28] images with u8 [n] labels",
                    ipath, lpath);
  const int64_t n = st == EFFML_OK ? raw_img->shape[0] : 0;
  if (st == EFFML_OK) {
    const unsigned char *l = (const unsigned char *)raw_lab->data;
    for (int64_t i = 0; i < n && st == EFFML_OK; ++i)
      if (l[i] > 9)
        st = effml__err(ctx, EFFML_E_FORMAT, "effml_data_fashion_mnist_load: '%s': label %lld is %d, not in 0..9",
                        lpath, (long long)i, (int)l[i]);
  }
  if (st == EFFML_OK) st = effml__tensor_f32_2d(ctx, n, 784, &img);
  if (st == EFFML_OK) st = effml_tensor_create(ctx, EFFML_I32, 1, &n, &lab);
  if (st == EFFML_OK) {
    const unsigned char *px = (const unsigned char *)raw_img->data, *l = (const unsigned char *)raw_lab->data;
    float *d = effml__f32(img);
    int32_t *y = (int32_t *)(void *)lab->data;
    for (int64_t i = 0; i < n * 784; ++i) d[i] = (float)px[i] / 255.0f;
    for (int64_t i = 0; i < n; ++i) y[i] = l[i];
    *images = img;
    *labels = lab;
    img = lab = NULL;
  }
  effml_tensor_free(raw_img);
  effml_tensor_free(raw_lab);
  effml_tensor_free(img);
  effml_tensor_free(lab);
  return st;
}
