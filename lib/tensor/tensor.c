/* Tensors: storage with an atomic reference count, handles with shape and
 * strides (in elements), views that share storage. */
#include <math.h>
#include <stdio.h>
#include <stdatomic.h>
#include <string.h>

#include "tensor_internal.h"

typedef struct effml__storage {
  effml_context *ctx; /* allocator of the storage block */
  void *data;         /* owned block, or caller memory */
  size_t nbytes;
  int owned;
  atomic_int refs;
} effml__storage;

size_t effml_tensor_dtype_size(int32_t dtype) {
  switch (dtype) {
    case EFFML_F32: case EFFML_I32: case EFFML_U32: return 4;
    case EFFML_F64: case EFFML_I64: case EFFML_U64: return 8;
    case EFFML_I16: case EFFML_U16: case EFFML_F16: case EFFML_BF16: return 2;
    case EFFML_U8: case EFFML_I8: case EFFML_BOOL: return 1;
    default: return 0;
  }
}

const char *effml_tensor_dtype_name(int32_t dtype) {
  switch (dtype) {
    case EFFML_F32: return "f32";
    case EFFML_F64: return "f64";
    case EFFML_I32: return "i32";
    case EFFML_I64: return "i64";
    case EFFML_U8: return "u8";
    case EFFML_I8: return "i8";
    case EFFML_I16: return "i16";
    case EFFML_U16: return "u16";
    case EFFML_U32: return "u32";
    case EFFML_U64: return "u64";
    case EFFML_F16: return "f16";
    case EFFML_BF16: return "bf16";
    case EFFML_BOOL: return "bool";
    default: return "unknown";
  }
}

static int is_integer_dtype(int32_t d) {
  return d == EFFML_I32 || d == EFFML_I64 || d == EFFML_U8 || d == EFFML_I8 || d == EFFML_I16 ||
         d == EFFML_U16 || d == EFFML_U32 || d == EFFML_U64 || d == EFFML_BOOL;
}

/* ---- half-precision conversions (round to nearest even) ---- */

static float f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else { /* subnormal */
      float f = ldexpf((float)man, -24);
      return sign ? -f : f;
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (man << 13);
  } else {
    bits = sign | ((exp + 112) << 23) | (man << 13);
  }
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

static uint16_t f32_to_f16(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000;
  uint32_t absx = x & 0x7fffffffu;
  if (absx >= 0x7f800000u) /* inf or nan */
    return (uint16_t)(sign | 0x7c00 | (absx > 0x7f800000u ? 0x200 : 0));
  if (absx >= 0x477ff000u) return (uint16_t)(sign | 0x7c00); /* overflow -> inf */
  if (absx < 0x38800000u) { /* subnormal or zero in f16 */
    float a;
    memcpy(&a, &absx, 4);
    float scaled = a * 16777216.0f; /* 2^24 */
    uint32_t m = (uint32_t)lrintf(scaled);
    return (uint16_t)(sign | m);
  }
  uint32_t mant = absx & 0x7fffff;
  int32_t exp = (int32_t)(absx >> 23) - 127 + 15;
  uint32_t half = ((uint32_t)exp << 10) | (mant >> 13);
  uint32_t rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) half++;
  return (uint16_t)(sign | half);
}

static float bf16_to_f32(uint16_t h) {
  uint32_t bits = (uint32_t)h << 16;
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

static uint16_t f32_to_bf16(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40);
  uint32_t rounding = 0x7fff + ((x >> 16) & 1);
  return (uint16_t)((x + rounding) >> 16);
}

/* ---- element load/store as double ---- */

static double load_f64(int32_t dtype, const char *p) {
  switch (dtype) {
    case EFFML_F32: { float v; memcpy(&v, p, 4); return v; }
    case EFFML_F64: { double v; memcpy(&v, p, 8); return v; }
    case EFFML_I32: { int32_t v; memcpy(&v, p, 4); return v; }
    case EFFML_I64: { int64_t v; memcpy(&v, p, 8); return (double)v; }
    case EFFML_U8: case EFFML_BOOL: return (unsigned char)*p;
    case EFFML_I8: return (signed char)*p;
    case EFFML_I16: { int16_t v; memcpy(&v, p, 2); return v; }
    case EFFML_U16: { uint16_t v; memcpy(&v, p, 2); return v; }
    case EFFML_U32: { uint32_t v; memcpy(&v, p, 4); return v; }
    case EFFML_U64: { uint64_t v; memcpy(&v, p, 8); return (double)v; }
    case EFFML_F16: { uint16_t v; memcpy(&v, p, 2); return f16_to_f32(v); }
    case EFFML_BF16: { uint16_t v; memcpy(&v, p, 2); return bf16_to_f32(v); }
    default: return 0;
  }
}

/* Range of an integer dtype as doubles (exact bounds for the check v < hi). */
static void int_range(int32_t dtype, double *lo, double *hi_excl) {
  switch (dtype) {
    case EFFML_I32: *lo = -2147483648.0; *hi_excl = 2147483648.0; break;
    case EFFML_I64: *lo = -9223372036854775808.0; *hi_excl = 9223372036854775808.0; break;
    case EFFML_U8: *lo = 0; *hi_excl = 256.0; break;
    case EFFML_BOOL: *lo = 0; *hi_excl = 2.0; break;
    case EFFML_I8: *lo = -128.0; *hi_excl = 128.0; break;
    case EFFML_I16: *lo = -32768.0; *hi_excl = 32768.0; break;
    case EFFML_U16: *lo = 0; *hi_excl = 65536.0; break;
    case EFFML_U32: *lo = 0; *hi_excl = 4294967296.0; break;
    case EFFML_U64: *lo = 0; *hi_excl = 18446744073709551616.0; break;
    default: *lo = -INFINITY; *hi_excl = INFINITY;
  }
}

/* Can `v` be stored in dtype (after truncation for integers)? */
static int storable(int32_t dtype, double v) {
  if (!is_integer_dtype(dtype)) return 1; /* floats take anything (inf on overflow) */
  if (isnan(v) || isinf(v)) return 0;
  double lo, hi;
  int_range(dtype, &lo, &hi);
  double t = trunc(v);
  return t >= lo && t < hi;
}

static void store_f64(int32_t dtype, char *p, double v) {
  switch (dtype) {
    case EFFML_F32: { float x = (float)v; memcpy(p, &x, 4); break; }
    case EFFML_F64: memcpy(p, &v, 8); break;
    case EFFML_I32: { int32_t x = (int32_t)v; memcpy(p, &x, 4); break; }
    case EFFML_I64: { int64_t x = (int64_t)v; memcpy(p, &x, 8); break; }
    case EFFML_U8: *p = (char)(unsigned char)v; break;
    case EFFML_BOOL: *p = (char)(v != 0.0); break;
    case EFFML_I8: *p = (char)(signed char)v; break;
    case EFFML_I16: { int16_t x = (int16_t)v; memcpy(p, &x, 2); break; }
    case EFFML_U16: { uint16_t x = (uint16_t)v; memcpy(p, &x, 2); break; }
    case EFFML_U32: { uint32_t x = (uint32_t)v; memcpy(p, &x, 4); break; }
    case EFFML_U64: { uint64_t x = (uint64_t)v; memcpy(p, &x, 8); break; }
    case EFFML_F16: { uint16_t x = f32_to_f16((float)v); memcpy(p, &x, 2); break; }
    case EFFML_BF16: { uint16_t x = f32_to_bf16((float)v); memcpy(p, &x, 2); break; }
    default: break;
  }
}

/* Exact integer load/store (for 64-bit values doubles cannot hold). */
static int64_t load_i64(int32_t dtype, const char *p) {
  switch (dtype) {
    case EFFML_I64: { int64_t v; memcpy(&v, p, 8); return v; }
    case EFFML_U64: { uint64_t v; memcpy(&v, p, 8); return (int64_t)v; }
    default: return (int64_t)load_f64(dtype, p);
  }
}

static int store_i64_ok(int32_t dtype, int64_t v) {
  switch (dtype) {
    case EFFML_I64: return 1;
    case EFFML_U64: return v >= 0;
    case EFFML_I32: return v >= INT32_MIN && v <= INT32_MAX;
    case EFFML_U32: return v >= 0 && v <= (int64_t)UINT32_MAX;
    case EFFML_I16: return v >= INT16_MIN && v <= INT16_MAX;
    case EFFML_U16: return v >= 0 && v <= UINT16_MAX;
    case EFFML_I8: return v >= -128 && v <= 127;
    case EFFML_U8: return v >= 0 && v <= 255;
    case EFFML_BOOL: return v == 0 || v == 1;
    default: return 0;
  }
}

static void store_i64(int32_t dtype, char *p, int64_t v) {
  switch (dtype) {
    case EFFML_I64: memcpy(p, &v, 8); break;
    case EFFML_U64: { uint64_t x = (uint64_t)v; memcpy(p, &x, 8); break; }
    default: store_f64(dtype, p, (double)v);
  }
}

/* ---- construction ---- */

static effml_status check_shape(effml_context *ctx, const char *fn, int32_t dtype, int32_t ndim,
                                const int64_t *shape, size_t *nbytes) {
  if (effml_tensor_dtype_size(dtype) == 0)
    return effml__err(ctx, EFFML_E_DTYPE, "%s: dtype=%d is not a known dtype", fn, (int)dtype);
  if (ndim < 0 || ndim > EFFML_TENSOR_MAX_DIMS)
    return effml__err(ctx, EFFML_E_SHAPE, "%s: ndim=%d must be in [0, %d]", fn, (int)ndim,
                      EFFML_TENSOR_MAX_DIMS);
  if (ndim > 0 && shape == NULL)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: argument 'shape' is NULL", fn);
  size_t n = effml_tensor_dtype_size(dtype);
  for (int32_t i = 0; i < ndim; ++i) {
    if (shape[i] < 1)
      return effml__err(ctx, EFFML_E_SHAPE, "%s: shape[%d]=%lld must be >= 1", fn, (int)i,
                        (long long)shape[i]);
    if ((uint64_t)shape[i] > SIZE_MAX || !effml__mul_size(n, (size_t)shape[i], &n) ||
        n > (size_t)INT64_MAX)
      return effml__err(ctx, EFFML_E_OVERFLOW,
                        "%s: byte size of the shape overflows (dimension %d = %lld)", fn, (int)i,
                        (long long)shape[i]);
  }
  *nbytes = n;
  return EFFML_OK;
}

static void set_contiguous_strides(effml_tensor *t) {
  int64_t s = 1;
  for (int32_t i = t->ndim - 1; i >= 0; --i) {
    t->strides[i] = s;
    s *= t->shape[i];
  }
}

static effml_tensor *new_handle(effml_context *ctx, effml__storage *st) {
  effml_tensor *t = (effml_tensor *)effml__calloc(ctx, 1, sizeof *t);
  if (t == NULL) return NULL;
  t->ctx = ctx;
  t->storage = st;
  atomic_fetch_add(&st->refs, 1);
  return t;
}

static void storage_release(effml__storage *st) {
  if (st == NULL) return;
  if (atomic_fetch_sub(&st->refs, 1) == 1) {
    if (st->owned) effml__free(st->ctx, st->data);
    effml__free(st->ctx, st);
  }
}

static effml_status create_impl(effml_context *ctx, int32_t dtype, int32_t ndim,
                                const int64_t *shape, int zeroed, effml_tensor **out) {
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, out);
  size_t nbytes;
  EFFML__TRY(check_shape(ctx, "effml_tensor_create", dtype, ndim, shape, &nbytes));
  effml__storage *st = (effml__storage *)effml__calloc(ctx, 1, sizeof *st);
  void *data = st ? (zeroed ? effml__calloc(ctx, 1, nbytes) : effml__malloc(ctx, nbytes)) : NULL;
  effml_tensor *t = data ? new_handle(ctx, st) : NULL;
  if (t == NULL) {
    effml__free(ctx, data);
    effml__free(ctx, st);
    return effml__err(ctx, EFFML_E_NOMEM, "effml_tensor_create: out of memory for %zu bytes",
                      nbytes);
  }
  st->ctx = ctx;
  st->data = data;
  st->nbytes = nbytes;
  st->owned = 1;
  t->dtype = dtype;
  t->ndim = ndim;
  for (int32_t i = 0; i < ndim; ++i) t->shape[i] = shape[i];
  set_contiguous_strides(t);
  t->data = (char *)data;
  *out = t;
  return EFFML_OK;
}

effml_status effml_tensor_create(effml_context *ctx, int32_t dtype, int32_t ndim,
                                 const int64_t *shape, effml_tensor **out) {
  EFFML__ENTER(ctx);
  return create_impl(ctx, dtype, ndim, shape, 1, out);
}

effml_status effml__tensor_create_uninit(effml_context *ctx, int32_t dtype, int32_t ndim,
                                         const int64_t *shape, effml_tensor **out) {
  return create_impl(ctx, dtype, ndim, shape, 0, out);
}

effml_status effml_tensor_wrap(effml_context *ctx, int32_t dtype, int32_t ndim,
                               const int64_t *shape, const int64_t *strides, void *data,
                               size_t data_bytes, int32_t read_only, effml_tensor **out) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, out);
  EFFML__CHECK_NULL(ctx, data);
  size_t nbytes;
  EFFML__TRY(check_shape(ctx, "effml_tensor_wrap", dtype, ndim, shape, &nbytes));
  size_t es = effml_tensor_dtype_size(dtype);
  if ((uintptr_t)data % es != 0)
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "effml_tensor_wrap: data=%p is not aligned to the %zu-byte element size",
                      data, es);
  /* Largest addressed element offset (in elements). */
  uint64_t last = 0;
  if (strides) {
    for (int32_t i = 0; i < ndim; ++i) {
      if (strides[i] < 0)
        return effml__err(ctx, EFFML_E_INVALID_ARG, "effml_tensor_wrap: strides[%d]=%lld < 0",
                          (int)i, (long long)strides[i]);
      uint64_t span = (uint64_t)(shape[i] - 1);
      if (strides[i] != 0 && span > (UINT64_MAX / 2 - last) / (uint64_t)strides[i])
        return effml__err(ctx, EFFML_E_OVERFLOW, "effml_tensor_wrap: strides overflow");
      last += span * (uint64_t)strides[i];
    }
  } else {
    last = nbytes / es - 1;
  }
  if (last >= (uint64_t)(SIZE_MAX / es) || (last + 1) * es > data_bytes)
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "effml_tensor_wrap: data_bytes=%zu is too small for the shape and strides "
                      "(needs %llu bytes)",
                      data_bytes, (unsigned long long)((last + 1) * es));
  effml__storage *st = (effml__storage *)effml__calloc(ctx, 1, sizeof *st);
  effml_tensor *t = st ? new_handle(ctx, st) : NULL;
  if (t == NULL) {
    effml__free(ctx, st);
    return effml__err(ctx, EFFML_E_NOMEM, "effml_tensor_wrap: out of memory");
  }
  st->ctx = ctx;
  st->data = data;
  st->nbytes = data_bytes;
  st->owned = 0;
  t->dtype = dtype;
  t->ndim = ndim;
  for (int32_t i = 0; i < ndim; ++i) t->shape[i] = shape[i];
  if (strides)
    for (int32_t i = 0; i < ndim; ++i) t->strides[i] = strides[i];
  else
    set_contiguous_strides(t);
  t->data = (char *)data;
  t->read_only = read_only != 0;
  *out = t;
  return EFFML_OK;
}

void effml_tensor_free(effml_tensor *t) {
  if (t == NULL) return;
  effml__storage *st = t->storage;
  effml_context *ctx = t->ctx;
  effml__free(ctx, t);
  storage_release(st);
}

/* ---- queries ---- */

int32_t effml_tensor_dtype(const effml_tensor *t) { return t ? t->dtype : 0; }
int32_t effml_tensor_ndim(const effml_tensor *t) { return t ? t->ndim : 0; }
int64_t effml_tensor_dim(const effml_tensor *t, int32_t dim) {
  if (t == NULL) return 0;
  if (dim < 0) dim += t->ndim;
  return (dim >= 0 && dim < t->ndim) ? t->shape[dim] : 0;
}
const int64_t *effml_tensor_shape(const effml_tensor *t) { return t ? t->shape : NULL; }
const int64_t *effml_tensor_strides(const effml_tensor *t) { return t ? t->strides : NULL; }
int64_t effml_tensor_numel(const effml_tensor *t) {
  if (t == NULL) return 0;
  int64_t n = 1;
  for (int32_t i = 0; i < t->ndim; ++i) n *= t->shape[i];
  return n;
}
size_t effml_tensor_nbytes(const effml_tensor *t) {
  return t ? (size_t)effml_tensor_numel(t) * effml_tensor_dtype_size(t->dtype) : 0;
}
int32_t effml_tensor_is_contiguous(const effml_tensor *t) {
  if (t == NULL) return 0;
  int64_t s = 1;
  for (int32_t i = t->ndim - 1; i >= 0; --i) {
    if (t->shape[i] != 1 && t->strides[i] != s) return 0;
    s *= t->shape[i];
  }
  return 1;
}
int32_t effml_tensor_is_read_only(const effml_tensor *t) { return t ? t->read_only : 0; }
void *effml_tensor_data(effml_tensor *t) { return (t && !t->read_only) ? t->data : NULL; }
const void *effml_tensor_data_const(const effml_tensor *t) { return t ? t->data : NULL; }

/* ---- views ---- */

static effml_status make_view(effml_context *ctx, const effml_tensor *src, const char *fn,
                              effml_tensor **out) {
  effml_tensor *v = new_handle(ctx, src->storage);
  if (v == NULL) return effml__err(ctx, EFFML_E_NOMEM, "%s: out of memory", fn);
  v->dtype = src->dtype;
  v->ndim = src->ndim;
  memcpy(v->shape, src->shape, sizeof v->shape);
  memcpy(v->strides, src->strides, sizeof v->strides);
  v->data = src->data;
  v->read_only = src->read_only;
  *out = v;
  return EFFML_OK;
}

effml_status effml_tensor_slice(effml_context *ctx, const effml_tensor *src, int32_t dim,
                                int64_t start, int64_t stop, int64_t step, effml_tensor **out) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, src);
  EFFML__CHECK_NULL(ctx, out);
  if (dim < 0 || dim >= src->ndim)
    return effml__err(ctx, EFFML_E_RANGE, "effml_tensor_slice: dim=%d out of range for ndim=%d",
                      (int)dim, (int)src->ndim);
  if (step < 1)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "effml_tensor_slice: step=%lld must be >= 1",
                      (long long)step);
  if (start < 0 || stop > src->shape[dim] || start >= stop)
    return effml__err(ctx, EFFML_E_RANGE,
                      "effml_tensor_slice: [start=%lld, stop=%lld) is empty or outside [0, %lld)",
                      (long long)start, (long long)stop, (long long)src->shape[dim]);
  effml_tensor *v;
  EFFML__TRY(make_view(ctx, src, "effml_tensor_slice", &v));
  v->data = src->data + start * src->strides[dim] * (int64_t)effml_tensor_dtype_size(src->dtype);
  v->shape[dim] = (stop - start + step - 1) / step;
  v->strides[dim] = src->strides[dim] * step;
  *out = v;
  return EFFML_OK;
}

effml_status effml_tensor_reshape(effml_context *ctx, const effml_tensor *src, int32_t ndim,
                                  const int64_t *shape, effml_tensor **out) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, src);
  EFFML__CHECK_NULL(ctx, out);
  if (ndim < 0 || ndim > EFFML_TENSOR_MAX_DIMS)
    return effml__err(ctx, EFFML_E_SHAPE, "effml_tensor_reshape: ndim=%d must be in [0, %d]",
                      (int)ndim, EFFML_TENSOR_MAX_DIMS);
  if (ndim > 0 && shape == NULL)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "effml_tensor_reshape: argument 'shape' is NULL");
  if (!effml_tensor_is_contiguous(src))
    return effml__err(ctx, EFFML_E_SHAPE,
                      "effml_tensor_reshape: source is not contiguous; call "
                      "effml_tensor_contiguous() first");
  int64_t n = effml_tensor_numel(src), known = 1, sh[EFFML_TENSOR_MAX_DIMS];
  int32_t infer = -1;
  for (int32_t i = 0; i < ndim; ++i) {
    sh[i] = shape[i];
    if (shape[i] == -1) {
      if (infer >= 0)
        return effml__err(ctx, EFFML_E_SHAPE, "effml_tensor_reshape: more than one -1 in shape");
      infer = i;
    } else if (shape[i] < 1) {
      return effml__err(ctx, EFFML_E_SHAPE, "effml_tensor_reshape: shape[%d]=%lld must be >= 1",
                        (int)i, (long long)shape[i]);
    } else {
      if (shape[i] > n) /* cannot match; also guards the product against overflow */
        return effml__err(ctx, EFFML_E_SHAPE,
                          "effml_tensor_reshape: shape[%d]=%lld exceeds the %lld elements", (int)i,
                          (long long)shape[i], (long long)n);
      known *= shape[i];
      if (known > n)
        return effml__err(ctx, EFFML_E_SHAPE,
                          "effml_tensor_reshape: new shape has more than %lld elements",
                          (long long)n);
    }
  }
  if (infer >= 0) {
    if (n % known != 0)
      return effml__err(ctx, EFFML_E_SHAPE,
                        "effml_tensor_reshape: %lld elements do not divide into the shape",
                        (long long)n);
    sh[infer] = n / known;
  } else if (known != n) {
    return effml__err(ctx, EFFML_E_SHAPE,
                      "effml_tensor_reshape: new shape has %lld elements, source has %lld",
                      (long long)known, (long long)n);
  }
  effml_tensor *v;
  EFFML__TRY(make_view(ctx, src, "effml_tensor_reshape", &v));
  v->ndim = ndim;
  for (int32_t i = 0; i < ndim; ++i) v->shape[i] = sh[i];
  set_contiguous_strides(v);
  *out = v;
  return EFFML_OK;
}

effml_status effml_tensor_transpose(effml_context *ctx, const effml_tensor *src, int32_t dim0,
                                    int32_t dim1, effml_tensor **out) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, src);
  EFFML__CHECK_NULL(ctx, out);
  if (dim0 < 0 || dim0 >= src->ndim || dim1 < 0 || dim1 >= src->ndim)
    return effml__err(ctx, EFFML_E_RANGE,
                      "effml_tensor_transpose: dims (%d, %d) out of range for ndim=%d", (int)dim0,
                      (int)dim1, (int)src->ndim);
  effml_tensor *v;
  EFFML__TRY(make_view(ctx, src, "effml_tensor_transpose", &v));
  int64_t s = v->shape[dim0];
  v->shape[dim0] = v->shape[dim1];
  v->shape[dim1] = s;
  s = v->strides[dim0];
  v->strides[dim0] = v->strides[dim1];
  v->strides[dim1] = s;
  *out = v;
  return EFFML_OK;
}

/* ---- iteration over arbitrary strides ---- */

static inline char *elem_ptr(const effml_tensor *t, const int64_t *idx) {
  int64_t off = 0;
  for (int32_t i = 0; i < t->ndim; ++i) off += idx[i] * t->strides[i];
  return t->data + off * (int64_t)effml_tensor_dtype_size(t->dtype);
}

static inline int iter_next(const effml_tensor *t, int64_t *idx) {
  for (int32_t i = t->ndim - 1; i >= 0; --i) {
    if (++idx[i] < t->shape[i]) return 1;
    idx[i] = 0;
  }
  return 0;
}

/* Copy src into contiguous memory `dst` of dtype `dtype` (checked beforehand). */
static void copy_to_contiguous(const effml_tensor *src, char *dst, int32_t dtype) {
  size_t ds = effml_tensor_dtype_size(dtype);
  int64_t n = effml_tensor_numel(src);
  if (effml_tensor_is_contiguous(src) && dtype == src->dtype) {
    memcpy(dst, src->data, (size_t)n * ds);
    return;
  }
  int64_t idx[EFFML_TENSOR_MAX_DIMS] = {0};
  int64_t k = 0;
  int exact_int = is_integer_dtype(dtype) && is_integer_dtype(src->dtype);
  do {
    const char *p = elem_ptr(src, idx);
    if (dtype == src->dtype)
      memcpy(dst + k * (int64_t)ds, p, ds);
    else if (exact_int)
      store_i64(dtype, dst + k * (int64_t)ds, load_i64(src->dtype, p));
    else
      store_f64(dtype, dst + k * (int64_t)ds, load_f64(src->dtype, p));
    ++k;
  } while (src->ndim > 0 && iter_next(src, idx));
}

/* Check every element of src converts to dtype. */
static effml_status check_convertible(effml_context *ctx, const effml_tensor *src, int32_t dtype,
                                      const char *fn) {
  if (dtype == src->dtype || !is_integer_dtype(dtype)) return EFFML_OK;
  int64_t idx[EFFML_TENSOR_MAX_DIMS] = {0};
  int src_int = is_integer_dtype(src->dtype);
  do {
    const char *p = elem_ptr(src, idx);
    int ok;
    if (src->dtype == EFFML_U64) {
      uint64_t u;
      memcpy(&u, p, 8);
      ok = u <= (uint64_t)INT64_MAX && store_i64_ok(dtype, (int64_t)u);
    } else if (src_int) {
      ok = store_i64_ok(dtype, load_i64(src->dtype, p));
    } else {
      ok = storable(dtype, load_f64(src->dtype, p));
    }
    if (!ok)
      return effml__err(ctx, EFFML_E_NUMERIC, "%s: value %g does not fit in dtype %s", fn,
                        load_f64(src->dtype, p), effml_tensor_dtype_name(dtype));
  } while (src->ndim > 0 && iter_next(src, idx));
  return EFFML_OK;
}

effml_status effml_tensor_contiguous(effml_context *ctx, const effml_tensor *src,
                                     effml_tensor **out) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, src);
  return effml_tensor_convert(ctx, src, src->dtype, out);
}

effml_status effml_tensor_convert(effml_context *ctx, const effml_tensor *src, int32_t dtype,
                                  effml_tensor **out) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, src);
  EFFML__CHECK_NULL(ctx, out);
  if (effml_tensor_dtype_size(dtype) == 0)
    return effml__err(ctx, EFFML_E_DTYPE, "effml_tensor_convert: dtype=%d is not a known dtype",
                      (int)dtype);
  EFFML__TRY(check_convertible(ctx, src, dtype, "effml_tensor_convert"));
  effml_tensor *t;
  EFFML__TRY(effml_tensor_create(ctx, dtype, src->ndim, src->shape, &t));
  copy_to_contiguous(src, t->data, dtype);
  *out = t;
  return EFFML_OK;
}

effml_status effml_tensor_copy(effml_context *ctx, effml_tensor *dst, const effml_tensor *src) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, dst);
  EFFML__CHECK_NULL(ctx, src);
  EFFML__TRY(effml__check_writable(ctx, dst, "dst"));
  if (dst->ndim != src->ndim || memcmp(dst->shape, src->shape, sizeof(int64_t) * (size_t)src->ndim))
  {
    char a[128], b[128];
    return effml__err(ctx, EFFML_E_SHAPE, "effml_tensor_copy: dst shape %s != src shape %s",
                      effml__shape_str(dst, a, sizeof a), effml__shape_str(src, b, sizeof b));
  }
  EFFML__TRY(check_convertible(ctx, src, dst->dtype, "effml_tensor_copy"));
  if (effml_tensor_is_contiguous(dst) && !effml__tensors_overlap(dst, src)) {
    copy_to_contiguous(src, dst->data, dst->dtype);
    return EFFML_OK;
  }
  /* General case (strided or overlapping destination): go through a temporary. */
  effml_tensor *tmp;
  EFFML__TRY(effml_tensor_convert(ctx, src, dst->dtype, &tmp));
  int64_t idx[EFFML_TENSOR_MAX_DIMS] = {0}, k = 0;
  size_t ds = effml_tensor_dtype_size(dst->dtype);
  do {
    memcpy(elem_ptr(dst, idx), tmp->data + k * (int64_t)ds, ds);
    ++k;
  } while (dst->ndim > 0 && iter_next(dst, idx));
  effml_tensor_free(tmp);
  return EFFML_OK;
}

/* ---- element access ---- */

effml_status effml_tensor_fill(effml_context *ctx, effml_tensor *t, double value) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, t);
  EFFML__TRY(effml__check_writable(ctx, t, "t"));
  if (!storable(t->dtype, value))
    return effml__err(ctx, EFFML_E_NUMERIC, "effml_tensor_fill: value=%g does not fit in dtype %s",
                      value, effml_tensor_dtype_name(t->dtype));
  size_t ds = effml_tensor_dtype_size(t->dtype);
  char one[8];
  store_f64(t->dtype, one, value);
  int64_t idx[EFFML_TENSOR_MAX_DIMS] = {0};
  if (effml_tensor_is_contiguous(t)) {
    int64_t n = effml_tensor_numel(t);
    if (t->dtype == EFFML_F32) {
      float v;
      memcpy(&v, one, 4);
      float *p = (float *)(void *)t->data;
      for (int64_t i = 0; i < n; ++i) p[i] = v;
    } else {
      for (int64_t i = 0; i < n; ++i) memcpy(t->data + i * (int64_t)ds, one, ds);
    }
    return EFFML_OK;
  }
  do {
    memcpy(elem_ptr(t, idx), one, ds);
  } while (t->ndim > 0 && iter_next(t, idx));
  return EFFML_OK;
}

static effml_status check_index(effml_context *ctx, const effml_tensor *t, const int64_t *index,
                                const char *fn) {
  if (t->ndim > 0 && index == NULL)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: argument 'index' is NULL", fn);
  for (int32_t i = 0; i < t->ndim; ++i)
    if (index[i] < 0 || index[i] >= t->shape[i])
      return effml__err(ctx, EFFML_E_RANGE, "%s: index[%d]=%lld out of range [0, %lld)", fn,
                        (int)i, (long long)index[i], (long long)t->shape[i]);
  return EFFML_OK;
}

effml_status effml_tensor_get_f64(effml_context *ctx, const effml_tensor *t, const int64_t *index,
                                  double *value) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, t);
  EFFML__CHECK_NULL(ctx, value);
  EFFML__TRY(check_index(ctx, t, index, "effml_tensor_get_f64"));
  *value = load_f64(t->dtype, elem_ptr(t, index));
  return EFFML_OK;
}

effml_status effml_tensor_set_f64(effml_context *ctx, effml_tensor *t, const int64_t *index,
                                  double value) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, t);
  EFFML__TRY(effml__check_writable(ctx, t, "t"));
  EFFML__TRY(check_index(ctx, t, index, "effml_tensor_set_f64"));
  if (!storable(t->dtype, value))
    return effml__err(ctx, EFFML_E_NUMERIC,
                      "effml_tensor_set_f64: value=%g does not fit in dtype %s", value,
                      effml_tensor_dtype_name(t->dtype));
  store_f64(t->dtype, elem_ptr(t, index), value);
  return EFFML_OK;
}

effml_status effml_tensor_get_i64(effml_context *ctx, const effml_tensor *t, const int64_t *index,
                                  int64_t *value) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, t);
  EFFML__CHECK_NULL(ctx, value);
  if (!is_integer_dtype(t->dtype))
    return effml__err(ctx, EFFML_E_DTYPE, "effml_tensor_get_i64: dtype %s is not an integer type",
                      effml_tensor_dtype_name(t->dtype));
  EFFML__TRY(check_index(ctx, t, index, "effml_tensor_get_i64"));
  *value = load_i64(t->dtype, elem_ptr(t, index));
  return EFFML_OK;
}

effml_status effml_tensor_set_i64(effml_context *ctx, effml_tensor *t, const int64_t *index,
                                  int64_t value) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, t);
  if (!is_integer_dtype(t->dtype))
    return effml__err(ctx, EFFML_E_DTYPE, "effml_tensor_set_i64: dtype %s is not an integer type",
                      effml_tensor_dtype_name(t->dtype));
  EFFML__TRY(effml__check_writable(ctx, t, "t"));
  EFFML__TRY(check_index(ctx, t, index, "effml_tensor_set_i64"));
  if (!store_i64_ok(t->dtype, value))
    return effml__err(ctx, EFFML_E_NUMERIC,
                      "effml_tensor_set_i64: value=%lld does not fit in dtype %s",
                      (long long)value, effml_tensor_dtype_name(t->dtype));
  store_i64(t->dtype, elem_ptr(t, index), value);
  return EFFML_OK;
}

/* ---- internal helpers ---- */

const char *effml__shape_str(const effml_tensor *t, char *buf, size_t len) {
  size_t used = 0;
  if (len == 0) return buf;
  buf[0] = '\0';
  if (t == NULL) {
    snprintf(buf, len, "(null)");
    return buf;
  }
  used += (size_t)snprintf(buf + used, len - used, "[");
  for (int32_t i = 0; i < t->ndim && used < len; ++i)
    used += (size_t)snprintf(buf + used, len - used, i ? ", %lld" : "%lld", (long long)t->shape[i]);
  if (used < len) snprintf(buf + used, len - used, "]");
  return buf;
}

effml_status effml__labels_to_i64(effml_context *ctx, const effml_tensor *t, int64_t n,
                                  const char *what, int64_t **out) {
  int64_t *v = (int64_t *)effml__alloc_or_err(ctx, (size_t)n * sizeof(int64_t), what);
  if (!v) return EFFML_E_NOMEM;
  for (int64_t i = 0; i < n; ++i) v[i] = effml__label_at(t, i);
  *out = v;
  return EFFML_OK;
}

effml_status effml__check_tensor(effml_context *ctx, const effml_tensor *t, const char *arg,
                                 int32_t dtype, int32_t ndim, int contiguous) {
  if (t == NULL) return effml__err(ctx, EFFML_E_INVALID_ARG, "argument '%s' is NULL", arg);
  if (dtype != 0 && t->dtype != dtype)
    return effml__err(ctx, EFFML_E_DTYPE, "argument '%s' has dtype %s, expected %s", arg,
                      effml_tensor_dtype_name(t->dtype), effml_tensor_dtype_name(dtype));
  if (ndim >= 0 && t->ndim != ndim) {
    char b[128];
    return effml__err(ctx, EFFML_E_SHAPE, "argument '%s' has shape %s (%d dims), expected %d dims",
                      arg, effml__shape_str(t, b, sizeof b), (int)t->ndim, (int)ndim);
  }
  if (contiguous && !effml_tensor_is_contiguous(t))
    return effml__err(ctx, EFFML_E_SHAPE, "argument '%s' must be contiguous (row-major)", arg);
  return EFFML_OK;
}

effml_status effml__check_dim(effml_context *ctx, const effml_tensor *t, const char *arg,
                              int32_t dim, int64_t expect) {
  int64_t got = effml_tensor_dim(t, dim);
  if (got != expect) {
    char b[128];
    return effml__err(ctx, EFFML_E_SHAPE, "argument '%s' has shape %s: dimension %d is %lld, expected %lld",
                      arg, effml__shape_str(t, b, sizeof b), (int)dim, (long long)got,
                      (long long)expect);
  }
  return EFFML_OK;
}

effml_status effml__check_writable(effml_context *ctx, const effml_tensor *t, const char *arg) {
  if (t == NULL) return effml__err(ctx, EFFML_E_INVALID_ARG, "argument '%s' is NULL", arg);
  if (t->read_only)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "argument '%s' is read-only", arg);
  return EFFML_OK;
}

effml_status effml__tensor_f32_2d(effml_context *ctx, int64_t rows, int64_t cols,
                                  effml_tensor **out) {
  int64_t shape[2] = {rows, cols};
  return effml_tensor_create(ctx, EFFML_F32, 2, shape, out);
}

effml_status effml__tensor_like(effml_context *ctx, const effml_tensor *like, int32_t dtype,
                                effml_tensor **out) {
  return effml_tensor_create(ctx, dtype, like->ndim, like->shape, out);
}

/* Byte range [lo, hi) touched by a tensor. */
static void byte_range(const effml_tensor *t, uintptr_t *lo, uintptr_t *hi) {
  int64_t last = 0;
  for (int32_t i = 0; i < t->ndim; ++i) last += (t->shape[i] - 1) * t->strides[i];
  *lo = (uintptr_t)t->data;
  *hi = (uintptr_t)(t->data + (last + 1) * (int64_t)effml_tensor_dtype_size(t->dtype));
}

int effml__tensors_overlap(const effml_tensor *a, const effml_tensor *b) {
  uintptr_t a0, a1, b0, b1;
  byte_range(a, &a0, &a1);
  byte_range(b, &b0, &b1);
  return a0 < b1 && b0 < a1;
}
