/*
 * .npy and safetensors I/O: files written by numpy and by a reference
 * safetensors writer (tests/ref/io_make_ref.py -> tests/data/io/), byte-exact
 * agreement of our writers with both, round trips for every dtype and ranks
 * 0..8, every bad input of the formats with its status, and allocation failures.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

#define DATA(f) EFFML_TEST_DATA "/io/" f
#define TMP(f) EFFML_TEST_TMP "/io_" f

static const int64_t SHAPE8[8] = {2, 3, 1, 2, 1, 2, 1, 2};

/* The value of element i of every reference tensor (io_make_ref.py ref_value). */
static double ref_value(int32_t dtype, int64_t i) {
  double sc = 1;
  switch (dtype) {
    case EFFML_F32: case EFFML_F64: case EFFML_F16: case EFFML_BF16:
      return (double)(i % 16) * 0.5 - 3.0;
    case EFFML_BOOL: return i % 3 == 0;
    case EFFML_I16: case EFFML_U16: sc = 1000; break;
    case EFFML_I32: case EFFML_U32: sc = 100000; break;
    case EFFML_I64: case EFFML_U64: sc = 1e12; break;
    default: break;
  }
  int signed_ = dtype == EFFML_I8 || dtype == EFFML_I16 || dtype == EFFML_I32 || dtype == EFFML_I64;
  return (double)((i * 7) % 23 - (signed_ ? 11 : 0)) * sc;
}

/* A contiguous tensor of `dtype` holding the reference values. */
static effml_tensor *ref_tensor(effml_context *ctx, int32_t dtype, int32_t ndim,
                                const int64_t *shape) {
  effml_tensor *d = NULL, *t = NULL;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F64, ndim, shape, &d), EFFML_OK);
  double *p = (double *)effml_tensor_data(d);
  for (int64_t i = 0; i < effml_tensor_numel(d); ++i) p[i] = ref_value(dtype, i);
  ck_assert_int_eq(effml_tensor_convert(ctx, d, dtype, &t), EFFML_OK);
  effml_tensor_free(d);
  return t;
}

/* Assert t has dtype, shape and the reference values. */
static void check_ref(effml_context *ctx, const effml_tensor *t, int32_t dtype, int32_t ndim,
                      const int64_t *shape) {
  ck_assert_ptr_nonnull(t);
  ck_assert_int_eq(effml_tensor_dtype(t), dtype);
  ck_assert_int_eq(effml_tensor_ndim(t), ndim);
  for (int32_t k = 0; k < ndim; ++k) ck_assert_int_eq(effml_tensor_shape(t)[k], shape[k]);
  effml_tensor *d = NULL;
  ck_assert_int_eq(effml_tensor_convert(ctx, t, EFFML_F64, &d), EFFML_OK);
  const double *p = (const double *)effml_tensor_data_const(d);
  for (int64_t i = 0; i < effml_tensor_numel(d); ++i)
    ck_assert_msg(p[i] == ref_value(dtype, i), "%s element %lld: %g != %g",
                  effml_tensor_dtype_name(dtype), (long long)i, p[i], ref_value(dtype, i));
  effml_tensor_free(d);
}

static void assert_same_file(const char *a, const char *b) {
  size_t na = 0, nb = 0;
  unsigned char *pa = tu_read_file(a, &na), *pb = tu_read_file(b, &nb);
  ck_assert_msg(pa && pb, "cannot read %s or %s", a, b);
  ck_assert_msg(na == nb && memcmp(pa, pb, na) == 0, "%s (%zu bytes) differs from %s (%zu bytes)",
                a, na, b, nb);
  free(pa);
  free(pb);
}

static void write_file(const char *path, const void *p, size_t n) {
  FILE *f = fopen(path, "wb");
  ck_assert_ptr_nonnull(f);
  ck_assert_uint_eq(fwrite(p, 1, n, f), n);
  fclose(f);
}

/* ================================ .npy ================================ */

typedef struct {
  const char *code;
  int32_t dtype;
} npy_code;
static const npy_code NPY_CODES[] = {
    {"f4", EFFML_F32}, {"f8", EFFML_F64}, {"i4", EFFML_I32}, {"i8", EFFML_I64},
    {"u1", EFFML_U8},  {"i1", EFFML_I8},  {"i2", EFFML_I16}, {"u2", EFFML_U16},
    {"u4", EFFML_U32}, {"u8", EFFML_U64}, {"f2", EFFML_F16}, {"b1", EFFML_BOOL},
};

START_TEST(npy_numpy_dtypes) {
  effml_context *ctx = tu_ctx(1);
  const int64_t shape[2] = {3, 4};
  for (size_t k = 0; k < sizeof NPY_CODES / sizeof NPY_CODES[0]; ++k) {
    char path[512];
    snprintf(path, sizeof path, DATA("npy_%s_r2.npy"), NPY_CODES[k].code);
    effml_tensor *t = NULL;
    ck_assert_msg(effml_io_npy_load(ctx, path, &t) == EFFML_OK, "%s: %s", path,
                  effml_context_last_error(ctx));
    check_ref(ctx, t, NPY_CODES[k].dtype, 2, shape);
    /* Our writer produces exactly numpy's bytes. */
    ck_assert_int_eq(effml_io_npy_save(ctx, TMP("dtype.npy"), t), EFFML_OK);
    assert_same_file(TMP("dtype.npy"), path);
    effml_tensor_free(t);
  }
  effml_context_free(ctx);
}
END_TEST

START_TEST(npy_numpy_ranks) {
  effml_context *ctx = tu_ctx(1);
  for (int r = 0; r <= 8; ++r) {
    char path[512];
    snprintf(path, sizeof path, DATA("npy_f8_rank%d.npy"), r);
    size_t len = 0;
    unsigned char *buf = tu_read_file(path, &len);
    ck_assert_ptr_nonnull(buf);
    effml_tensor *t = NULL;
    ck_assert_int_eq(effml_io_npy_load_buffer(ctx, buf, len, &t), EFFML_OK);
    check_ref(ctx, t, EFFML_F64, r, SHAPE8);
    ck_assert_int_eq(effml_io_npy_save(ctx, TMP("rank.npy"), t), EFFML_OK);
    assert_same_file(TMP("rank.npy"), path);
    effml_tensor_free(t);
    free(buf);
  }
  effml_context_free(ctx);
}
END_TEST

START_TEST(npy_fortran_versions_padding) {
  effml_context *ctx = tu_ctx(1);
  effml_tensor *t = NULL;
  const int64_t s234[3] = {2, 3, 4}, s35[2] = {3, 5}, s34[2] = {3, 4};
  ck_assert_int_eq(effml_io_npy_load(ctx, DATA("npy_fortran_f4.npy"), &t), EFFML_OK);
  check_ref(ctx, t, EFFML_F32, 3, s234); /* converted to C order */
  ck_assert_int_eq(effml_tensor_is_contiguous(t), 1);
  effml_tensor_free(t);
  ck_assert_int_eq(effml_io_npy_load(ctx, DATA("npy_fortran_i2.npy"), &t), EFFML_OK);
  check_ref(ctx, t, EFFML_I16, 2, s35);
  effml_tensor_free(t);
  ck_assert_int_eq(effml_io_npy_load(ctx, DATA("npy_v2_i4.npy"), &t), EFFML_OK);
  check_ref(ctx, t, EFFML_I32, 2, s34);
  effml_tensor_free(t);
  ck_assert_int_eq(effml_io_npy_load(ctx, DATA("npy_v3_f8.npy"), &t), EFFML_OK);
  check_ref(ctx, t, EFFML_F64, 2, s34);
  effml_tensor_free(t);
  ck_assert_int_eq(effml_io_npy_load(ctx, DATA("npy_padded_i4.npy"), &t), EFFML_OK);
  check_ref(ctx, t, EFFML_I32, 2, s34);
  effml_tensor_free(t);
  ck_assert_int_eq(effml_io_npy_load(ctx, DATA("npy_py2_i4.npy"), &t), EFFML_OK);
  check_ref(ctx, t, EFFML_I32, 2, s34);
  effml_tensor_free(t);
  effml_context_free(ctx);
}
END_TEST

START_TEST(npy_round_trip_all) {
  effml_context *ctx = tu_ctx(1);
  for (size_t k = 0; k < sizeof NPY_CODES / sizeof NPY_CODES[0]; ++k) {
    for (int r = 0; r <= 8; ++r) {
      effml_tensor *t = ref_tensor(ctx, NPY_CODES[k].dtype, r, SHAPE8), *u = NULL;
      ck_assert_int_eq(effml_io_npy_save(ctx, TMP("rt.npy"), t), EFFML_OK);
      ck_assert_int_eq(effml_io_npy_load(ctx, TMP("rt.npy"), &u), EFFML_OK);
      check_ref(ctx, u, NPY_CODES[k].dtype, r, SHAPE8);
      ck_assert_int_eq(memcmp(effml_tensor_data_const(t), effml_tensor_data_const(u),
                              effml_tensor_nbytes(t)), 0);
      effml_tensor_free(t);
      effml_tensor_free(u);
    }
  }
  /* A transposed (non-contiguous) view is written in C order. */
  const int64_t s[2] = {3, 4};
  effml_tensor *t = ref_tensor(ctx, EFFML_F32, 2, s), *v = NULL, *u = NULL, *c = NULL;
  ck_assert_int_eq(effml_tensor_transpose(ctx, t, 0, 1, &v), EFFML_OK);
  ck_assert_int_eq(effml_io_npy_save(ctx, TMP("view.npy"), v), EFFML_OK);
  ck_assert_int_eq(effml_io_npy_load(ctx, TMP("view.npy"), &u), EFFML_OK);
  ck_assert_int_eq(effml_tensor_contiguous(ctx, v, &c), EFFML_OK);
  ck_assert_int_eq(effml_tensor_dim(u, 0), 4);
  ck_assert_int_eq(memcmp(effml_tensor_data_const(u), effml_tensor_data_const(c), 48), 0);
  effml_tensor_free(u);
  effml_tensor_free(c);
  effml_tensor_free(v);
  /* bf16 has no .npy dtype. */
  effml_tensor *b = ref_tensor(ctx, EFFML_BF16, 2, s);
  ck_assert_int_eq(effml_io_npy_save(ctx, TMP("bf16.npy"), b), EFFML_E_DTYPE);
  ck_assert_int_eq(access(TMP("bf16.npy"), F_OK), -1);
  effml_tensor_free(b);
  effml_tensor_free(t);
  effml_context_free(ctx);
}
END_TEST

/* Expect `status` from both loaders for the file (path and buffer). */
static void npy_expect_file(effml_context *ctx, const char *path, effml_status status,
                            const char *msg_part) {
  effml_tensor *sentinel = (effml_tensor *)(uintptr_t)0x1234, *t = sentinel;
  ck_assert_msg(effml_io_npy_load(ctx, path, &t) == status, "%s: got '%s'", path,
                effml_context_last_error(ctx));
  if (status == EFFML_OK) {
    effml_tensor_free(t);
    t = sentinel;
  }
  ck_assert_ptr_eq(t, sentinel);
  if (msg_part)
    ck_assert_msg(strstr(effml_context_last_error(ctx), msg_part) != NULL, "%s: message '%s'",
                  path, effml_context_last_error(ctx));
  size_t len = 0;
  unsigned char *buf = tu_read_file(path, &len);
  ck_assert_ptr_nonnull(buf);
  ck_assert_int_eq(effml_io_npy_load_buffer(ctx, buf, len, &t), status);
  if (status == EFFML_OK) {
    effml_tensor_free(t);
    t = sentinel;
  }
  ck_assert_ptr_eq(t, sentinel);
  free(buf);
}

static void npy_expect_buf(effml_context *ctx, const void *buf, size_t len, effml_status status,
                           const char *msg_part) {
  write_file(TMP("bad.npy"), buf, len);
  npy_expect_file(ctx, TMP("bad.npy"), status, msg_part);
}

/* A .npy v1 file with header text `h` (padded) and `ndata` zero data bytes. */
static void npy_expect_header(effml_context *ctx, const char *h, size_t ndata, effml_status status,
                              const char *msg_part) {
  unsigned char buf[1024] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
  size_t hl = strlen(h);
  size_t pad = 64 - (10 + hl + 1) % 64;
  memcpy(buf + 10, h, hl);
  memset(buf + 10 + hl, ' ', pad);
  buf[10 + hl + pad] = '\n';
  size_t total = hl + pad + 1;
  buf[8] = (unsigned char)(total & 0xff);
  buf[9] = (unsigned char)(total >> 8);
  ck_assert_uint_le(10 + total + ndata, sizeof buf);
  memset(buf + 10 + total, 0, ndata);
  npy_expect_buf(ctx, buf, 10 + total + ndata, status, msg_part);
}

START_TEST(npy_bad_dtypes_and_shapes) {
  effml_context *ctx = tu_ctx(1);
  npy_expect_file(ctx, DATA("npy_bigendian_f4.npy"), EFFML_E_UNSUPPORTED, "big-endian");
  npy_expect_file(ctx, DATA("npy_object.npy"), EFFML_E_UNSUPPORTED, "object");
  npy_expect_file(ctx, DATA("npy_complex64.npy"), EFFML_E_UNSUPPORTED, "<c8");
  npy_expect_file(ctx, DATA("npy_structured.npy"), EFFML_E_UNSUPPORTED, "structured");
  npy_expect_file(ctx, DATA("npy_zero_dim.npy"), EFFML_E_SHAPE, "shape[0]=0");
  npy_expect_file(ctx, DATA("npy_nine_dims.npy"), EFFML_E_UNSUPPORTED, "9 dimensions");
  npy_expect_header(ctx, "{'descr': '<f4', 'fortran_order': False, 'shape': (-2, 3), }", 0,
                    EFFML_E_SHAPE, "-2");
  npy_expect_header(ctx, "{'descr': '<f4', 'fortran_order': False, 'shape': "
                    "(99999999999999999999, 3), }", 0, EFFML_E_OVERFLOW, NULL);
  npy_expect_header(ctx, "{'descr': '<f8', 'fortran_order': False, 'shape': "
                    "(4294967296, 4294967296), }", 0, EFFML_E_OVERFLOW, "overflow");
  /* A huge shape over a short file is refused before anything is allocated. */
  npy_expect_header(ctx, "{'descr': '<f8', 'fortran_order': False, 'shape': (100000000000,), }",
                    8, EFFML_E_FORMAT, "truncated .npy: data has 8 bytes, shape needs 800000000000");
  npy_expect_header(ctx, "{'descr': '>i8', 'fortran_order': False, 'shape': (2,), }", 16,
                    EFFML_E_UNSUPPORTED, "big-endian");
  npy_expect_header(ctx, "{'descr': '|O', 'fortran_order': False, 'shape': (2,), }", 16,
                    EFFML_E_UNSUPPORTED, "object");
  npy_expect_header(ctx, "{'descr': '<U3', 'fortran_order': False, 'shape': (2,), }", 24,
                    EFFML_E_UNSUPPORTED, "<U3");
  /* One-byte types accept any byte-order mark. */
  npy_expect_header(ctx, "{'descr': '>u1', 'fortran_order': False, 'shape': (2,), }", 2,
                    EFFML_OK, NULL);
  effml_tensor *t = NULL;
  ck_assert_int_eq(effml_io_npy_load(ctx, TMP("bad.npy"), &t), EFFML_OK);
  ck_assert_int_eq(effml_tensor_dtype(t), EFFML_U8);
  effml_tensor_free(t);
  effml_context_free(ctx);
}
END_TEST

START_TEST(npy_bad_framing) {
  effml_context *ctx = tu_ctx(1);
  size_t len = 0;
  unsigned char *good = tu_read_file(DATA("npy_f4_r2.npy"), &len);
  ck_assert_ptr_nonnull(good);
  ck_assert_uint_eq(len, 128 + 48);
  unsigned char *b = malloc(len + 8);
  /* Truncated: nothing, < 8 bytes, no header length, mid-header, mid-data. */
  npy_expect_buf(ctx, good, 0, EFFML_E_FORMAT, "truncated");
  npy_expect_buf(ctx, good, 5, EFFML_E_FORMAT, "truncated");
  npy_expect_buf(ctx, good, 9, EFFML_E_FORMAT, "truncated");
  npy_expect_buf(ctx, good, 60, EFFML_E_FORMAT, "header_len");
  npy_expect_buf(ctx, good, len - 1, EFFML_E_FORMAT, "truncated");
  npy_expect_buf(ctx, good, 128, EFFML_E_FORMAT, "truncated");
  /* Wrong magic. */
  memcpy(b, good, len);
  b[1] = 'n';
  npy_expect_buf(ctx, b, len, EFFML_E_FORMAT, "magic");
  /* Unknown format version. */
  memcpy(b, good, len);
  b[6] = 4;
  npy_expect_buf(ctx, b, len, EFFML_E_UNSUPPORTED, "version 4.0");
  /* Header length beyond the file. */
  memcpy(b, good, len);
  b[8] = 0xff;
  b[9] = 0x7f;
  npy_expect_buf(ctx, b, len, EFFML_E_FORMAT, "header_len=32767");
  /* v2 header length above the 1 MiB limit. */
  memcpy(b, good, len);
  b[6] = 2;
  b[8] = 0;
  b[9] = 0;
  b[10] = 0x20;
  b[11] = 0;
  npy_expect_buf(ctx, b, len, EFFML_E_FORMAT, "limit");
  /* Trailing bytes after the data are ignored, as numpy does. */
  memcpy(b, good, len);
  memset(b + len, 0xAB, 8);
  effml_tensor *t = NULL;
  ck_assert_int_eq(effml_io_npy_load_buffer(ctx, b, len + 8, &t), EFFML_OK);
  effml_tensor_free(t);
  free(b);
  free(good);
  effml_context_free(ctx);
}
END_TEST

START_TEST(npy_bad_headers) {
  effml_context *ctx = tu_ctx(1);
  static const char *const bad[] = {
      "",
      "[1, 2]",
      "{'descr': '<f4', 'fortran_order': False}",
      "{'descr': '<f4', 'shape': (2,)}",
      "{'fortran_order': False, 'shape': (2,)}",
      "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}",
      "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}",
      "{'descr': '<f4', 'fortran_order': 0, 'shape': (2,)}",
      "{'descr': '<f4', 'fortran_order': False, 'shape': (2)}",
      "{'descr': '<f4', 'fortran_order': False, 'shape': (2.5,)}",
      "{'descr': '<f4', 'fortran_order': False, 'shape': [2]}",
      "{'descr': '<f4', 'fortran_order': False, 'shape': (2,,)}",
      "{'descr': '<f4', 'fortran_order': False, 'shape': (2,)} x",
      "{'descr': '<f4', 'fortran_order': False, 'shape': (2,),",
      "{'descr': '<f4 , 'fortran_order': False, 'shape': (2,)}",
      "{'descr' '<f4', 'fortran_order': False, 'shape': (2,)}",
      "{descr: '<f4', 'fortran_order': False, 'shape': (2,)}",
      "{'descr': [('a', '<f4'), 'fortran_order': False, 'shape': (2,)}",
      "{'descr': '<f4', 'fortran_order': Falsey, 'shape': (2,)}",
  };
  for (size_t k = 0; k < sizeof bad / sizeof bad[0]; ++k) {
    effml_tensor *t = NULL;
    unsigned char buf[512] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
    size_t hl = strlen(bad[k]);
    memcpy(buf + 10, bad[k], hl);
    buf[8] = (unsigned char)hl;
    buf[9] = 0;
    memset(buf + 10 + hl, 0, 16);
    ck_assert_msg(effml_io_npy_load_buffer(ctx, buf, 10 + hl + 16, &t) == EFFML_E_FORMAT,
                  "header %zu '%s' gave '%s'", k, bad[k], effml_context_last_error(ctx));
    ck_assert_ptr_null(t);
  }
  /* A NUL byte inside the header. */
  unsigned char buf[128] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, 8, 0, '{', '}', 0, ' ', ' ',
                            ' ', ' ', '\n'};
  effml_tensor *t = NULL;
  ck_assert_int_eq(effml_io_npy_load_buffer(ctx, buf, 18, &t), EFFML_E_FORMAT);
  ck_assert_int_eq(effml_io_npy_load_buffer(ctx, buf, 12, &t), EFFML_E_FORMAT);
  ck_assert_ptr_null(t);
  effml_context_free(ctx);
}
END_TEST

START_TEST(npy_bad_args) {
  effml_context *ctx = tu_ctx(1);
  effml_tensor *t = NULL;
  unsigned char b[8] = {0};
  ck_assert_int_eq(effml_io_npy_load(NULL, DATA("npy_f4_r2.npy"), &t), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_io_npy_load(ctx, NULL, &t), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_io_npy_load(ctx, DATA("npy_f4_r2.npy"), NULL), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_io_npy_load_buffer(ctx, NULL, 8, &t), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_io_npy_load_buffer(ctx, b, 8, NULL), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_io_npy_load(ctx, DATA("does_not_exist.npy"), &t), EFFML_E_IO);
  ck_assert_ptr_nonnull(strstr(effml_context_last_error(ctx), "does_not_exist.npy"));
  ck_assert_int_eq(effml_io_npy_load(ctx, EFFML_TEST_DATA "/io", &t), EFFML_E_IO);
  ck_assert_ptr_null(t);
  const int64_t s[1] = {3};
  t = ref_tensor(ctx, EFFML_F32, 1, s);
  ck_assert_int_eq(effml_io_npy_save(NULL, TMP("x.npy"), t), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_io_npy_save(ctx, NULL, t), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_io_npy_save(ctx, TMP("x.npy"), NULL), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_io_npy_save(ctx, EFFML_TEST_TMP "/no/such/dir/x.npy", t), EFFML_E_IO);
  effml_tensor_free(t);
  effml_context_free(ctx);
}
END_TEST

/* ============================ safetensors ============================ */

static const int32_t ST_DTYPES[13] = {EFFML_BF16, EFFML_BOOL, EFFML_F16, EFFML_F32, EFFML_F64,
                                      EFFML_I16,  EFFML_I32,  EFFML_I64, EFFML_I8,  EFFML_U16,
                                      EFFML_U32,  EFFML_U64,  EFFML_U8};
static const char *const ST_NAMES[13] = {"t_bf16", "t_bool", "t_f16", "t_f32", "t_f64",
                                         "t_i16",  "t_i32",  "t_i64", "t_i8",  "t_u16",
                                         "t_u32",  "t_u64",  "t_u8"};

static effml_safetensors *st_open(effml_context *ctx, const char *path, int how) {
  effml_safetensors *st = NULL;
  effml_status rc;
  if (how == 2) {
    size_t len = 0;
    unsigned char *buf = tu_read_file(path, &len);
    ck_assert_ptr_nonnull(buf);
    rc = effml_safetensors_load_buffer(ctx, buf, len, &st);
    free(buf); /* the buffer was copied */
  } else {
    rc = effml_safetensors_load(ctx, path, how ? EFFML_IO_SAFETENSORS_MMAP : EFFML_IO_SAFETENSORS_COPY,
                                &st);
  }
  ck_assert_msg(rc == EFFML_OK, "%s (mode %d): %s", path, how, effml_context_last_error(ctx));
  return st;
}

START_TEST(st_minimal) {
  effml_context *ctx = tu_ctx(1);
  for (int how = 0; how < 3; ++how) {
    for (int f = 0; f < 2; ++f) {
      effml_safetensors *st =
          st_open(ctx, f ? DATA("st_ws_padded.safetensors") : DATA("st_minimal.safetensors"), how);
      ck_assert_int_eq(effml_safetensors_count(st), 1);
      ck_assert_str_eq(effml_safetensors_name(st, 0), "test");
      ck_assert_ptr_null(effml_safetensors_name(st, 1));
      ck_assert_ptr_null(effml_safetensors_name(st, -1));
      ck_assert_int_eq(effml_safetensors_metadata_count(st), 0);
      ck_assert_ptr_null(effml_safetensors_metadata(st, "format"));
      const effml_tensor *t = NULL;
      ck_assert_int_eq(effml_safetensors_get(ctx, st, "test", &t), EFFML_OK);
      ck_assert_int_eq(effml_tensor_dtype(t), EFFML_I32);
      ck_assert_int_eq(effml_tensor_ndim(t), 2);
      ck_assert_int_eq(effml_tensor_dim(t, 0), 2);
      const int32_t *p = (const int32_t *)effml_tensor_data_const(t);
      for (int i = 0; i < 4; ++i) ck_assert_int_eq(p[i], i);
      ck_assert_int_eq(effml_tensor_is_read_only(t), how == 1);
      effml_safetensors_free(st);
    }
  }
  /* The minimal file is exactly what our writer produces for it. */
  const int64_t s[2] = {2, 2};
  effml_tensor *t = NULL;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_I32, 2, s, &t), EFFML_OK);
  for (int i = 0; i < 4; ++i) ((int32_t *)effml_tensor_data(t))[i] = i;
  const char *name = "test";
  const effml_tensor *tt = t;
  ck_assert_int_eq(effml_safetensors_save(ctx, TMP("min.safetensors"), 1, &name, &tt, 0, NULL,
                                          NULL), EFFML_OK);
  /* 60 bytes of JSON are padded to 64 by the writer. */
  size_t len = 0;
  unsigned char *b = tu_read_file(TMP("min.safetensors"), &len);
  ck_assert_uint_eq(len, 8 + 64 + 16);
  ck_assert_uint_eq(b[0], 64);
  ck_assert_int_eq(memcmp(b + 8, "{\"test\":{\"dtype\":\"I32\",\"shape\":[2,2],\"data_offsets\":"
                          "[0,16]}}    ", 64), 0);
  free(b);
  effml_tensor_free(t);
  effml_context_free(ctx);
}
END_TEST

START_TEST(st_reference_writer) {
  effml_context *ctx = tu_ctx(1);
  for (int how = 0; how < 3; ++how) {
    effml_safetensors *st = st_open(ctx, DATA("st_all_dtypes.safetensors"), how);
    ck_assert_int_eq(effml_safetensors_count(st), 13);
    const effml_tensor *ts[13];
    for (int k = 0; k < 13; ++k) {
      ck_assert_int_eq(effml_safetensors_get(ctx, st, ST_NAMES[k], &ts[k]), EFFML_OK);
      check_ref(ctx, ts[k], ST_DTYPES[k], k % 9, SHAPE8);
    }
    /* Offset order = dtype descending, then name. */
    ck_assert_str_eq(effml_safetensors_name(st, 0), "t_u64");
    ck_assert_str_eq(effml_safetensors_name(st, 12), "t_bool");
    ck_assert_int_eq(effml_safetensors_metadata_count(st), 2);
    ck_assert_str_eq(effml_safetensors_metadata_key(st, 0), "format");
    ck_assert_str_eq(effml_safetensors_metadata_key(st, 1), "note");
    ck_assert_ptr_null(effml_safetensors_metadata_key(st, 2));
    ck_assert_str_eq(effml_safetensors_metadata(st, "format"), "pt");
    ck_assert_str_eq(effml_safetensors_metadata(st, "note"), "h\xc3\xa9llo \"q\"\n");
    /* Same tensors and metadata through our writer: byte-identical file. */
    const char *keys[2] = {"note", "format"};
    const char *vals[2] = {"h\xc3\xa9llo \"q\"\n", "pt"};
    ck_assert_int_eq(effml_safetensors_save(ctx, TMP("all.safetensors"), 13, ST_NAMES, ts, 2,
                                            keys, vals), EFFML_OK);
    assert_same_file(TMP("all.safetensors"), DATA("st_all_dtypes.safetensors"));
    effml_safetensors_free(st);
  }
  effml_safetensors *st = st_open(ctx, DATA("st_mixed.safetensors"), 0);
  static const char *const order[4] = {"c", "a.weight", "b", "a"};
  const effml_tensor *ts[4];
  for (int k = 0; k < 4; ++k) {
    ck_assert_str_eq(effml_safetensors_name(st, k), order[k]);
    ck_assert_int_eq(effml_safetensors_get(ctx, st, order[k], &ts[k]), EFFML_OK);
  }
  ck_assert_int_eq(effml_tensor_ndim(ts[0]), 0); /* scalar */
  ck_assert_int_eq(effml_tensor_numel(ts[0]), 1);
  ck_assert_double_eq(*(const double *)effml_tensor_data_const(ts[0]), -3.0);
  /* Shuffled input order gives the same file. */
  const char *names[4] = {"a", "b", "a.weight", "c"};
  const effml_tensor *shuffled[4] = {ts[3], ts[2], ts[1], ts[0]};
  ck_assert_int_eq(effml_safetensors_save(ctx, TMP("mixed.safetensors"), 4, names, shuffled, 0,
                                          NULL, NULL), EFFML_OK);
  assert_same_file(TMP("mixed.safetensors"), DATA("st_mixed.safetensors"));
  effml_safetensors_free(st);
  effml_context_free(ctx);
}
END_TEST

START_TEST(st_misaligned) {
  effml_context *ctx = tu_ctx(1);
  for (int how = 0; how < 3; ++how) {
    effml_safetensors *st = st_open(ctx, DATA("st_misaligned.safetensors"), how);
    const effml_tensor *a = NULL, *b = NULL;
    ck_assert_int_eq(effml_safetensors_get(ctx, st, "a", &a), EFFML_OK);
    ck_assert_int_eq(effml_safetensors_get(ctx, st, "b", &b), EFFML_OK);
    const unsigned char *pa = (const unsigned char *)effml_tensor_data_const(a);
    ck_assert(pa[0] == 1 && pa[1] == 0 && pa[2] == 1);
    ck_assert_uint_eq((uintptr_t)effml_tensor_data_const(b) % 4, 0); /* copied to align */
    const float *pb = (const float *)effml_tensor_data_const(b);
    ck_assert(pb[0] == -3.0f && pb[1] == -2.5f);
    ck_assert_int_eq(effml_tensor_is_read_only(b), how == 1);
    effml_safetensors_free(st);
  }
  effml_context_free(ctx);
}
END_TEST

START_TEST(st_round_trip_all) {
  effml_context *ctx = tu_ctx(1);
  for (int k = 0; k < 13; ++k) {
    for (int r = 0; r <= 8; ++r) {
      effml_tensor *t = ref_tensor(ctx, ST_DTYPES[k], r, SHAPE8);
      const int64_t s1[1] = {3};
      effml_tensor *odd = ref_tensor(ctx, EFFML_BOOL, 1, s1); /* shifts nothing: sorted last */
      const char *names[2] = {ST_NAMES[k], "zz_bool"};
      const effml_tensor *ts[2] = {t, odd};
      ck_assert_int_eq(effml_safetensors_save(ctx, TMP("rt.safetensors"), 2, names, ts, 0, NULL,
                                              NULL), EFFML_OK);
      for (int how = 0; how < 3; ++how) {
        effml_safetensors *st = st_open(ctx, TMP("rt.safetensors"), how);
        const effml_tensor *u = NULL;
        ck_assert_int_eq(effml_safetensors_get(ctx, st, ST_NAMES[k], &u), EFFML_OK);
        check_ref(ctx, u, ST_DTYPES[k], r, SHAPE8);
        ck_assert_int_eq(effml_safetensors_get(ctx, st, "zz_bool", &u), EFFML_OK);
        check_ref(ctx, u, EFFML_BOOL, 1, s1);
        effml_safetensors_free(st);
      }
      effml_tensor_free(odd);
      effml_tensor_free(t);
    }
  }
  /* Non-contiguous input, and a file with metadata only. */
  const int64_t s[2] = {3, 4};
  effml_tensor *t = ref_tensor(ctx, EFFML_F32, 2, s), *v = NULL, *c = NULL;
  ck_assert_int_eq(effml_tensor_transpose(ctx, t, 0, 1, &v), EFFML_OK);
  ck_assert_int_eq(effml_tensor_contiguous(ctx, v, &c), EFFML_OK);
  const char *nm = "w";
  const effml_tensor *vv = v;
  ck_assert_int_eq(effml_safetensors_save(ctx, TMP("view.safetensors"), 1, &nm, &vv, 0, NULL,
                                          NULL), EFFML_OK);
  effml_safetensors *st = st_open(ctx, TMP("view.safetensors"), 0);
  const effml_tensor *u = NULL;
  ck_assert_int_eq(effml_safetensors_get(ctx, st, "w", &u), EFFML_OK);
  ck_assert_int_eq(effml_tensor_dim(u, 0), 4);
  ck_assert_int_eq(memcmp(effml_tensor_data_const(u), effml_tensor_data_const(c), 48), 0);
  effml_safetensors_free(st);
  const char *k = "format", *val = "pt";
  ck_assert_int_eq(effml_safetensors_save(ctx, TMP("meta.safetensors"), 0, NULL, NULL, 1, &k,
                                          &val), EFFML_OK);
  st = st_open(ctx, TMP("meta.safetensors"), 1);
  ck_assert_int_eq(effml_safetensors_count(st), 0);
  ck_assert_str_eq(effml_safetensors_metadata(st, "format"), "pt");
  effml_safetensors_free(st);
  effml_tensor_free(c);
  effml_tensor_free(v);
  effml_tensor_free(t);
  effml_context_free(ctx);
}
END_TEST

/* Build a safetensors buffer: 8-byte N (or `n_override` if nonzero), the
 * header verbatim, `ndata` zero bytes. */
static size_t st_build(unsigned char *buf, size_t cap, const char *header, size_t hlen,
                       size_t ndata, uint64_t n_override) {
  ck_assert_uint_le(8 + hlen + ndata, cap);
  uint64_t n = n_override ? n_override : hlen;
  for (int i = 0; i < 8; ++i) buf[i] = (unsigned char)(n >> (8 * i));
  memcpy(buf + 8, header, hlen);
  memset(buf + 8 + hlen, 0, ndata);
  return 8 + hlen + ndata;
}

/* Expect `status` (and msg_part in the message) from the buffer loader and
 * from both file modes. */
static void st_expect_bytes(effml_context *ctx, const unsigned char *buf, size_t len,
                            effml_status status, const char *msg_part) {
  effml_safetensors *sentinel = (effml_safetensors *)(uintptr_t)0x1234;
  for (int how = 0; how < 3; ++how) {
    effml_safetensors *st = sentinel;
    effml_status rc;
    if (how == 2) {
      rc = effml_safetensors_load_buffer(ctx, buf, len, &st);
    } else {
      write_file(TMP("bad.safetensors"), buf, len);
      rc = effml_safetensors_load(ctx, TMP("bad.safetensors"),
                                  how ? EFFML_IO_SAFETENSORS_MMAP : EFFML_IO_SAFETENSORS_COPY, &st);
    }
    ck_assert_msg(rc == status, "mode %d: expected %d, got %d '%s'", how, status, rc,
                  effml_context_last_error(ctx));
    if (status == EFFML_OK) {
      effml_safetensors_free(st);
      st = sentinel;
    }
    ck_assert_ptr_eq(st, sentinel);
    if (msg_part)
      ck_assert_msg(strstr(effml_context_last_error(ctx), msg_part) != NULL, "message '%s' lacks '%s'",
                    effml_context_last_error(ctx), msg_part);
  }
}

static void st_expect(effml_context *ctx, const char *header, size_t ndata, effml_status status,
                      const char *msg_part) {
  unsigned char buf[1024];
  size_t len = st_build(buf, sizeof buf, header, strlen(header), ndata, 0);
  st_expect_bytes(ctx, buf, len, status, msg_part);
}

START_TEST(st_bad_framing) {
  effml_context *ctx = tu_ctx(1);
  unsigned char buf[1024];
  const char *h = "{\"test\":{\"dtype\":\"I32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}";
  size_t len = st_build(buf, sizeof buf, h, strlen(h), 16, 0);
  st_expect_bytes(ctx, buf, len, EFFML_OK, NULL);
  /* Too small for the length field; truncated data; header beyond the file. */
  st_expect_bytes(ctx, buf, 0, EFFML_E_FORMAT, "too small");
  st_expect_bytes(ctx, buf, 7, EFFML_E_FORMAT, "too small");
  st_expect_bytes(ctx, buf, 8, EFFML_E_FORMAT, "runs past the end");
  st_expect_bytes(ctx, buf, len - 1, EFFML_E_FORMAT, "test");
  st_expect_bytes(ctx, buf, 40, EFFML_E_FORMAT, "runs past the end");
  len = st_build(buf, sizeof buf, h, strlen(h), 16, 77);
  st_expect_bytes(ctx, buf, len, EFFML_E_FORMAT, "past the end");
  len = st_build(buf, sizeof buf, h, strlen(h), 16, 100000001);
  st_expect_bytes(ctx, buf, len, EFFML_E_FORMAT, "limit");
  len = st_build(buf, sizeof buf, h, strlen(h), 16, UINT64_MAX);
  st_expect_bytes(ctx, buf, len, EFFML_E_FORMAT, "limit");
  /* Trailing bytes after the last tensor (polyglot files). */
  st_expect(ctx, h, 17, EFFML_E_FORMAT, "cover 16 bytes");
  /* Header not UTF-8, not JSON, not an object, with trailing garbage, with a NUL. */
  st_expect(ctx, "{\"t\xff\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
            EFFML_E_FORMAT, "UTF-8");
  st_expect(ctx, "{\"\xc0\xaf\":1}", 0, EFFML_E_FORMAT, "UTF-8");       /* overlong */
  st_expect(ctx, "{\"\xed\xa0\x80\":1}", 0, EFFML_E_FORMAT, "UTF-8");   /* surrogate */
  st_expect(ctx, "[1, 2]", 0, EFFML_E_FORMAT, "not a JSON object");
  st_expect(ctx, "\"str\"", 0, EFFML_E_FORMAT, "not a JSON object");
  st_expect(ctx, "", 0, EFFML_E_FORMAT, "not a JSON object");
  st_expect(ctx, "{\"a\":", 0, EFFML_E_FORMAT, "not valid JSON");
  st_expect(ctx, "{} {}", 0, EFFML_E_FORMAT, "not valid JSON");
  unsigned char nul[64];
  len = st_build(nul, sizeof nul, "{}\0  ", 5, 0, 0);
  st_expect_bytes(ctx, nul, len, EFFML_E_FORMAT, "NUL");
  /* Empty object and whitespace are fine. */
  st_expect(ctx, "{}", 0, EFFML_OK, NULL);
  st_expect(ctx, " \t\r\n{ }  \n", 0, EFFML_OK, NULL);
  effml_context_free(ctx);
}
END_TEST

START_TEST(st_bad_entries) {
  effml_context *ctx = tu_ctx(1);
#define E(name, dt, shape, b, e) \
  "\"" name "\":{\"dtype\":\"" dt "\",\"shape\":" shape ",\"data_offsets\":[" #b "," #e "]}"
  /* Overlap, gap, past end, END < BEGIN, size disagrees with dtype x shape. */
  st_expect(ctx, "{" E("a", "F32", "[2]", 0, 8) "," E("b", "F32", "[2]", 4, 12) "}", 12,
            EFFML_E_FORMAT, "'b': data_offsets [4, 12] overlap");
  st_expect(ctx, "{" E("a", "F32", "[2]", 0, 8) "," E("b", "F32", "[2]", 12, 20) "}", 20,
            EFFML_E_FORMAT, "'b': data_offsets [12, 20] leave a gap");
  st_expect(ctx, "{" E("a", "F32", "[2]", 4, 12) "}", 12, EFFML_E_FORMAT, "gap");
  st_expect(ctx, "{" E("a", "F32", "[2]", 0, 8) "," E("b", "F32", "[2]", 8, 16) "}", 12,
            EFFML_E_FORMAT, "'b': data_offsets [8, 16] run past the end");
  st_expect(ctx, "{" E("a", "F32", "[2]", 8, 0) "}", 8, EFFML_E_FORMAT, "end before");
  st_expect(ctx, "{" E("a", "F32", "[3]", 0, 8) "}", 8, EFFML_E_FORMAT,
            "'a': data_offsets [0, 8] hold 8 bytes, but dtype F32 x shape needs 12");
  st_expect(ctx, "{" E("a", "U64", "[4294967296,4294967296]", 0, 8) "}", 8, EFFML_E_FORMAT,
            "needs more than");
  /* Sorted by offset regardless of the order in the JSON. */
  st_expect(ctx, "{" E("b", "F32", "[1]", 4, 8) "," E("a", "U8", "[4]", 0, 4) "}", 8, EFFML_OK,
            NULL);
  /* Dtypes. */
  st_expect(ctx, "{" E("a", "Q8", "[2]", 0, 2) "}", 2, EFFML_E_DTYPE, "unknown dtype 'Q8'");
  st_expect(ctx, "{" E("a", "F8_E4M3", "[2]", 0, 2) "}", 2, EFFML_E_DTYPE, "F8_E4M3");
  st_expect(ctx, "{" E("a", "F4", "[2]", 0, 1) "}", 1, EFFML_E_DTYPE, "F4");
  st_expect(ctx, "{" E("a", "C64", "[1]", 0, 8) "}", 8, EFFML_E_DTYPE, "C64");
  st_expect(ctx, "{\"a\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
            EFFML_E_FORMAT, "dtype is not a string");
  /* Duplicates. */
  st_expect(ctx, "{" E("a", "U8", "[1]", 0, 1) "," E("a", "U8", "[1]", 1, 2) "}", 2,
            EFFML_E_FORMAT, "duplicate tensor name 'a'");
  st_expect(ctx, "{\"__metadata__\":{},\"__metadata__\":{}}", 0, EFFML_E_FORMAT, "duplicate");
  st_expect(ctx, "{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0, EFFML_E_FORMAT,
            "duplicate __metadata__ key 'k'");
  st_expect(ctx, "{\"a\":{\"dtype\":\"U8\",\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}",
            1, EFFML_E_FORMAT, "repeats");
  /* Metadata must be a map of strings (null means none). */
  st_expect(ctx, "{\"__metadata__\":{\"k\":1}}", 0, EFFML_E_FORMAT, "__metadata__['k']");
  st_expect(ctx, "{\"__metadata__\":[\"k\"]}", 0, EFFML_E_FORMAT, "__metadata__");
  st_expect(ctx, "{\"__metadata__\":null}", 0, EFFML_OK, NULL);
  /* Malformed entries. */
  st_expect(ctx, "{\"a\":5}", 0, EFFML_E_FORMAT, "'a' is not a JSON object");
  st_expect(ctx, "{\"a\":{\"dtype\":\"U8\",\"shape\":[1]}}", 1, EFFML_E_FORMAT, "data_offsets");
  st_expect(ctx, "{\"a\":{\"dtype\":\"U8\",\"data_offsets\":[0,1]}}", 1, EFFML_E_FORMAT, "shape");
  st_expect(ctx, "{" E("a", "U8", "[-1]", 0, 1) "}", 1, EFFML_E_FORMAT, "shape[0] is negative (-1)");
  st_expect(ctx, "{" E("a", "U8", "[1.5]", 0, 1) "}", 1, EFFML_E_FORMAT,
            "shape[0] is not an integer (1.5)");
  /* integers from 2^53 on are rounded by the JSON parser (2^53 + 1 reads as 2^53): refused
   * for that reason, never checked as the rounded number */
  st_expect(ctx, "{" E("a", "U8", "[1,9007199254740993]", 0, 1) "}", 1, EFFML_E_FORMAT,
            "shape[1] is at least 2^53");
  st_expect(ctx, "{" E("a", "U8", "[9007199254740992]", 0, 1) "}", 1, EFFML_E_FORMAT,
            "cannot be read exactly");
  st_expect(ctx, "{" E("a", "U8", "[9007199254740991]", 0, 1) "}", 1, EFFML_E_FORMAT,
            "needs 9007199254740991"); /* 2^53 - 1 is read exactly */
  st_expect(ctx, "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,18446744073709551617]}}",
            1, EFFML_E_FORMAT, "data_offsets[1] is at least 2^53");
  st_expect(ctx, "{" E("a", "U8", "[[1]]", 0, 1) "}", 1, EFFML_E_FORMAT, "shape[0]");
  st_expect(ctx, "{" E("a", "U8", "{}", 0, 1) "}", 1, EFFML_E_FORMAT, "not an array");
  st_expect(ctx, "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1,2]}}", 1,
            EFFML_E_FORMAT, "BEGIN, END");
  st_expect(ctx, "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0]}}", 1,
            EFFML_E_FORMAT, "BEGIN, END");
  st_expect(ctx, "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,\"1\"]}}", 1,
            EFFML_E_FORMAT, "BEGIN, END");
  /* Unknown fields are ignored (as the reference reader does). */
  st_expect(ctx, "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"x\":[]}}", 1,
            EFFML_OK, NULL);
  /* Legal in safetensors, refused by libeffml: zero-size dims, > 8 dims. */
  st_expect(ctx, "{" E("w", "F32", "[0,3]", 0, 0) "}", 0, EFFML_E_SHAPE, "'w' has shape[0] = 0");
  st_expect(ctx, "{" E("w", "U8", "[1,1,1,1,1,1,1,1,1]", 0, 1) "}", 1, EFFML_E_UNSUPPORTED,
            "more than 8");
#undef E
  effml_context_free(ctx);
}
END_TEST

START_TEST(st_bad_args) {
  effml_context *ctx = tu_ctx(1);
  effml_safetensors *st = NULL;
  unsigned char b[16] = {0};
  ck_assert_int_eq(effml_safetensors_load(NULL, DATA("st_minimal.safetensors"), 0, &st),
                   EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_safetensors_load(ctx, NULL, 0, &st), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_safetensors_load(ctx, DATA("st_minimal.safetensors"), 0, NULL),
                   EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_safetensors_load(ctx, DATA("st_minimal.safetensors"), 7, &st),
                   EFFML_E_INVALID_ARG);
  ck_assert_ptr_nonnull(strstr(effml_context_last_error(ctx), "flags=7"));
  ck_assert_int_eq(effml_safetensors_load(ctx, DATA("nope.safetensors"), 0, &st), EFFML_E_IO);
  ck_assert_int_eq(effml_safetensors_load(ctx, EFFML_TEST_DATA "/io", 1, &st), EFFML_E_IO);
  ck_assert_int_eq(effml_safetensors_load_buffer(ctx, NULL, 16, &st), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_safetensors_load_buffer(ctx, b, 16, NULL), EFFML_E_INVALID_ARG);
  ck_assert_ptr_null(st);
  /* Accessors on NULL. */
  effml_safetensors_free(NULL);
  ck_assert_int_eq(effml_safetensors_count(NULL), 0);
  ck_assert_ptr_null(effml_safetensors_name(NULL, 0));
  ck_assert_ptr_null(effml_safetensors_metadata(NULL, "k"));
  ck_assert_int_eq(effml_safetensors_metadata_count(NULL), 0);
  ck_assert_ptr_null(effml_safetensors_metadata_key(NULL, 0));
  st = st_open(ctx, DATA("st_minimal.safetensors"), 0);
  const effml_tensor *t = NULL;
  ck_assert_int_eq(effml_safetensors_get(ctx, st, "missing", &t), EFFML_E_NOT_FOUND);
  ck_assert_ptr_nonnull(strstr(effml_context_last_error(ctx), "'missing'"));
  ck_assert_ptr_null(t);
  ck_assert_int_eq(effml_safetensors_get(ctx, NULL, "test", &t), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_safetensors_get(ctx, st, NULL, &t), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_safetensors_get(ctx, st, "test", NULL), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_safetensors_get(NULL, st, "test", &t), EFFML_E_INVALID_ARG);
  ck_assert_ptr_null(effml_safetensors_metadata(st, NULL));
  effml_safetensors_free(st);
  effml_context_free(ctx);
}
END_TEST

START_TEST(st_save_bad_args) {
  effml_context *ctx = tu_ctx(1);
  const int64_t s[1] = {2};
  effml_tensor *a = ref_tensor(ctx, EFFML_F32, 1, s), *b = ref_tensor(ctx, EFFML_I64, 1, s);
  const effml_tensor *ts[2] = {a, b};
  const effml_tensor *tnull[2] = {a, NULL};
  const char *ok[2] = {"a", "b"};
  const char *dup[2] = {"x", "x"};
  const char *empty[2] = {"a", ""};
  const char *nul[2] = {"a", NULL};
  const char *reserved[2] = {"a", "__metadata__"};
  const char *badutf[2] = {"a", "\xff"};
  const char *k2[2] = {"k", "k"}, *v2[2] = {"1", "2"};
  const char *path = TMP("keep.safetensors");
  /* An existing file is left intact by every failed save. */
  ck_assert_int_eq(effml_safetensors_save(ctx, path, 2, ok, ts, 0, NULL, NULL), EFFML_OK);
  size_t len0 = 0;
  unsigned char *before = tu_read_file(path, &len0);
  ck_assert_int_eq(effml_safetensors_save(NULL, path, 2, ok, ts, 0, NULL, NULL), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_safetensors_save(ctx, NULL, 2, ok, ts, 0, NULL, NULL), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_safetensors_save(ctx, path, -1, ok, ts, 0, NULL, NULL), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_safetensors_save(ctx, path, 2, NULL, ts, 0, NULL, NULL), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_safetensors_save(ctx, path, 2, ok, NULL, 0, NULL, NULL), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_safetensors_save(ctx, path, 2, ok, tnull, 0, NULL, NULL), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_safetensors_save(ctx, path, 2, dup, ts, 0, NULL, NULL), EFFML_E_INVALID_ARG);
  ck_assert_ptr_nonnull(strstr(effml_context_last_error(ctx), "duplicate tensor name 'x'"));
  const effml_tensor *same[2] = {a, a};
  ck_assert_int_eq(effml_safetensors_save(ctx, path, 2, dup, same, 0, NULL, NULL), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_safetensors_save(ctx, path, 2, empty, ts, 0, NULL, NULL), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_safetensors_save(ctx, path, 2, nul, ts, 0, NULL, NULL), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_safetensors_save(ctx, path, 2, reserved, ts, 0, NULL, NULL), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_safetensors_save(ctx, path, 2, badutf, ts, 0, NULL, NULL), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_safetensors_save(ctx, path, 2, ok, ts, 1, NULL, v2), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_safetensors_save(ctx, path, 2, ok, ts, 2, k2, v2), EFFML_E_INVALID_ARG);
  ck_assert_ptr_nonnull(strstr(effml_context_last_error(ctx), "duplicate metadata key 'k'"));
  ck_assert_int_eq(effml_safetensors_save(ctx, path, 2, ok, ts, 2, nul, v2), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_safetensors_save(ctx, path, 2, ok, ts, -1, NULL, NULL), EFFML_E_INVALID_ARG);
  size_t len1 = 0;
  unsigned char *after = tu_read_file(path, &len1);
  ck_assert(len0 == len1 && memcmp(before, after, len0) == 0);
  ck_assert_int_eq(effml_safetensors_save(ctx, EFFML_TEST_TMP "/no/such/dir/x.safetensors", 2,
                                          ok, ts, 0, NULL, NULL), EFFML_E_IO);
  /* Names with characters JSON must escape survive a round trip. */
  const char *odd[2] = {"q\"uote\\back\x01", "tab\tnew\nline \xe2\x82\xac"};
  ck_assert_int_eq(effml_safetensors_save(ctx, TMP("odd.safetensors"), 2, odd, ts, 0, NULL,
                                          NULL), EFFML_OK);
  effml_safetensors *st = st_open(ctx, TMP("odd.safetensors"), 0);
  const effml_tensor *t = NULL;
  ck_assert_int_eq(effml_safetensors_get(ctx, st, odd[0], &t), EFFML_OK);
  ck_assert_int_eq(effml_safetensors_get(ctx, st, odd[1], &t), EFFML_OK);
  effml_safetensors_free(st);
  free(before);
  free(after);
  effml_tensor_free(a);
  effml_tensor_free(b);
  effml_context_free(ctx);
}
END_TEST

/* ===================== allocation failures (every path) ===================== */

typedef effml_status (*io_op)(effml_context *ctx, void *out);

static effml_status op_npy_file(effml_context *ctx, void *out) {
  return effml_io_npy_load(ctx, DATA("npy_fortran_f4.npy"), (effml_tensor **)out);
}
static effml_status op_npy_buf(effml_context *ctx, void *out) {
  size_t len = 0;
  unsigned char *b = tu_read_file(DATA("npy_fortran_f4.npy"), &len);
  effml_status rc = effml_io_npy_load_buffer(ctx, b, len, (effml_tensor **)out);
  free(b);
  return rc;
}
static effml_status op_st_copy(effml_context *ctx, void *out) {
  return effml_safetensors_load(ctx, DATA("st_misaligned.safetensors"), EFFML_IO_SAFETENSORS_COPY,
                                (effml_safetensors **)out);
}
static effml_status op_st_mmap(effml_context *ctx, void *out) {
  return effml_safetensors_load(ctx, DATA("st_all_dtypes.safetensors"), EFFML_IO_SAFETENSORS_MMAP,
                                (effml_safetensors **)out);
}
static effml_status op_st_buf(effml_context *ctx, void *out) {
  size_t len = 0;
  unsigned char *b = tu_read_file(DATA("st_misaligned.safetensors"), &len);
  effml_status rc = effml_safetensors_load_buffer(ctx, b, len, (effml_safetensors **)out);
  free(b);
  return rc;
}

START_TEST(io_alloc_failures) {
  static const io_op ops[5] = {op_npy_file, op_npy_buf, op_st_copy, op_st_mmap, op_st_buf};
  for (int k = 0; k < 5; ++k) {
    int done = 0;
    for (int64_t n = 1; n < 1000 && !done; ++n) {
      tu_failing_alloc fa = {n, 0, 0};
      effml_context *ctx = tu_ctx_failing(&fa);
      void *sentinel = (void *)(uintptr_t)0x1234, *out = sentinel;
      effml_status rc = ops[k](ctx, &out);
      if (rc == EFFML_OK) {
        done = 1;
        if (k < 2) effml_tensor_free((effml_tensor *)out);
        else effml_safetensors_free((effml_safetensors *)out);
      } else {
        ck_assert_msg(rc == EFFML_E_NOMEM, "op %d, failing alloc %lld: %d '%s'", k, (long long)n,
                      rc, effml_context_last_error(ctx));
        ck_assert_ptr_eq(out, sentinel);
      }
      effml_context_free(ctx);
      ck_assert_msg(fa.live == 0, "op %d, failing alloc %lld leaks %lld blocks", k, (long long)n,
                    (long long)fa.live);
    }
    ck_assert(done);
  }
  /* Saves: fail each allocation; the destination is never created. */
  for (int k = 0; k < 2; ++k) {
    int done = 0;
    for (int64_t n = 1; n < 1000 && !done; ++n) {
      unlink(TMP("af.out"));
      tu_failing_alloc fa = {0, 0, 0};
      effml_context *ctx = tu_ctx_failing(&fa);
      const int64_t s[2] = {3, 4};
      effml_tensor *t = ref_tensor(ctx, EFFML_F32, 2, s), *v = NULL;
      ck_assert_int_eq(effml_tensor_transpose(ctx, t, 0, 1, &v), EFFML_OK);
      fa.count = 0;
      fa.fail_at = n;
      const char *names[2] = {"t", "v"};
      const effml_tensor *ts[2] = {t, v};
      const char *key = "format", *val = "pt";
      effml_status rc = k == 0 ? effml_io_npy_save(ctx, TMP("af.out"), v)
                               : effml_safetensors_save(ctx, TMP("af.out"), 2, names, ts, 1, &key,
                                                        &val);
      fa.fail_at = 0;
      if (rc == EFFML_OK) done = 1;
      else {
        ck_assert_int_eq(rc, EFFML_E_NOMEM);
        ck_assert_int_eq(access(TMP("af.out"), F_OK), -1);
      }
      effml_tensor_free(v);
      effml_tensor_free(t);
      effml_context_free(ctx);
      ck_assert_int_eq(fa.live, 0);
    }
    ck_assert(done);
  }
}
END_TEST

int main(void) {
  Suite *s = suite_create("io");
  TCase *npy = tcase_create("npy");
  tcase_add_test(npy, npy_numpy_dtypes);
  tcase_add_test(npy, npy_numpy_ranks);
  tcase_add_test(npy, npy_fortran_versions_padding);
  tcase_add_test(npy, npy_round_trip_all);
  tcase_add_test(npy, npy_bad_dtypes_and_shapes);
  tcase_add_test(npy, npy_bad_framing);
  tcase_add_test(npy, npy_bad_headers);
  tcase_add_test(npy, npy_bad_args);
  suite_add_tcase(s, npy);
  TCase *st = tcase_create("safetensors");
  tcase_add_test(st, st_minimal);
  tcase_add_test(st, st_reference_writer);
  tcase_add_test(st, st_misaligned);
  tcase_add_test(st, st_round_trip_all);
  tcase_add_test(st, st_bad_framing);
  tcase_add_test(st, st_bad_entries);
  tcase_add_test(st, st_bad_args);
  tcase_add_test(st, st_save_bad_args);
  suite_add_tcase(s, st);
  TCase *af = tcase_create("alloc");
  tcase_add_test(af, io_alloc_failures);
  suite_add_tcase(s, af);
  return tu_run(s);
}
