/* Core: context options and errors, status strings, versions, and tensors
 * (create, wrap, views, copies, conversion, element access) -- including every
 * bad input, each with the status it must return and a message that names the
 * argument and its value.  Reference values are exact identities (row-major
 * offsets, IEEE conversions) computed by hand; nothing here needs Python. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

/* A pointer value that is never a valid handle: outputs must stay untouched on error. */
#define SENTINEL ((effml_tensor *)(uintptr_t)0x5e5e5e5e)

/* The last error of ctx mentions `needle`. */
#define ck_msg_has(ctx, needle)                                                           \
  ck_assert_msg(strstr(effml_context_last_error(ctx), (needle)) != NULL,                  \
                "message \"%s\" does not mention \"%s\"", effml_context_last_error(ctx), \
                (needle))

/* Expect status `st` from `call`, the same status recorded in ctx, and a message naming `needle`. */
#define ck_fails(ctx, call, st, needle)           \
  do {                                            \
    effml_context_clear_error(ctx);               \
    ck_assert_int_eq((call), (st));               \
    ck_assert_int_eq(effml_context_last_status(ctx), (st)); \
    ck_msg_has(ctx, needle);                      \
  } while (0)

static double get2(effml_context *ctx, const effml_tensor *t, int64_t i, int64_t j) {
  int64_t idx[2] = {i, j};
  double v = NAN;
  ck_assert_int_eq(effml_tensor_get_f64(ctx, t, idx, &v), EFFML_OK);
  return v;
}

/* 2-D f32 tensor holding 0, 1, 2, ... in row-major order. */
static effml_tensor *iota2(effml_context *ctx, int64_t rows, int64_t cols) {
  effml_tensor *t = tu_f32(ctx, rows, cols, NULL);
  float *p = (float *)effml_tensor_data(t);
  for (int64_t i = 0; i < rows * cols; ++i) p[i] = (float)i;
  return t;
}

/* ======================================================================
 * Context, status, version
 * ====================================================================== */

START_TEST(context_options_defaults) {
  effml_context_options opt;
  memset(&opt, 0xab, sizeof opt);
  effml_context_options_init(&opt);
  ck_assert_uint_eq(opt.struct_size, sizeof opt);
  ck_assert_ptr_null(opt.alloc);
  ck_assert_ptr_null(opt.free);
  ck_assert_int_eq(opt.num_threads, 1);
  ck_assert_uint_eq(opt.seed, 0);
  ck_assert_ptr_null(opt.log);
  ck_assert_int_eq(opt.log_level, EFFML_CORE_LOG_WARN);
  effml_context_options_init(NULL); /* ignored, no crash */

  effml_context *ctx = NULL;
  ck_assert_int_eq(effml_context_create(NULL, &ctx), EFFML_OK);
  ck_assert_ptr_nonnull(ctx);
  ck_assert_int_eq(effml_context_num_threads(ctx), 1);
  ck_assert_str_eq(effml_context_last_error(ctx), "");
  ck_assert_int_eq(effml_context_last_status(ctx), EFFML_OK);
  effml_context_free(ctx);
  effml_context_free(NULL); /* no-op */
}
END_TEST

static void *unused_alloc(void *ud, size_t n) {
  (void)ud;
  (void)n;
  return NULL;
}
static void unused_free(void *ud, void *p) {
  (void)ud;
  (void)p;
}

START_TEST(context_bad_options) {
  effml_context_options opt;
  effml_context *ctx = (effml_context *)(uintptr_t)0x5e5e;
  effml_context_options_init(&opt);
  ck_assert_int_eq(effml_context_create(&opt, NULL), EFFML_E_INVALID_ARG);

  opt.struct_size = 0; /* not initialised */
  ck_assert_int_eq(effml_context_create(&opt, &ctx), EFFML_E_INVALID_ARG);
  opt.struct_size = 1u << 20; /* garbage */
  ck_assert_int_eq(effml_context_create(&opt, &ctx), EFFML_E_INVALID_ARG);

  effml_context_options_init(&opt);
  opt.num_threads = 0;
  ck_assert_int_eq(effml_context_create(&opt, &ctx), EFFML_E_INVALID_ARG);
  opt.num_threads = -3;
  ck_assert_int_eq(effml_context_create(&opt, &ctx), EFFML_E_INVALID_ARG);
  opt.num_threads = 1025;
  ck_assert_int_eq(effml_context_create(&opt, &ctx), EFFML_E_INVALID_ARG);

  effml_context_options_init(&opt);
  opt.free = unused_free; /* free without alloc */
  ck_assert_int_eq(effml_context_create(&opt, &ctx), EFFML_E_INVALID_ARG);
  opt.free = NULL;
  opt.alloc = unused_alloc; /* alloc without free */
  ck_assert_int_eq(effml_context_create(&opt, &ctx), EFFML_E_INVALID_ARG);
  ck_assert_ptr_eq(ctx, (effml_context *)(uintptr_t)0x5e5e); /* untouched */
}
END_TEST

/* An older caller knows only a prefix of the options: the rest takes defaults. */
START_TEST(context_options_prefix_and_future) {
  effml_context_options opt;
  effml_context_options_init(&opt);
  opt.num_threads = 3;
  opt.seed = 99;
  opt.log_level = EFFML_CORE_LOG_DEBUG;
  opt.struct_size = (uint32_t)offsetof(effml_context_options, seed); /* knows up to num_threads */
  effml_context *a = NULL;
  ck_assert_int_eq(effml_context_create(&opt, &a), EFFML_OK);
  ck_assert_int_eq(effml_context_num_threads(a), 3);
  effml_context *b = tu_ctx(0); /* default seed 0: same stream as a */
  ck_assert_uint_eq(effml_context_random_u64(a), effml_context_random_u64(b));
  effml_context_free(a);
  effml_context_free(b);

  /* A newer caller's larger struct: accepted when its newer fields are all 0 ("off"),
   * refused when one is set (never silently ignored: docs/conventions.md). */
  struct {
    effml_context_options o;
    uint64_t future[4];
  } big;
  memset(&big, 0x7f, sizeof big);
  effml_context_options_init(&big.o);
  big.o.struct_size = (uint32_t)sizeof big;
  big.o.num_threads = 2;
  a = NULL;
  ck_assert_int_eq(effml_context_create(&big.o, &a), EFFML_E_UNSUPPORTED);
  ck_assert_ptr_null(a);
  memset(big.future, 0, sizeof big.future);
  ck_assert_int_eq(effml_context_create(&big.o, &a), EFFML_OK);
  ck_assert_int_eq(effml_context_num_threads(a), 2);
  effml_context_free(a);
}
END_TEST

START_TEST(context_threads_seed_errors) {
  effml_context *ctx = tu_ctx(5);
  ck_fails(ctx, effml_context_set_num_threads(ctx, 0), EFFML_E_INVALID_ARG, "num_threads=0");
  ck_fails(ctx, effml_context_set_num_threads(ctx, 5000), EFFML_E_INVALID_ARG, "num_threads=5000");
  ck_assert_int_eq(effml_context_num_threads(ctx), 1);
  ck_assert_int_eq(effml_context_set_num_threads(ctx, 4), EFFML_OK);
  ck_assert_int_eq(effml_context_num_threads(ctx), 4);
  ck_assert_int_eq(effml_context_set_num_threads(NULL, 2), EFFML_E_INVALID_ARG);

  /* The last error stays until cleared; a success does not erase it. */
  ck_assert_int_eq(effml_context_set_num_threads(ctx, 0), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_context_set_num_threads(ctx, 2), EFFML_OK);
  ck_assert_int_eq(effml_context_last_status(ctx), EFFML_E_INVALID_ARG);
  effml_context_clear_error(ctx);
  ck_assert_int_eq(effml_context_last_status(ctx), EFFML_OK);
  ck_assert_str_eq(effml_context_last_error(ctx), "");
  effml_context_clear_error(NULL);
  ck_assert_ptr_nonnull(effml_context_last_error(NULL));
  ck_assert_int_ne(effml_context_last_status(NULL), EFFML_OK);

  /* Seeds: reproducible streams, distinct for distinct seeds. */
  effml_context *other = tu_ctx(5);
  uint64_t x[8], y[8];
  for (int i = 0; i < 8; ++i) x[i] = effml_context_random_u64(ctx);
  for (int i = 0; i < 8; ++i) y[i] = effml_context_random_u64(other);
  ck_assert_mem_eq(x, y, sizeof x);
  effml_context_set_seed(ctx, 5); /* re-seed == fresh context with that seed */
  ck_assert_uint_eq(effml_context_random_u64(ctx), x[0]);
  effml_context_set_seed(other, 6);
  ck_assert_uint_ne(effml_context_random_u64(other), x[0]);
  ck_assert_uint_ne(x[0], x[1]);
  ck_assert_uint_eq(effml_context_random_u64(NULL), 0);
  effml_context_set_seed(NULL, 1);
  effml_context_free(other);
  effml_context_free(ctx);
}
END_TEST

typedef struct log_sink {
  int calls;
  int32_t level;
  char last[256];
} log_sink;

static void sink_log(void *ud, int32_t level, const char *message) {
  log_sink *s = (log_sink *)ud;
  s->calls++;
  s->level = level;
  snprintf(s->last, sizeof s->last, "%s", message);
}

START_TEST(context_log_callback) {
  log_sink sink = {0, 0, ""};
  effml_context_options opt;
  effml_context_options_init(&opt);
  opt.log = sink_log;
  opt.log_user_data = &sink;
  effml_context *ctx = NULL;
  ck_assert_int_eq(effml_context_create(&opt, &ctx), EFFML_OK);
  int64_t shape[1] = {-2};
  effml_tensor *t = SENTINEL;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F32, 1, shape, &t), EFFML_E_SHAPE);
  ck_assert_int_eq(sink.calls, 1);
  ck_assert_int_eq(sink.level, EFFML_CORE_LOG_ERROR);
  ck_assert_str_eq(sink.last, effml_context_last_error(ctx));
  effml_context_free(ctx);

  /* log_level 0 silences everything. */
  opt.log_level = 0;
  sink.calls = 0;
  ck_assert_int_eq(effml_context_create(&opt, &ctx), EFFML_OK);
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F32, 1, shape, &t), EFFML_E_SHAPE);
  ck_assert_int_eq(sink.calls, 0);
  ck_assert_ptr_eq(t, SENTINEL);
  effml_context_free(ctx);
}
END_TEST

/* The caller's allocator sees every block, and everything is given back. */
START_TEST(context_allocator_hooks) {
  tu_failing_alloc fa = {0, 0, 0};
  effml_context *ctx = tu_ctx_failing(&fa);
  ck_assert_int_eq(fa.live, 1); /* the context itself */
  int64_t shape[3] = {4, 5, 6};
  effml_tensor *t = NULL, *v = NULL;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F64, 3, shape, &t), EFFML_OK);
  ck_assert_int_gt(fa.count, 0);
  ck_assert_int_gt(fa.live, 1);
  ck_assert_int_eq(effml_tensor_transpose(ctx, t, 0, 2, &v), EFFML_OK);
  effml_tensor_free(t);
  ck_assert_int_gt(fa.live, 1); /* the view keeps the storage */
  effml_tensor_free(v);
  ck_assert_int_eq(fa.live, 1);
  effml_context_free(ctx);
  ck_assert_int_eq(fa.live, 0);
}
END_TEST

/* A message longer than the context's 512-byte inline buffer is kept whole: a missing file under a
 * 2 000-character path is named in full (the strerror text after it), the log callback gets the same
 * text, a short error afterwards replaces it, and clear_error() forgets it (ASan: the block is freed). */
typedef struct long_log {
  int calls;
  size_t len;
  char tail[64];
} long_log;

static void long_log_fn(void *ud, int32_t level, const char *message) {
  long_log *s = (long_log *)ud;
  (void)level;
  s->calls++;
  s->len = strlen(message);
  snprintf(s->tail, sizeof s->tail, "%s", message + (s->len > 40 ? s->len - 40 : 0));
}

START_TEST(context_long_error_is_whole) {
  long_log sink = {0, 0, ""};
  effml_context_options opt;
  effml_context_options_init(&opt);
  opt.log = long_log_fn;
  opt.log_user_data = &sink;
  effml_context *ctx = NULL;
  ck_assert_int_eq(effml_context_create(&opt, &ctx), EFFML_OK);
  char path[2100];
  size_t n = (size_t)snprintf(path, sizeof path, "%s/", EFFML_TEST_TMP);
  while (n + 12 < 2000) n += (size_t)snprintf(path + n, sizeof path - n, "no_such_dir/");
  snprintf(path + n, sizeof path - n, "END.safetensors");
  effml_safetensors *st = NULL;
  ck_assert_int_eq(effml_safetensors_load(ctx, path, EFFML_IO_SAFETENSORS_COPY, &st), EFFML_E_IO);
  const char *m = effml_context_last_error(ctx);
  char want[2400];
  snprintf(want, sizeof want, "effml_safetensors_load: cannot open '%s': No such file or directory", path);
  ck_assert_uint_gt(strlen(want), 2000);
  ck_assert_str_eq(m, want);
  ck_assert_int_eq(sink.calls, 1);
  ck_assert_uint_eq(sink.len, strlen(want));
  ck_assert_str_eq(sink.tail, want + strlen(want) - 40);
  /* a short error replaces it */
  int64_t shape[1] = {-2};
  effml_tensor *t = NULL;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F32, 1, shape, &t), EFFML_E_SHAPE);
  m = effml_context_last_error(ctx);
  ck_assert_msg(strncmp(m, "effml_tensor_create: ", 21) == 0 && strlen(m) < 200, "%s", m);
  ck_assert_int_eq(effml_safetensors_load(ctx, path, EFFML_IO_SAFETENSORS_COPY, &st), EFFML_E_IO);
  ck_assert_str_eq(effml_context_last_error(ctx), want);
  effml_context_clear_error(ctx);
  ck_assert_str_eq(effml_context_last_error(ctx), "");
  ck_assert_int_eq(effml_context_last_status(ctx), EFFML_OK);
  ck_assert_int_eq(effml_safetensors_load(ctx, path, EFFML_IO_SAFETENSORS_COPY, &st), EFFML_E_IO);
  effml_context_free(ctx); /* frees the long message's block */
}
END_TEST

/* Only when the long message's block cannot be allocated is it cut: 511 bytes, ending in a note
 * that says so; the caller's allocator sees the block and gets it back. */
START_TEST(context_long_error_cut_only_without_memory) {
  tu_failing_alloc fa = {0, 0, 0};
  effml_context *ctx = tu_ctx_failing(&fa);
  char path[1200];
  size_t n = (size_t)snprintf(path, sizeof path, "%s/", EFFML_TEST_TMP);
  while (n + 12 < 1000) n += (size_t)snprintf(path + n, sizeof path - n, "no_such_dir/");
  snprintf(path + n, sizeof path - n, "x");
  effml_safetensors *st = NULL;
  const int64_t live0 = fa.live;
  ck_assert_int_eq(effml_safetensors_load(ctx, path, EFFML_IO_SAFETENSORS_COPY, &st), EFFML_E_IO);
  ck_assert_uint_gt(strlen(effml_context_last_error(ctx)), 1000);
  ck_assert_int_eq(fa.live, live0 + 1); /* the message's block, from the caller's allocator */
  fa.fail_at = fa.count + 1;            /* the next allocation fails: the next long message's block */
  ck_assert_int_eq(effml_safetensors_load(ctx, path, EFFML_IO_SAFETENSORS_COPY, &st), EFFML_E_IO);
  const char *m = effml_context_last_error(ctx);
  const char *cut = " [... message cut: out of memory]";
  ck_assert_uint_eq(strlen(m), 511);
  ck_assert_str_eq(m + 511 - strlen(cut), cut);
  ck_assert(strncmp(m, "effml_safetensors_load: cannot open '", 37) == 0);
  ck_assert_int_eq(fa.live, live0); /* the previous long message's block was given back */
  fa.fail_at = 0;
  effml_context_free(ctx);
  ck_assert_int_eq(fa.live, 0);
}
END_TEST

START_TEST(status_codes_and_strings) {
  /* Numbers are part of the ABI: never renumbered. */
  ck_assert_int_eq(EFFML_OK, 0);
  ck_assert_int_eq(EFFML_E_INVALID_ARG, -1);
  ck_assert_int_eq(EFFML_E_SHAPE, -2);
  ck_assert_int_eq(EFFML_E_DTYPE, -3);
  ck_assert_int_eq(EFFML_E_NOMEM, -4);
  ck_assert_int_eq(EFFML_E_IO, -5);
  ck_assert_int_eq(EFFML_E_FORMAT, -6);
  ck_assert_int_eq(EFFML_E_NUMERIC, -7);
  ck_assert_int_eq(EFFML_E_UNSUPPORTED, -8);
  ck_assert_int_eq(EFFML_E_NOT_FOUND, -9);
  ck_assert_int_eq(EFFML_E_OVERFLOW, -10);
  ck_assert_int_eq(EFFML_E_STATE, -11);
  ck_assert_int_eq(EFFML_E_RANGE, -12);
  ck_assert_str_eq(effml_status_str(EFFML_OK), "success");
  ck_assert_str_eq(effml_status_str(EFFML_E_NOMEM), "out of memory");
  ck_assert_str_eq(effml_status_str(EFFML_E_INVALID_ARG), "invalid argument");
  /* Every code has its own string; unknown ones a fixed fallback. */
  const char *unknown = effml_status_str(-1000);
  ck_assert_str_eq(unknown, "unknown status");
  ck_assert_str_eq(effml_status_str(1), unknown);
  for (effml_status a = 0; a >= EFFML_E_RANGE; --a) {
    ck_assert_ptr_nonnull(effml_status_str(a));
    ck_assert_str_ne(effml_status_str(a), unknown);
    for (effml_status b = a - 1; b >= EFFML_E_RANGE; --b)
      ck_assert_str_ne(effml_status_str(a), effml_status_str(b));
  }
}
END_TEST

START_TEST(version_macro_matches_runtime) {
  ck_assert_int_eq(effml_version_number(), EFFML_VERSION_NUMBER);
  ck_assert_str_eq(effml_version_string(), EFFML_VERSION_STRING);
  ck_assert_int_eq(EFFML_VERSION_NUMBER,
                   EFFML_VERSION_MAJOR * 10000 + EFFML_VERSION_MINOR * 100 + EFFML_VERSION_PATCH);
  char buf[64];
  snprintf(buf, sizeof buf, "%d.%d.%d", EFFML_VERSION_MAJOR, EFFML_VERSION_MINOR,
           EFFML_VERSION_PATCH);
  ck_assert_str_eq(buf, EFFML_VERSION_STRING);
}
END_TEST

/* ======================================================================
 * Tensor creation and queries
 * ====================================================================== */

START_TEST(dtype_sizes_and_names) {
  static const struct {
    int32_t dtype;
    size_t size;
    const char *name;
  } tab[] = {{EFFML_F32, 4, "f32"},  {EFFML_F64, 8, "f64"},  {EFFML_I32, 4, "i32"},
             {EFFML_I64, 8, "i64"},  {EFFML_U8, 1, "u8"},    {EFFML_I8, 1, "i8"},
             {EFFML_I16, 2, "i16"},  {EFFML_U16, 2, "u16"},  {EFFML_U32, 4, "u32"},
             {EFFML_U64, 8, "u64"},  {EFFML_F16, 2, "f16"},  {EFFML_BF16, 2, "bf16"},
             {EFFML_BOOL, 1, "bool"}};
  for (size_t i = 0; i < sizeof tab / sizeof tab[0]; ++i) {
    ck_assert_uint_eq(effml_tensor_dtype_size(tab[i].dtype), tab[i].size);
    ck_assert_str_eq(effml_tensor_dtype_name(tab[i].dtype), tab[i].name);
  }
  ck_assert_uint_eq(effml_tensor_dtype_size(0), 0);
  ck_assert_uint_eq(effml_tensor_dtype_size(99), 0);
  ck_assert_str_eq(effml_tensor_dtype_name(-1), "unknown");
}
END_TEST

START_TEST(tensor_create_every_dtype_zeroed) {
  effml_context *ctx = tu_ctx(0);
  for (int32_t dt = EFFML_F32; dt <= EFFML_BOOL; ++dt) {
    int64_t shape[3] = {2, 3, 5};
    effml_tensor *t = NULL;
    ck_assert_int_eq(effml_tensor_create(ctx, dt, 3, shape, &t), EFFML_OK);
    ck_assert_int_eq(effml_tensor_dtype(t), dt);
    ck_assert_int_eq(effml_tensor_ndim(t), 3);
    ck_assert_int_eq(effml_tensor_numel(t), 30);
    ck_assert_uint_eq(effml_tensor_nbytes(t), 30 * effml_tensor_dtype_size(dt));
    ck_assert_int_eq(effml_tensor_is_contiguous(t), 1);
    ck_assert_int_eq(effml_tensor_is_read_only(t), 0);
    const int64_t *sh = effml_tensor_shape(t), *st = effml_tensor_strides(t);
    ck_assert_int_eq(sh[0], 2);
    ck_assert_int_eq(sh[2], 5);
    ck_assert_int_eq(st[0], 15); /* row-major, in elements */
    ck_assert_int_eq(st[1], 5);
    ck_assert_int_eq(st[2], 1);
    ck_assert_int_eq(effml_tensor_dim(t, 1), 3);
    ck_assert_int_eq(effml_tensor_dim(t, -1), 5);
    ck_assert_int_eq(effml_tensor_dim(t, -3), 2);
    ck_assert_int_eq(effml_tensor_dim(t, 3), 0);
    ck_assert_int_eq(effml_tensor_dim(t, -4), 0);
    const unsigned char *p = (const unsigned char *)effml_tensor_data_const(t);
    ck_assert_ptr_eq(p, effml_tensor_data(t));
    for (size_t i = 0; i < effml_tensor_nbytes(t); ++i) ck_assert_uint_eq(p[i], 0);
    effml_tensor_free(t);
  }
  effml_context_free(ctx);
}
END_TEST

START_TEST(tensor_create_scalar_and_max_dims) {
  effml_context *ctx = tu_ctx(0);
  effml_tensor *s = NULL;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F64, 0, NULL, &s), EFFML_OK);
  ck_assert_int_eq(effml_tensor_ndim(s), 0);
  ck_assert_int_eq(effml_tensor_numel(s), 1);
  ck_assert_int_eq(effml_tensor_set_f64(ctx, s, NULL, 2.5), EFFML_OK);
  double v = 0;
  ck_assert_int_eq(effml_tensor_get_f64(ctx, s, NULL, &v), EFFML_OK);
  ck_assert_double_eq(v, 2.5);
  effml_tensor_free(s);

  int64_t shape[EFFML_TENSOR_MAX_DIMS] = {2, 1, 2, 1, 2, 1, 2, 3};
  effml_tensor *t = NULL;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_I16, EFFML_TENSOR_MAX_DIMS, shape, &t), EFFML_OK);
  ck_assert_int_eq(effml_tensor_numel(t), 48);
  ck_assert_int_eq(effml_tensor_strides(t)[0], 24);
  int64_t idx[EFFML_TENSOR_MAX_DIMS] = {1, 0, 1, 0, 1, 0, 1, 2};
  ck_assert_int_eq(effml_tensor_set_i64(ctx, t, idx, -7), EFFML_OK);
  ck_assert_int_eq(((const int16_t *)effml_tensor_data_const(t))[47], -7);
  effml_tensor_free(t);
  effml_context_free(ctx);
}
END_TEST

START_TEST(tensor_create_bad_input) {
  effml_context *ctx = tu_ctx(0);
  effml_tensor *t = SENTINEL;
  int64_t shape[EFFML_TENSOR_MAX_DIMS + 1] = {2, 2, 2, 2, 2, 2, 2, 2, 2};

  ck_assert_int_eq(effml_tensor_create(NULL, EFFML_F32, 1, shape, &t), EFFML_E_INVALID_ARG);
  ck_fails(ctx, effml_tensor_create(ctx, EFFML_F32, 1, shape, NULL), EFFML_E_INVALID_ARG, "'out'");
  ck_fails(ctx, effml_tensor_create(ctx, EFFML_F32, 2, NULL, &t), EFFML_E_INVALID_ARG, "'shape'");
  ck_fails(ctx, effml_tensor_create(ctx, 99, 1, shape, &t), EFFML_E_DTYPE, "dtype=99");
  ck_fails(ctx, effml_tensor_create(ctx, 0, 1, shape, &t), EFFML_E_DTYPE, "dtype=0");
  ck_fails(ctx, effml_tensor_create(ctx, EFFML_F32, EFFML_TENSOR_MAX_DIMS + 1, shape, &t), EFFML_E_SHAPE,
           "ndim=9");
  ck_fails(ctx, effml_tensor_create(ctx, EFFML_F32, -1, shape, &t), EFFML_E_SHAPE, "ndim=-1");

  int64_t zero[2] = {3, 0}, neg[3] = {1, 2, -4};
  ck_fails(ctx, effml_tensor_create(ctx, EFFML_F32, 2, zero, &t), EFFML_E_SHAPE, "shape[1]=0");
  ck_fails(ctx, effml_tensor_create(ctx, EFFML_U8, 3, neg, &t), EFFML_E_SHAPE, "shape[2]=-4");

  /* Byte sizes that overflow size_t (or int64_t) are refused before allocating. */
  int64_t huge1[2] = {INT64_MAX / 2, 4};
  int64_t huge2[3] = {1 << 22, 1 << 22, 1 << 22};
  int64_t huge3[1] = {INT64_MAX};
  ck_fails(ctx, effml_tensor_create(ctx, EFFML_F32, 2, huge1, &t), EFFML_E_OVERFLOW, "overflow");
  ck_fails(ctx, effml_tensor_create(ctx, EFFML_F64, 3, huge2, &t), EFFML_E_OVERFLOW, "overflow");
  ck_fails(ctx, effml_tensor_create(ctx, EFFML_F32, 1, huge3, &t), EFFML_E_OVERFLOW, "overflow");
  ck_assert_ptr_eq(t, SENTINEL);
  effml_context_free(ctx);
}
END_TEST

/* Every rank from 0 to EFFML_TENSOR_MAX_DIMS works; row-major strides are products of the trailing sizes. */
START_TEST(tensor_every_ndim) {
  effml_context *ctx = tu_ctx(0);
  int64_t shape[EFFML_TENSOR_MAX_DIMS] = {2, 3, 2, 1, 2, 3, 1, 2};
  int64_t numel = 1;
  for (int32_t nd = 0; nd <= EFFML_TENSOR_MAX_DIMS; ++nd) {
    effml_tensor *t = NULL;
    ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F32, nd, shape, &t), EFFML_OK);
    ck_assert_int_eq(effml_tensor_ndim(t), nd);
    ck_assert_int_eq(effml_tensor_numel(t), numel);
    int64_t stride = 1;
    for (int32_t d = nd - 1; d >= 0; --d) {
      ck_assert_int_eq(effml_tensor_strides(t)[d], stride);
      stride *= shape[d];
    }
    effml_tensor_free(t);
    if (nd < EFFML_TENSOR_MAX_DIMS) numel *= shape[nd];
  }
  effml_context_free(ctx);
}
END_TEST

/* A NULL context is refused cleanly by every fallible tensor function. */
START_TEST(tensor_null_context) {
  effml_context *ctx = tu_ctx(0);
  effml_tensor *x = iota2(ctx, 2, 2), *y = iota2(ctx, 2, 2), *out = SENTINEL;
  int64_t shape[2] = {2, 2}, idx[2] = {0, 0}, iv = 0;
  double v = 0;
  float buf[4];
  ck_assert_int_eq(effml_tensor_create(NULL, EFFML_F32, 2, shape, &out), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_tensor_wrap(NULL, EFFML_F32, 2, shape, NULL, buf, sizeof buf, 0, &out),
                   EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_tensor_slice(NULL, x, 0, 0, 1, 1, &out), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_tensor_reshape(NULL, x, 2, shape, &out), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_tensor_transpose(NULL, x, 0, 1, &out), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_tensor_contiguous(NULL, x, &out), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_tensor_convert(NULL, x, EFFML_F64, &out), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_tensor_copy(NULL, y, x), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_tensor_fill(NULL, y, 1), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_tensor_get_f64(NULL, x, idx, &v), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_tensor_set_f64(NULL, y, idx, 1), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_tensor_get_i64(NULL, x, idx, &iv), EFFML_E_INVALID_ARG);
  ck_assert_int_eq(effml_tensor_set_i64(NULL, y, idx, 1), EFFML_E_INVALID_ARG);
  ck_assert_ptr_eq(out, SENTINEL);
  ck_assert_double_eq(get2(ctx, y, 1, 1), 3); /* untouched */
  effml_tensor_free(x);
  effml_tensor_free(y);
  effml_context_free(ctx);
}
END_TEST

START_TEST(tensor_queries_accept_null) {
  ck_assert_int_eq(effml_tensor_dtype(NULL), 0);
  ck_assert_int_eq(effml_tensor_ndim(NULL), 0);
  ck_assert_int_eq(effml_tensor_dim(NULL, 0), 0);
  ck_assert_ptr_null(effml_tensor_shape(NULL));
  ck_assert_ptr_null(effml_tensor_strides(NULL));
  ck_assert_int_eq(effml_tensor_numel(NULL), 0);
  ck_assert_uint_eq(effml_tensor_nbytes(NULL), 0);
  ck_assert_int_eq(effml_tensor_is_contiguous(NULL), 0);
  ck_assert_int_eq(effml_tensor_is_read_only(NULL), 0);
  ck_assert_ptr_null(effml_tensor_data(NULL));
  ck_assert_ptr_null(effml_tensor_data_const(NULL));
  effml_tensor_free(NULL);
}
END_TEST

/* ======================================================================
 * Wrapping caller memory
 * ====================================================================== */

START_TEST(tensor_wrap_zero_copy) {
  effml_context *ctx = tu_ctx(0);
  double buf[6] = {1, 2, 3, 4, 5, 6};
  int64_t shape[2] = {2, 3};
  effml_tensor *t = NULL;
  ck_assert_int_eq(effml_tensor_wrap(ctx, EFFML_F64, 2, shape, NULL, buf, sizeof buf, 0, &t),
                   EFFML_OK);
  ck_assert_ptr_eq(effml_tensor_data(t), buf); /* no copy */
  ck_assert_double_eq(get2(ctx, t, 1, 2), 6);
  buf[4] = 50; /* caller writes are seen */
  ck_assert_double_eq(get2(ctx, t, 1, 1), 50);
  int64_t idx[2] = {0, 1};
  ck_assert_int_eq(effml_tensor_set_f64(ctx, t, idx, -2), EFFML_OK);
  ck_assert_double_eq(buf[1], -2); /* and ours reach the caller */
  effml_tensor_free(t);
  ck_assert_double_eq(buf[5], 6); /* caller memory is not freed (ASan would say) */

  /* Strided wrap: column 1 of a 3x4 int32 matrix. */
  int32_t m[12];
  for (int i = 0; i < 12; ++i) m[i] = i;
  int64_t cshape[1] = {3}, cstride[1] = {4};
  ck_assert_int_eq(effml_tensor_wrap(ctx, EFFML_I32, 1, cshape, cstride, m + 1,
                                     sizeof m - sizeof m[0], 0, &t),
                   EFFML_OK);
  ck_assert_int_eq(effml_tensor_is_contiguous(t), 0);
  int64_t v = 0, i2[1] = {2};
  ck_assert_int_eq(effml_tensor_get_i64(ctx, t, i2, &v), EFFML_OK);
  ck_assert_int_eq(v, 9);
  ck_assert_int_eq(effml_tensor_fill(ctx, t, -1), EFFML_OK);
  ck_assert_int_eq(m[1], -1);
  ck_assert_int_eq(m[5], -1);
  ck_assert_int_eq(m[9], -1);
  ck_assert_int_eq(m[2], 2); /* neighbours untouched */
  ck_assert_int_eq(m[10], 10);
  effml_tensor_free(t);

  /* Zero strides broadcast one element. */
  float one = 3.0f;
  int64_t bshape[2] = {4, 5}, bstride[2] = {0, 0};
  ck_assert_int_eq(effml_tensor_wrap(ctx, EFFML_F32, 2, bshape, bstride, &one, sizeof one, 1, &t),
                   EFFML_OK);
  ck_assert_double_eq(get2(ctx, t, 3, 4), 3.0);
  effml_tensor_free(t);
  effml_context_free(ctx);
}
END_TEST

START_TEST(tensor_wrap_bad_input) {
  effml_context *ctx = tu_ctx(0);
  float buf[8] = {0};
  int64_t shape[2] = {2, 4}, big[2] = {3, 4};
  effml_tensor *t = SENTINEL;
  ck_fails(ctx, effml_tensor_wrap(ctx, EFFML_F32, 2, shape, NULL, NULL, sizeof buf, 0, &t),
           EFFML_E_INVALID_ARG, "'data'");
  ck_fails(ctx, effml_tensor_wrap(ctx, EFFML_F32, 2, shape, NULL, buf, sizeof buf, 0, NULL),
           EFFML_E_INVALID_ARG, "'out'");
  ck_fails(ctx, effml_tensor_wrap(ctx, EFFML_F32, 2, big, NULL, buf, sizeof buf, 0, &t),
           EFFML_E_INVALID_ARG, "data_bytes=32");
  ck_fails(ctx, effml_tensor_wrap(ctx, EFFML_F32, 2, shape, NULL, buf, sizeof buf - 1, 0, &t),
           EFFML_E_INVALID_ARG, "data_bytes=31");
  ck_fails(ctx, effml_tensor_wrap(ctx, EFFML_F32, 2, shape, NULL, (char *)buf + 2, 24, 0, &t),
           EFFML_E_INVALID_ARG, "aligned");
  int64_t neg[2] = {4, -1}, wide[2] = {5, 1};
  ck_fails(ctx, effml_tensor_wrap(ctx, EFFML_F32, 2, shape, neg, buf, sizeof buf, 0, &t),
           EFFML_E_INVALID_ARG, "strides[1]=-1");
  /* Strides that reach past the buffer: last element at 1*5 + 3 = 8 >= 8. */
  ck_fails(ctx, effml_tensor_wrap(ctx, EFFML_F32, 2, shape, wide, buf, sizeof buf, 0, &t),
           EFFML_E_INVALID_ARG, "data_bytes");
  int64_t huge_stride[2] = {INT64_MAX / 2, 1};
  ck_assert_int_ne(
      effml_tensor_wrap(ctx, EFFML_F32, 2, shape, huge_stride, buf, sizeof buf, 0, &t), EFFML_OK);
  int64_t zero[2] = {2, 0};
  ck_fails(ctx, effml_tensor_wrap(ctx, EFFML_F32, 2, zero, NULL, buf, sizeof buf, 0, &t),
           EFFML_E_SHAPE, "shape[1]=0");
  ck_fails(ctx, effml_tensor_wrap(ctx, 42, 2, shape, NULL, buf, sizeof buf, 0, &t), EFFML_E_DTYPE,
           "dtype=42");
  ck_fails(ctx, effml_tensor_wrap(ctx, EFFML_F32, 9, shape, NULL, buf, sizeof buf, 0, &t),
           EFFML_E_SHAPE, "ndim=9");
  ck_assert_ptr_eq(t, SENTINEL);
  effml_context_free(ctx);
}
END_TEST

START_TEST(tensor_wrap_read_only_refuses_writes) {
  effml_context *ctx = tu_ctx(0);
  const float src[6] = {1, 2, 3, 4, 5, 6};
  float copy[6];
  memcpy(copy, src, sizeof copy);
  int64_t shape[2] = {2, 3}, idx[2] = {0, 0};
  effml_tensor *t = NULL, *view = NULL, *c = NULL, *w = tu_f32(ctx, 2, 3, NULL);
  ck_assert_int_eq(effml_tensor_wrap(ctx, EFFML_F32, 2, shape, NULL, copy, sizeof copy, 1, &t),
                   EFFML_OK);
  ck_assert_int_eq(effml_tensor_is_read_only(t), 1);
  ck_assert_ptr_null(effml_tensor_data(t));
  ck_assert_ptr_eq(effml_tensor_data_const(t), copy);
  ck_fails(ctx, effml_tensor_fill(ctx, t, 0), EFFML_E_INVALID_ARG, "read-only");
  ck_fails(ctx, effml_tensor_set_f64(ctx, t, idx, 9), EFFML_E_INVALID_ARG, "read-only");
  ck_fails(ctx, effml_tensor_copy(ctx, t, w), EFFML_E_INVALID_ARG, "read-only");
  /* Views inherit read-only; copies are the caller's and writable. */
  ck_assert_int_eq(effml_tensor_transpose(ctx, t, 0, 1, &view), EFFML_OK);
  ck_assert_int_eq(effml_tensor_is_read_only(view), 1);
  ck_fails(ctx, effml_tensor_fill(ctx, view, 0), EFFML_E_INVALID_ARG, "read-only");
  ck_assert_int_eq(effml_tensor_contiguous(ctx, view, &c), EFFML_OK);
  ck_assert_int_eq(effml_tensor_is_read_only(c), 0);
  ck_assert_int_eq(effml_tensor_fill(ctx, c, 0), EFFML_OK);
  /* Reading into a writable tensor is fine. */
  ck_assert_int_eq(effml_tensor_copy(ctx, w, t), EFFML_OK);
  ck_assert_double_eq(get2(ctx, w, 1, 2), 6);
  ck_assert_mem_eq(copy, src, sizeof copy); /* never written */
  effml_tensor_free(c);
  effml_tensor_free(view);
  effml_tensor_free(t);
  effml_tensor_free(w);
  effml_context_free(ctx);
}
END_TEST

/* ======================================================================
 * Views
 * ====================================================================== */

START_TEST(tensor_slice_views) {
  effml_context *ctx = tu_ctx(0);
  effml_tensor *x = iota2(ctx, 4, 3); /* x[i][j] = 3i + j */
  effml_tensor *rows = NULL, *cols = NULL, *step = NULL;
  ck_assert_int_eq(effml_tensor_slice(ctx, x, 0, 1, 3, 1, &rows), EFFML_OK);
  ck_assert_int_eq(effml_tensor_dim(rows, 0), 2);
  ck_assert_int_eq(effml_tensor_dim(rows, 1), 3);
  ck_assert_int_eq(effml_tensor_is_contiguous(rows), 1);
  ck_assert_double_eq(get2(ctx, rows, 0, 0), 3);
  ck_assert_double_eq(get2(ctx, rows, 1, 2), 8);

  ck_assert_int_eq(effml_tensor_slice(ctx, x, 1, 1, 3, 1, &cols), EFFML_OK);
  ck_assert_int_eq(effml_tensor_is_contiguous(cols), 0);
  ck_assert_int_eq(effml_tensor_strides(cols)[0], 3);
  ck_assert_double_eq(get2(ctx, cols, 3, 1), 11);

  /* rows 0, 2 (step 2 over [0, 4)); then free the source: the view lives on. */
  ck_assert_int_eq(effml_tensor_slice(ctx, x, 0, 0, 4, 2, &step), EFFML_OK);
  ck_assert_int_eq(effml_tensor_dim(step, 0), 2);
  ck_assert_int_eq(effml_tensor_strides(step)[0], 6);
  int64_t idx[2] = {1, 1};
  ck_assert_int_eq(effml_tensor_set_f64(ctx, step, idx, -1), EFFML_OK); /* x[2][1] */
  ck_assert_double_eq(get2(ctx, x, 2, 1), -1);
  ck_assert_double_eq(get2(ctx, cols, 2, 0), -1); /* views share storage */
  effml_tensor_free(x);
  ck_assert_double_eq(get2(ctx, step, 1, 2), 8);
  /* Odd count: [1, 4) step 2 -> rows 1, 3. */
  effml_tensor *odd = NULL;
  ck_assert_int_eq(effml_tensor_slice(ctx, cols, 0, 1, 4, 2, &odd), EFFML_OK);
  ck_assert_int_eq(effml_tensor_dim(odd, 0), 2);
  ck_assert_double_eq(get2(ctx, odd, 1, 0), 10);
  effml_tensor_free(odd);
  effml_tensor_free(rows);
  effml_tensor_free(cols);
  effml_tensor_free(step);
  effml_context_free(ctx);
}
END_TEST

START_TEST(tensor_slice_bad_input) {
  effml_context *ctx = tu_ctx(0);
  effml_tensor *x = iota2(ctx, 4, 3), *v = SENTINEL;
  ck_fails(ctx, effml_tensor_slice(ctx, NULL, 0, 0, 1, 1, &v), EFFML_E_INVALID_ARG, "'src'");
  ck_fails(ctx, effml_tensor_slice(ctx, x, 0, 0, 1, 1, NULL), EFFML_E_INVALID_ARG, "'out'");
  ck_fails(ctx, effml_tensor_slice(ctx, x, 2, 0, 1, 1, &v), EFFML_E_RANGE, "dim=2");
  ck_fails(ctx, effml_tensor_slice(ctx, x, -1, 0, 1, 1, &v), EFFML_E_RANGE, "dim=-1");
  ck_fails(ctx, effml_tensor_slice(ctx, x, 0, 0, 2, 0, &v), EFFML_E_INVALID_ARG, "step=0");
  ck_fails(ctx, effml_tensor_slice(ctx, x, 0, 2, 2, 1, &v), EFFML_E_RANGE, "start=2");
  ck_fails(ctx, effml_tensor_slice(ctx, x, 0, 0, 5, 1, &v), EFFML_E_RANGE, "stop=5");
  ck_fails(ctx, effml_tensor_slice(ctx, x, 0, -1, 2, 1, &v), EFFML_E_RANGE, "start=-1");
  ck_assert_ptr_eq(v, SENTINEL);
  effml_tensor_free(x);
  effml_context_free(ctx);
}
END_TEST

START_TEST(tensor_reshape_views) {
  effml_context *ctx = tu_ctx(0);
  effml_tensor *x = iota2(ctx, 2, 6), *r = NULL, *flat = NULL, *s = NULL;
  int64_t sh[3] = {3, -1, 2};
  ck_assert_int_eq(effml_tensor_reshape(ctx, x, 3, sh, &r), EFFML_OK);
  ck_assert_int_eq(effml_tensor_dim(r, 1), 2); /* inferred */
  ck_assert_ptr_eq(effml_tensor_data_const(r), effml_tensor_data_const(x)); /* no copy */
  int64_t idx[3] = {2, 1, 0};
  double v = 0;
  ck_assert_int_eq(effml_tensor_get_f64(ctx, r, idx, &v), EFFML_OK);
  ck_assert_double_eq(v, 10); /* 2*4 + 1*2 + 0 */
  int64_t one[1] = {-1};
  ck_assert_int_eq(effml_tensor_reshape(ctx, x, 1, one, &flat), EFFML_OK);
  ck_assert_int_eq(effml_tensor_numel(flat), 12);
  ck_assert_int_eq(effml_tensor_ndim(flat), 1);
  /* One element to a scalar (ndim 0). */
  effml_tensor *e = NULL;
  ck_assert_int_eq(effml_tensor_slice(ctx, flat, 0, 5, 6, 1, &e), EFFML_OK);
  ck_assert_int_eq(effml_tensor_reshape(ctx, e, 0, NULL, &s), EFFML_OK);
  ck_assert_int_eq(effml_tensor_get_f64(ctx, s, NULL, &v), EFFML_OK);
  ck_assert_double_eq(v, 5);
  effml_tensor_free(e);
  effml_tensor_free(s);
  effml_tensor_free(flat);
  effml_tensor_free(r);
  effml_tensor_free(x);
  effml_context_free(ctx);
}
END_TEST

START_TEST(tensor_reshape_bad_input) {
  effml_context *ctx = tu_ctx(0);
  effml_tensor *x = iota2(ctx, 2, 6), *t = NULL, *v = SENTINEL;
  int64_t two_infer[2] = {-1, -1}, wrong[2] = {5, 2}, zero[2] = {0, 12}, big[2] = {13, 1};
  int64_t nine[9] = {1, 1, 1, 1, 1, 1, 1, 2, 6}, notdiv[2] = {-1, 5};
  ck_fails(ctx, effml_tensor_reshape(ctx, x, 2, two_infer, &v), EFFML_E_SHAPE, "-1");
  ck_fails(ctx, effml_tensor_reshape(ctx, x, 2, wrong, &v), EFFML_E_SHAPE, "10 elements");
  ck_fails(ctx, effml_tensor_reshape(ctx, x, 2, zero, &v), EFFML_E_SHAPE, "shape[0]=0");
  ck_fails(ctx, effml_tensor_reshape(ctx, x, 2, big, &v), EFFML_E_SHAPE, "shape[0]=13");
  ck_fails(ctx, effml_tensor_reshape(ctx, x, 9, nine, &v), EFFML_E_SHAPE, "ndim=9");
  ck_fails(ctx, effml_tensor_reshape(ctx, x, 2, notdiv, &v), EFFML_E_SHAPE, "12 elements");
  ck_fails(ctx, effml_tensor_reshape(ctx, x, 2, NULL, &v), EFFML_E_INVALID_ARG, "'shape'");
  /* A transposed view is not contiguous: reshape refuses and says what to do. */
  ck_assert_int_eq(effml_tensor_transpose(ctx, x, 0, 1, &t), EFFML_OK);
  int64_t flat[1] = {12};
  ck_fails(ctx, effml_tensor_reshape(ctx, t, 1, flat, &v), EFFML_E_SHAPE, "contiguous");
  ck_assert_ptr_eq(v, SENTINEL);
  effml_tensor_free(t);
  effml_tensor_free(x);
  effml_context_free(ctx);
}
END_TEST

START_TEST(tensor_transpose_and_contiguous) {
  effml_context *ctx = tu_ctx(0);
  effml_tensor *x = iota2(ctx, 2, 3), *t = NULL, *c = NULL, *v = SENTINEL;
  ck_assert_int_eq(effml_tensor_transpose(ctx, x, 0, 1, &t), EFFML_OK);
  ck_assert_int_eq(effml_tensor_dim(t, 0), 3);
  ck_assert_int_eq(effml_tensor_dim(t, 1), 2);
  ck_assert_int_eq(effml_tensor_strides(t)[0], 1);
  ck_assert_int_eq(effml_tensor_strides(t)[1], 3);
  ck_assert_int_eq(effml_tensor_is_contiguous(t), 0);
  ck_assert_double_eq(get2(ctx, t, 2, 1), 5); /* x[1][2] */
  ck_assert_int_eq(effml_tensor_contiguous(ctx, t, &c), EFFML_OK);
  ck_assert_int_eq(effml_tensor_is_contiguous(c), 1);
  const float expect[6] = {0, 3, 1, 4, 2, 5};
  ck_assert_mem_eq(effml_tensor_data_const(c), expect, sizeof expect);
  ck_assert_ptr_ne(effml_tensor_data_const(c), effml_tensor_data_const(x)); /* a copy */
  ck_fails(ctx, effml_tensor_transpose(ctx, x, 0, 2, &v), EFFML_E_RANGE, "(0, 2)");
  ck_fails(ctx, effml_tensor_transpose(ctx, x, -1, 0, &v), EFFML_E_RANGE, "ndim=2");
  ck_fails(ctx, effml_tensor_transpose(ctx, NULL, 0, 1, &v), EFFML_E_INVALID_ARG, "'src'");
  ck_fails(ctx, effml_tensor_contiguous(ctx, NULL, &v), EFFML_E_INVALID_ARG, "'src'");
  ck_fails(ctx, effml_tensor_contiguous(ctx, x, NULL), EFFML_E_INVALID_ARG, "'out'");
  ck_assert_ptr_eq(v, SENTINEL);
  /* Transpose of the same dim is the identity view. */
  effml_tensor *same = NULL;
  ck_assert_int_eq(effml_tensor_transpose(ctx, x, 1, 1, &same), EFFML_OK);
  ck_assert_int_eq(effml_tensor_is_contiguous(same), 1);
  effml_tensor_free(same);
  effml_tensor_free(c);
  effml_tensor_free(t);
  effml_tensor_free(x);
  effml_context_free(ctx);
}
END_TEST

/* An 8-d permutation through views and contiguous(): every element lands
 * where the stride arithmetic says. */
START_TEST(tensor_eight_dims_permuted) {
  effml_context *ctx = tu_ctx(0);
  int64_t shape[8] = {2, 3, 1, 2, 2, 1, 3, 2};
  effml_tensor *x = NULL, *a = NULL, *b = NULL, *c = NULL;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_I32, 8, shape, &x), EFFML_OK);
  int32_t *p = (int32_t *)effml_tensor_data(x);
  int64_t n = effml_tensor_numel(x);
  for (int64_t i = 0; i < n; ++i) p[i] = (int32_t)i;
  ck_assert_int_eq(effml_tensor_transpose(ctx, x, 0, 7, &a), EFFML_OK);
  ck_assert_int_eq(effml_tensor_transpose(ctx, a, 1, 6, &b), EFFML_OK);
  ck_assert_int_eq(effml_tensor_contiguous(ctx, b, &c), EFFML_OK);
  const int32_t *q = (const int32_t *)effml_tensor_data_const(c);
  const int64_t *xs = effml_tensor_strides(x);
  /* c[i0..i7] == x[i7, i6, i2, i3, i4, i5, i1, i0] */
  int64_t cs[8] = {2, 3, 1, 2, 2, 1, 3, 2}, k = 0;
  ck_assert_mem_eq(effml_tensor_shape(c), cs, sizeof cs);
  for (int64_t i0 = 0; i0 < 2; ++i0)
    for (int64_t i1 = 0; i1 < 3; ++i1)
      for (int64_t i3 = 0; i3 < 2; ++i3)
        for (int64_t i4 = 0; i4 < 2; ++i4)
          for (int64_t i6 = 0; i6 < 3; ++i6)
            for (int64_t i7 = 0; i7 < 2; ++i7) {
              int64_t off = i7 * xs[0] + i6 * xs[1] + i3 * xs[3] + i4 * xs[4] + i1 * xs[6] +
                            i0 * xs[7];
              ck_assert_int_eq(q[k++], p[off]);
            }
  ck_assert_int_eq(k, n);
  effml_tensor_free(c);
  effml_tensor_free(b);
  effml_tensor_free(a);
  effml_tensor_free(x);
  effml_context_free(ctx);
}
END_TEST

/* ======================================================================
 * Conversion, copy, fill, element access
 * ====================================================================== */

START_TEST(tensor_convert_rules) {
  effml_context *ctx = tu_ctx(0);
  const float v[6] = {-1.7f, -0.5f, 0.0f, 0.5f, 2.9f, 127.0f};
  effml_tensor *x = tu_f32(ctx, 2, 3, v), *i = NULL, *d = NULL, *u = NULL, *bad = SENTINEL;
  ck_assert_int_eq(effml_tensor_convert(ctx, x, EFFML_I32, &i), EFFML_OK);
  const int32_t expect_i[6] = {-1, 0, 0, 0, 2, 127}; /* truncation toward zero */
  ck_assert_mem_eq(effml_tensor_data_const(i), expect_i, sizeof expect_i);
  ck_assert_int_eq(effml_tensor_convert(ctx, x, EFFML_F64, &d), EFFML_OK);
  ck_assert_double_eq(((const double *)effml_tensor_data_const(d))[0], (double)-1.7f);
  ck_assert_int_eq(effml_tensor_convert(ctx, x, EFFML_I8, &u), EFFML_OK);
  ck_assert_int_eq(((const int8_t *)effml_tensor_data_const(u))[5], 127);
  effml_tensor_free(u);

  /* Out of range for the target: refused with the value, out untouched. */
  ck_fails(ctx, effml_tensor_convert(ctx, x, EFFML_U8, &bad), EFFML_E_NUMERIC, "-1.7");
  ck_fails(ctx, effml_tensor_convert(ctx, d, EFFML_BOOL, &bad), EFFML_E_NUMERIC, "bool");
  float nan_inf[2] = {NAN, INFINITY};
  effml_tensor *ni = tu_f32(ctx, 1, 2, nan_inf);
  ck_fails(ctx, effml_tensor_convert(ctx, ni, EFFML_I64, &bad), EFFML_E_NUMERIC, "i64");
  ck_fails(ctx, effml_tensor_convert(ctx, x, 77, &bad), EFFML_E_DTYPE, "dtype=77");
  ck_fails(ctx, effml_tensor_convert(ctx, x, EFFML_F32, NULL), EFFML_E_INVALID_ARG, "'out'");
  ck_assert_ptr_eq(bad, SENTINEL);

  /* Integers convert exactly, even beyond 2^53. */
  int64_t big = (INT64_C(1) << 62) + 1, idx[1] = {0}, shape[1] = {1}, got = 0;
  effml_tensor *b64 = NULL, *u64 = NULL, *i32 = NULL;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_I64, 1, shape, &b64), EFFML_OK);
  ck_assert_int_eq(effml_tensor_set_i64(ctx, b64, idx, big), EFFML_OK);
  ck_assert_int_eq(effml_tensor_convert(ctx, b64, EFFML_U64, &u64), EFFML_OK);
  ck_assert_int_eq(effml_tensor_get_i64(ctx, u64, idx, &got), EFFML_OK);
  ck_assert_int_eq(got, big);
  ck_fails(ctx, effml_tensor_convert(ctx, b64, EFFML_I32, &i32), EFFML_E_NUMERIC, "i32");
  effml_tensor_free(u64);
  effml_tensor_free(b64);
  effml_tensor_free(ni);
  effml_tensor_free(d);
  effml_tensor_free(i);
  effml_tensor_free(x);
  effml_context_free(ctx);
}
END_TEST

/* f16/bf16 bit patterns (IEEE 754 binary16; bfloat16 = top half of binary32). */
START_TEST(tensor_convert_half_precision) {
  effml_context *ctx = tu_ctx(0);
  const float v[8] = {1.0f, -2.0f, 0.5f, 65504.0f, 1e-8f, 70000.0f, 1.0009765625f, 3.140625f};
  effml_tensor *x = tu_f32(ctx, 1, 8, v), *h = NULL, *bf = NULL, *back = NULL;
  ck_assert_int_eq(effml_tensor_convert(ctx, x, EFFML_F16, &h), EFFML_OK);
  const uint16_t *hp = (const uint16_t *)effml_tensor_data_const(h);
  ck_assert_uint_eq(hp[0], 0x3c00);
  ck_assert_uint_eq(hp[1], 0xc000);
  ck_assert_uint_eq(hp[2], 0x3800);
  ck_assert_uint_eq(hp[3], 0x7bff); /* largest finite */
  ck_assert_uint_eq(hp[4], 0x0000); /* underflows to zero (below half the smallest subnormal) */
  ck_assert_uint_eq(hp[5], 0x7c00); /* overflows to +inf */
  ck_assert_uint_eq(hp[6], 0x3c01); /* 1 + 2^-10: exactly representable */
  ck_assert_int_eq(effml_tensor_convert(ctx, h, EFFML_F32, &back), EFFML_OK);
  const float *bp = (const float *)effml_tensor_data_const(back);
  ck_assert_float_eq(bp[0], 1.0f);
  ck_assert_float_eq(bp[3], 65504.0f);
  ck_assert(isinf(bp[5]));
  ck_assert_float_eq(bp[6], 1.0009765625f);
  ck_assert_int_eq(effml_tensor_convert(ctx, x, EFFML_BF16, &bf), EFFML_OK);
  const uint16_t *bfp = (const uint16_t *)effml_tensor_data_const(bf);
  ck_assert_uint_eq(bfp[0], 0x3f80);
  ck_assert_uint_eq(bfp[1], 0xc000);
  ck_assert_uint_eq(bfp[7], 0x4049); /* 3.140625 = 0x40490000 */
  effml_tensor_free(back);
  effml_tensor_free(bf);
  effml_tensor_free(h);
  effml_tensor_free(x);
  effml_context_free(ctx);
}
END_TEST

START_TEST(tensor_copy_rules) {
  effml_context *ctx = tu_ctx(0);
  effml_tensor *x = iota2(ctx, 3, 4), *d = NULL, *t = NULL;
  int64_t shape[2] = {3, 4};
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F64, 2, shape, &d), EFFML_OK);
  ck_assert_int_eq(effml_tensor_copy(ctx, d, x), EFFML_OK); /* dtype converts */
  ck_assert_double_eq(((const double *)effml_tensor_data_const(d))[11], 11);

  /* Strided destination: copy into the transposed view of a 4x3 tensor. */
  effml_tensor *y = tu_f32(ctx, 4, 3, NULL);
  ck_assert_int_eq(effml_tensor_transpose(ctx, y, 0, 1, &t), EFFML_OK);
  ck_assert_int_eq(effml_tensor_copy(ctx, t, x), EFFML_OK);
  ck_assert_double_eq(get2(ctx, y, 3, 1), 7); /* y[j][i] = x[i][j] = 4i + j */
  ck_assert_double_eq(get2(ctx, y, 0, 2), 8);

  /* Overlapping source and destination behave like memmove. */
  effml_tensor *lo = NULL, *hi = NULL;
  ck_assert_int_eq(effml_tensor_slice(ctx, x, 0, 0, 2, 1, &lo), EFFML_OK);
  ck_assert_int_eq(effml_tensor_slice(ctx, x, 0, 1, 3, 1, &hi), EFFML_OK);
  ck_assert_int_eq(effml_tensor_copy(ctx, hi, lo), EFFML_OK);
  const float expect[12] = {0, 1, 2, 3, 0, 1, 2, 3, 4, 5, 6, 7};
  ck_assert_mem_eq(effml_tensor_data_const(x), expect, sizeof expect);

  /* Shape mismatch names both shapes; dst untouched on a failing conversion. */
  effml_tensor *small = tu_f32(ctx, 2, 3, NULL);
  ck_fails(ctx, effml_tensor_copy(ctx, small, x), EFFML_E_SHAPE, "[2, 3]");
  ck_msg_has(ctx, "[3, 4]");
  effml_tensor *i8 = NULL;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_I8, 2, shape, &i8), EFFML_OK);
  ck_assert_int_eq(effml_tensor_fill(ctx, i8, 9), EFFML_OK);
  int64_t last[2] = {2, 3};
  ck_assert_int_eq(effml_tensor_set_f64(ctx, d, last, 1000), EFFML_OK); /* does not fit i8 */
  ck_fails(ctx, effml_tensor_copy(ctx, i8, d), EFFML_E_NUMERIC, "1000");
  const int8_t *ip = (const int8_t *)effml_tensor_data_const(i8);
  for (int k = 0; k < 12; ++k) ck_assert_int_eq(ip[k], 9);
  ck_fails(ctx, effml_tensor_copy(ctx, NULL, x), EFFML_E_INVALID_ARG, "'dst'");
  ck_fails(ctx, effml_tensor_copy(ctx, d, NULL), EFFML_E_INVALID_ARG, "'src'");

  effml_tensor_free(i8);
  effml_tensor_free(small);
  effml_tensor_free(lo);
  effml_tensor_free(hi);
  effml_tensor_free(t);
  effml_tensor_free(y);
  effml_tensor_free(d);
  effml_tensor_free(x);
  effml_context_free(ctx);
}
END_TEST

START_TEST(tensor_fill_and_element_access) {
  effml_context *ctx = tu_ctx(0);
  int64_t shape[2] = {2, 3}, idx[2] = {1, 2}, v = 0;
  effml_tensor *i32 = NULL, *u8 = NULL, *bl = NULL, *f = tu_f32(ctx, 2, 3, NULL);
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_I32, 2, shape, &i32), EFFML_OK);
  ck_assert_int_eq(effml_tensor_fill(ctx, i32, 3.9), EFFML_OK); /* truncates */
  ck_assert_int_eq(effml_tensor_get_i64(ctx, i32, idx, &v), EFFML_OK);
  ck_assert_int_eq(v, 3);
  ck_assert_int_eq(effml_tensor_fill(ctx, i32, -2.5), EFFML_OK);
  ck_assert_int_eq(((const int32_t *)effml_tensor_data_const(i32))[0], -2);

  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_U8, 2, shape, &u8), EFFML_OK);
  ck_fails(ctx, effml_tensor_fill(ctx, u8, -1), EFFML_E_NUMERIC, "value=-1");
  ck_fails(ctx, effml_tensor_fill(ctx, u8, 256), EFFML_E_NUMERIC, "u8");
  ck_fails(ctx, effml_tensor_fill(ctx, i32, NAN), EFFML_E_NUMERIC, "nan");
  ck_fails(ctx, effml_tensor_set_i64(ctx, u8, idx, 300), EFFML_E_NUMERIC, "value=300");
  ck_assert_int_eq(effml_tensor_set_i64(ctx, u8, idx, 255), EFFML_OK);
  ck_assert_uint_eq(((const uint8_t *)effml_tensor_data_const(u8))[5], 255);

  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_BOOL, 2, shape, &bl), EFFML_OK);
  ck_fails(ctx, effml_tensor_set_i64(ctx, bl, idx, 2), EFFML_E_NUMERIC, "bool");
  ck_assert_int_eq(effml_tensor_set_i64(ctx, bl, idx, 1), EFFML_OK);

  /* Index errors name the dimension and value. */
  int64_t bad[2] = {1, 3}, negi[2] = {-1, 0};
  double d = 0;
  ck_fails(ctx, effml_tensor_get_f64(ctx, f, bad, &d), EFFML_E_RANGE, "index[1]=3");
  ck_fails(ctx, effml_tensor_set_f64(ctx, f, negi, 1), EFFML_E_RANGE, "index[0]=-1");
  ck_fails(ctx, effml_tensor_get_f64(ctx, f, NULL, &d), EFFML_E_INVALID_ARG, "'index'");
  ck_fails(ctx, effml_tensor_get_f64(ctx, f, idx, NULL), EFFML_E_INVALID_ARG, "'value'");
  ck_fails(ctx, effml_tensor_get_f64(ctx, NULL, idx, &d), EFFML_E_INVALID_ARG, "'t'");
  ck_fails(ctx, effml_tensor_fill(ctx, NULL, 0), EFFML_E_INVALID_ARG, "'t'");
  /* Exact integer access refuses float dtypes. */
  ck_fails(ctx, effml_tensor_get_i64(ctx, f, idx, &v), EFFML_E_DTYPE, "f32");
  ck_fails(ctx, effml_tensor_set_i64(ctx, f, idx, 1), EFFML_E_DTYPE, "f32");
  /* Floats round-trip through set/get. */
  ck_assert_int_eq(effml_tensor_set_f64(ctx, f, idx, 0.25), EFFML_OK);
  ck_assert_int_eq(effml_tensor_get_f64(ctx, f, idx, &d), EFFML_OK);
  ck_assert_double_eq(d, 0.25);
  ck_assert_int_eq(effml_tensor_fill(ctx, f, 1e300), EFFML_OK); /* f32 saturates to inf */
  ck_assert(isinf(((const float *)effml_tensor_data_const(f))[0]));

  effml_tensor_free(bl);
  effml_tensor_free(u8);
  effml_tensor_free(i32);
  effml_tensor_free(f);
  effml_context_free(ctx);
}
END_TEST

/* Fill through a strided view touches only the view's elements. */
START_TEST(tensor_fill_strided_view) {
  effml_context *ctx = tu_ctx(0);
  effml_tensor *x = iota2(ctx, 3, 4), *col = NULL;
  ck_assert_int_eq(effml_tensor_slice(ctx, x, 1, 1, 4, 2, &col), EFFML_OK); /* cols 1, 3 */
  ck_assert_int_eq(effml_tensor_fill(ctx, col, -1), EFFML_OK);
  const float expect[12] = {0, -1, 2, -1, 4, -1, 6, -1, 8, -1, 10, -1};
  ck_assert_mem_eq(effml_tensor_data_const(x), expect, sizeof expect);
  effml_tensor_free(col);
  effml_tensor_free(x);
  effml_context_free(ctx);
}
END_TEST

/* The ISA level the library reports is the one the CPU supports (checked
 * here independently), and every level has a name. */
START_TEST(isa_level_matches_cpu) {
  int32_t expect = EFFML_CORE_ISA_PORTABLE;
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f"))
    expect = EFFML_CORE_ISA_AVX512;
  else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    expect = EFFML_CORE_ISA_AVX2;
#endif
  ck_assert_int_eq(effml_core_isa_level(), expect);
  ck_assert_str_eq(effml_core_isa_name(EFFML_CORE_ISA_PORTABLE), "portable");
  ck_assert_str_eq(effml_core_isa_name(EFFML_CORE_ISA_AVX2), "avx2");
  ck_assert_str_eq(effml_core_isa_name(EFFML_CORE_ISA_AVX512), "avx512");
  ck_assert_str_eq(effml_core_isa_name(3), "unknown");
  ck_assert_str_eq(effml_core_isa_name(-1), "unknown");
}
END_TEST

/* Every option struct's size as the library reports it equals sizeof() here. */
START_TEST(struct_sizes_match_headers) {
#define CHECK_SIZE(t) ck_assert_uint_eq(effml_core_struct_size(#t), sizeof(t))
  CHECK_SIZE(effml_context_options);
  CHECK_SIZE(effml_optimizer_options);
  CHECK_SIZE(effml_train_options);
  CHECK_SIZE(effml_adapter_phm_options);
  CHECK_SIZE(effml_adapter_options);
  CHECK_SIZE(effml_adapter_lora_options);
  CHECK_SIZE(effml_adapter_lokr_options);
  CHECK_SIZE(effml_sparse_options);
  CHECK_SIZE(effml_dst_options);
  CHECK_SIZE(effml_sampler_resample_options);
  CHECK_SIZE(effml_sampler_temperature_schedule);
  CHECK_SIZE(effml_sampler_leverage_options);
  CHECK_SIZE(effml_cascade_options);
  CHECK_SIZE(effml_cascade_threshold_options);
  CHECK_SIZE(effml_calibration_options);
#undef CHECK_SIZE
  ck_assert_uint_eq(effml_core_struct_size("effml_tensor"), 0);
  ck_assert_uint_eq(effml_core_struct_size("effml_" "fit_options"), 0); /* a 0.1 name (split: the port script keeps it) */
  ck_assert_uint_eq(effml_core_struct_size(""), 0);
  ck_assert_uint_eq(effml_core_struct_size(NULL), 0);
  ck_assert_ptr_null(effml_core_struct_name(-1));
}
END_TEST

/* Completeness: every `typedef struct effml_x {` of the installed headers
 * whose first member is `uint32_t struct_size` is known to the library by
 * name, and the library knows no other (its list is the headers' list). */
START_TEST(struct_sizes_cover_every_option_struct) {
  int32_t found = 0, n_headers = 0;
  char dir[512];
  snprintf(dir, sizeof dir, "%s/effml", EFFML_INCLUDE_DIR);
  DIR *dh = opendir(dir);
  ck_assert_msg(dh != NULL, "cannot open %s", dir);
  struct dirent *de;
  while ((de = readdir(dh)) != NULL) {
    const size_t len = strlen(de->d_name);
    if (len < 3 || strcmp(de->d_name + len - 2, ".h") != 0) continue;
    ++n_headers;
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    char line[1024], name[256] = "";
    while (fgets(line, sizeof line, f)) {
      if (name[0]) {
        if (strstr(line, "uint32_t struct_size")) {
          ck_assert_msg(effml_core_struct_size(name) > 0, "%s: %s unknown to effml_core_struct_size",
                        path, name);
          ++found;
        }
        name[0] = '\0';
      }
      if (sscanf(line, "typedef struct %255[a-z0-9_] {", name) != 1) name[0] = '\0';
    }
    fclose(f);
  }
  closedir(dh);
  ck_assert_int_ge(n_headers, 12);
  int32_t listed = 0;
  while (effml_core_struct_name(listed)) ++listed;
  ck_assert_int_eq(listed, found);
  ck_assert_int_ge(found, 14);
}
END_TEST

static Suite *core_suite(void) {
  Suite *s = suite_create("core");
  TCase *c = tcase_create("context");
  tcase_add_test(c, context_options_defaults);
  tcase_add_test(c, context_bad_options);
  tcase_add_test(c, context_options_prefix_and_future);
  tcase_add_test(c, context_threads_seed_errors);
  tcase_add_test(c, context_log_callback);
  tcase_add_test(c, context_allocator_hooks);
  tcase_add_test(c, context_long_error_is_whole);
  tcase_add_test(c, context_long_error_cut_only_without_memory);
  tcase_add_test(c, status_codes_and_strings);
  tcase_add_test(c, version_macro_matches_runtime);
  tcase_add_test(c, isa_level_matches_cpu);
  tcase_add_test(c, struct_sizes_match_headers);
  tcase_add_test(c, struct_sizes_cover_every_option_struct);
  suite_add_tcase(s, c);

  TCase *t = tcase_create("tensor");
  tcase_add_test(t, dtype_sizes_and_names);
  tcase_add_test(t, tensor_create_every_dtype_zeroed);
  tcase_add_test(t, tensor_create_scalar_and_max_dims);
  tcase_add_test(t, tensor_create_bad_input);
  tcase_add_test(t, tensor_every_ndim);
  tcase_add_test(t, tensor_null_context);
  tcase_add_test(t, tensor_queries_accept_null);
  tcase_add_test(t, tensor_wrap_zero_copy);
  tcase_add_test(t, tensor_wrap_bad_input);
  tcase_add_test(t, tensor_wrap_read_only_refuses_writes);
  tcase_add_test(t, tensor_slice_views);
  tcase_add_test(t, tensor_slice_bad_input);
  tcase_add_test(t, tensor_reshape_views);
  tcase_add_test(t, tensor_reshape_bad_input);
  tcase_add_test(t, tensor_transpose_and_contiguous);
  tcase_add_test(t, tensor_eight_dims_permuted);
  tcase_add_test(t, tensor_convert_rules);
  tcase_add_test(t, tensor_convert_half_precision);
  tcase_add_test(t, tensor_copy_rules);
  tcase_add_test(t, tensor_fill_and_element_access);
  tcase_add_test(t, tensor_fill_strided_view);
  suite_add_tcase(s, t);
  return s;
}

int main(void) { return tu_run(core_suite()); }
