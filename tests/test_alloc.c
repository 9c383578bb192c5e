/* Allocation-failure torture (curl's `runtests.pl -t`): every create/load/save
 * path runs under an allocator that fails its Nth allocation, for N = 1, 2,
 * ... until the path succeeds.  Each failing run must
 *   - return EFFML_E_NOMEM (and record it in the context),
 *   - leave the caller's output untouched (a sentinel pointer stays put, a
 *     destination tensor keeps its values, an existing file keeps its bytes),
 *   - leak nothing (live blocks back to what they were before the call),
 * and the run with N beyond the path's allocation count must succeed having
 * made exactly N - 1 allocations (so the failures covered every allocation).
 * The allocator (tu_ctx_failing) lives in tests/testutil.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#define SENTINEL ((void *)(uintptr_t)0x5e5e5e5e)
#define MAX_ALLOCS 100000

typedef struct fixture {
  effml_tensor *src;       /* input made in setup */
  effml_tensor *lo, *hi;   /* overlapping views (copy) */
  effml_layer *layer;      /* layer input (save/load/add) */
  effml_layer *child;      /* child for sequential_add */
  int child_owned;         /* the container took the child */
  unsigned char *image;    /* a file image (plain malloc) */
  size_t image_len;
  char path[512];          /* file read or written */
  float before[64];        /* values that must survive a failure */
  int n_before;
} fixture;

typedef struct alloc_case {
  const char *name;
  void (*setup)(effml_context *ctx, fixture *f);
  /* The path under test; *out holds SENTINEL and must keep it on failure. */
  effml_status (*run)(effml_context *ctx, fixture *f, void **out);
  void (*release)(void *out);
  /* 1 if what the failed call must not touch is intact. */
  int (*untouched)(fixture *f);
} alloc_case;

static void tmp_path(fixture *f, const char *name) {
  snprintf(f->path, sizeof f->path, "%s/alloc_%s", EFFML_TEST_TMP, name);
}

static void write_file(const char *path, const char *text) {
  FILE *fp = fopen(path, "wb");
  ck_assert_ptr_nonnull(fp);
  ck_assert_uint_eq(fwrite(text, 1, strlen(text), fp), strlen(text));
  ck_assert_int_eq(fclose(fp), 0);
}

static const char original_text[] = "original contents, not a model\n";

static int file_is_original(fixture *f) {
  size_t len = 0;
  unsigned char *b = tu_read_file(f->path, &len);
  int same = b && len == strlen(original_text) && memcmp(b, original_text, len) == 0;
  free(b);
  return same;
}

static void release_tensor(void *out) { effml_tensor_free((effml_tensor *)out); }
static void release_st(void *out) { effml_safetensors_free((effml_safetensors *)out); }
static void release_layer(void *out) { effml_layer_free((effml_layer *)out); }

static void teardown(fixture *f) {
  effml_tensor_free(f->lo);
  effml_tensor_free(f->hi);
  effml_tensor_free(f->src);
  effml_layer_free(f->layer);
  if (!f->child_owned) effml_layer_free(f->child);
  free(f->image);
}

static void torture(const alloc_case *c) {
  for (int64_t n = 1; n <= MAX_ALLOCS; ++n) {
    tu_failing_alloc fa = {0, 0, 0};
    effml_context *ctx = tu_ctx_failing(&fa);
    fixture f;
    memset(&f, 0, sizeof f);
    if (c->setup) c->setup(ctx, &f);
    int64_t live_before = fa.live;
    void *out = SENTINEL;
    effml_context_clear_error(ctx);
    fa.count = 0;
    fa.fail_at = n;
    effml_status st = c->run(ctx, &f, &out);
    fa.fail_at = 0;
    if (st == EFFML_OK) {
      ck_assert_msg(fa.count == n - 1, "%s: succeeded at N=%lld after %lld allocations", c->name,
                    (long long)n, (long long)fa.count);
      ck_assert_msg(n > 1, "%s: made no allocation through the context allocator", c->name);
      if (getenv("EFFML_ALLOC_VERBOSE"))
        printf("%-26s %3lld allocations, each failed in turn\n", c->name, (long long)fa.count);
      if (c->release) {
        ck_assert_ptr_ne(out, SENTINEL);
        c->release(out);
      }
      teardown(&f);
      effml_context_free(ctx);
      ck_assert_msg(fa.live == 0, "%s: %lld blocks leaked on success", c->name,
                    (long long)fa.live);
      return;
    }
    ck_assert_msg(st == EFFML_E_NOMEM, "%s: failing allocation %lld gave status %d (%s): %s",
                  c->name, (long long)n, (int)st, effml_status_str(st),
                  effml_context_last_error(ctx));
    ck_assert_int_eq(effml_context_last_status(ctx), EFFML_E_NOMEM);
    ck_assert_msg(out == SENTINEL, "%s: output written although allocation %lld failed",
                  c->name, (long long)n);
    ck_assert_msg(fa.live == live_before, "%s: failing allocation %lld leaked %lld blocks",
                  c->name, (long long)n, (long long)(fa.live - live_before));
    if (c->untouched)
      ck_assert_msg(c->untouched(&f), "%s: output changed although allocation %lld failed",
                    c->name, (long long)n);
    teardown(&f);
    effml_context_free(ctx);
    ck_assert_int_eq(fa.live, 0);
  }
  ck_abort_msg("%s: still failing after %d allocations", c->name, MAX_ALLOCS);
}

/* ---- tensors ---- */

static void setup_src(effml_context *ctx, fixture *f) {
  int64_t shape[3] = {3, 4, 5};
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F32, 3, shape, &f->src), EFFML_OK);
  tu_fill_uniform(f->src, 1, -2, 2);
}

static effml_status run_create(effml_context *ctx, fixture *f, void **out) {
  (void)f;
  int64_t shape[4] = {2, 3, 4, 5};
  effml_tensor *t = (effml_tensor *)*out;
  effml_status st = effml_tensor_create(ctx, EFFML_F64, 4, shape, &t);
  *out = t;
  return st;
}

static float wrapped[24];
static effml_status run_wrap(effml_context *ctx, fixture *f, void **out) {
  (void)f;
  int64_t shape[2] = {4, 6};
  effml_tensor *t = (effml_tensor *)*out;
  effml_status st =
      effml_tensor_wrap(ctx, EFFML_F32, 2, shape, NULL, wrapped, sizeof wrapped, 0, &t);
  *out = t;
  return st;
}

static effml_status run_slice(effml_context *ctx, fixture *f, void **out) {
  effml_tensor *t = (effml_tensor *)*out;
  effml_status st = effml_tensor_slice(ctx, f->src, 1, 1, 4, 2, &t);
  *out = t;
  return st;
}

static effml_status run_reshape(effml_context *ctx, fixture *f, void **out) {
  int64_t shape[2] = {-1, 10};
  effml_tensor *t = (effml_tensor *)*out;
  effml_status st = effml_tensor_reshape(ctx, f->src, 2, shape, &t);
  *out = t;
  return st;
}

static effml_status run_transpose(effml_context *ctx, fixture *f, void **out) {
  effml_tensor *t = (effml_tensor *)*out;
  effml_status st = effml_tensor_transpose(ctx, f->src, 0, 2, &t);
  *out = t;
  return st;
}

static void setup_transposed(effml_context *ctx, fixture *f) {
  effml_tensor *base = NULL;
  setup_src(ctx, f);
  ck_assert_int_eq(effml_tensor_transpose(ctx, f->src, 0, 2, &base), EFFML_OK);
  effml_tensor_free(f->src);
  f->src = base; /* a non-contiguous source: contiguous() must really copy */
}

static effml_status run_contiguous(effml_context *ctx, fixture *f, void **out) {
  effml_tensor *t = (effml_tensor *)*out;
  effml_status st = effml_tensor_contiguous(ctx, f->src, &t);
  *out = t;
  return st;
}

static effml_status run_convert(effml_context *ctx, fixture *f, void **out) {
  effml_tensor *t = (effml_tensor *)*out;
  effml_status st = effml_tensor_convert(ctx, f->src, EFFML_F16, &t);
  *out = t;
  return st;
}

/* Overlapping copy goes through a temporary: on failure dst keeps its values. */
static void setup_overlap(effml_context *ctx, fixture *f) {
  f->src = tu_f32(ctx, 4, 8, NULL);
  tu_fill_uniform(f->src, 2, 0, 1);
  ck_assert_int_eq(effml_tensor_slice(ctx, f->src, 0, 0, 3, 1, &f->lo), EFFML_OK);
  ck_assert_int_eq(effml_tensor_slice(ctx, f->src, 0, 1, 4, 1, &f->hi), EFFML_OK);
  f->n_before = 32;
  memcpy(f->before, effml_tensor_data_const(f->src), sizeof(float) * 32);
}

static effml_status run_copy_overlap(effml_context *ctx, fixture *f, void **out) {
  (void)out;
  return effml_tensor_copy(ctx, f->hi, f->lo);
}

static int src_unchanged(fixture *f) {
  return memcmp(f->before, effml_tensor_data_const(f->src), sizeof(float) * (size_t)f->n_before) ==
         0;
}

/* ---- .npy ---- */

static void setup_npy(effml_context *ctx, fixture *f) {
  setup_src(ctx, f);
  tmp_path(f, "load.npy");
  ck_assert_int_eq(effml_io_npy_save(ctx, f->path, f->src), EFFML_OK);
  f->image = tu_read_file(f->path, &f->image_len);
  ck_assert_ptr_nonnull(f->image);
}

static effml_status run_npy_load_buffer(effml_context *ctx, fixture *f, void **out) {
  effml_tensor *t = (effml_tensor *)*out;
  effml_status st = effml_io_npy_load_buffer(ctx, f->image, f->image_len, &t);
  *out = t;
  return st;
}

static effml_status run_npy_load(effml_context *ctx, fixture *f, void **out) {
  effml_tensor *t = (effml_tensor *)*out;
  effml_status st = effml_io_npy_load(ctx, f->path, &t);
  *out = t;
  return st;
}

static void setup_npy_save(effml_context *ctx, fixture *f) {
  setup_transposed(ctx, f); /* strided: the writer must gather */
  tmp_path(f, "save.npy");
  write_file(f->path, original_text);
}

static effml_status run_npy_save(effml_context *ctx, fixture *f, void **out) {
  (void)out;
  return effml_io_npy_save(ctx, f->path, f->src);
}

/* ---- safetensors ---- */

static effml_status save_two(effml_context *ctx, fixture *f) {
  int64_t shape[1] = {7};
  effml_tensor *b = NULL;
  effml_status st = effml_tensor_create(ctx, EFFML_I64, 1, shape, &b);
  if (st != EFFML_OK) return st;
  const char *names[2] = {"layer.weight", "layer.steps"};
  const effml_tensor *ts[2] = {f->src, b};
  const char *keys[2] = {"format", "note"}, *values[2] = {"pt", "alloc torture"};
  st = effml_safetensors_save(ctx, f->path, 2, names, ts, 2, keys, values);
  effml_tensor_free(b);
  return st;
}

static void setup_st(effml_context *ctx, fixture *f) {
  setup_src(ctx, f);
  tmp_path(f, "load.safetensors");
  ck_assert_int_eq(save_two(ctx, f), EFFML_OK);
  f->image = tu_read_file(f->path, &f->image_len);
  ck_assert_ptr_nonnull(f->image);
}

/* A loaded file must be complete: both tensors and both metadata entries. */
static effml_status check_st(effml_context *ctx, effml_safetensors *s) {
  const effml_tensor *w = NULL;
  ck_assert_int_eq(effml_safetensors_count(s), 2);
  ck_assert_int_eq(effml_safetensors_metadata_count(s), 2);
  ck_assert_str_eq(effml_safetensors_metadata(s, "note"), "alloc torture");
  ck_assert_int_eq(effml_safetensors_get(ctx, s, "layer.weight", &w), EFFML_OK);
  ck_assert_int_eq(effml_tensor_numel(w), 60);
  return EFFML_OK;
}

static effml_status run_st_load_buffer(effml_context *ctx, fixture *f, void **out) {
  effml_safetensors *s = (effml_safetensors *)*out;
  effml_status st = effml_safetensors_load_buffer(ctx, f->image, f->image_len, &s);
  *out = s;
  return st == EFFML_OK ? check_st(ctx, s) : st;
}

static effml_status run_st_load_copy(effml_context *ctx, fixture *f, void **out) {
  effml_safetensors *s = (effml_safetensors *)*out;
  effml_status st = effml_safetensors_load(ctx, f->path, EFFML_IO_SAFETENSORS_COPY, &s);
  *out = s;
  return st == EFFML_OK ? check_st(ctx, s) : st;
}

static effml_status run_st_load_mmap(effml_context *ctx, fixture *f, void **out) {
  effml_safetensors *s = (effml_safetensors *)*out;
  effml_status st = effml_safetensors_load(ctx, f->path, EFFML_IO_SAFETENSORS_MMAP, &s);
  *out = s;
  return st == EFFML_OK ? check_st(ctx, s) : st;
}

static void setup_st_save(effml_context *ctx, fixture *f) {
  setup_src(ctx, f);
  tmp_path(f, "save.safetensors");
  write_file(f->path, original_text);
}

static effml_status run_st_save(effml_context *ctx, fixture *f, void **out) {
  (void)out;
  return save_two(ctx, f);
}

/* ---- layers ---- */

static effml_status run_dense_create(effml_context *ctx, fixture *f, void **out) {
  (void)f;
  effml_layer *l = (effml_layer *)*out;
  effml_status st = effml_layer_dense_create(ctx, 6, 4, 1, &l);
  *out = l;
  return st;
}

static effml_status run_sequential_create(effml_context *ctx, fixture *f, void **out) {
  (void)f;
  effml_layer *l = (effml_layer *)*out;
  effml_status st = effml_layer_sequential_create(ctx, &l);
  *out = l;
  return st;
}

static void setup_model(effml_context *ctx, fixture *f) {
  effml_layer *d = NULL, *a = NULL;
  ck_assert_int_eq(effml_layer_sequential_create(ctx, &f->layer), EFFML_OK);
  ck_assert_int_eq(effml_layer_dense_create(ctx, 6, 5, 1, &d), EFFML_OK);
  ck_assert_int_eq(effml_layer_sequential_add(ctx, f->layer, d), EFFML_OK);
  ck_assert_int_eq(effml_layer_activation_create(ctx, EFFML_LAYER_ACT_RELU, &a), EFFML_OK);
  ck_assert_int_eq(effml_layer_sequential_add(ctx, f->layer, a), EFFML_OK);
  ck_assert_int_eq(effml_layer_dense_create(ctx, 5, 3, 1, &f->child), EFFML_OK);
}

/* On failure the caller still owns the child (teardown frees it). */
static effml_status run_sequential_add(effml_context *ctx, fixture *f, void **out) {
  (void)out;
  effml_status st = effml_layer_sequential_add(ctx, f->layer, f->child);
  if (st == EFFML_OK) f->child_owned = 1;
  return st;
}

static int model_unchanged(fixture *f) { return effml_layer_sequential_count(f->layer) == 2; }

static void setup_layer_save(effml_context *ctx, fixture *f) {
  setup_model(ctx, f);
  tmp_path(f, "layer_save.safetensors");
  write_file(f->path, original_text);
}

static effml_status run_layer_save(effml_context *ctx, fixture *f, void **out) {
  (void)out;
  return effml_layer_save(ctx, f->layer, f->path, "model.");
}

/* Load into a model whose first weight is remembered: all-or-nothing. */
static void setup_layer_load(effml_context *ctx, fixture *f) {
  setup_model(ctx, f);
  tmp_path(f, "layer_load.safetensors");
  ck_assert_int_eq(effml_layer_save(ctx, f->layer, f->path, "model."), EFFML_OK);
  effml_tensor *w = effml_layer_param(f->layer, 0);
  ck_assert_int_eq(effml_tensor_fill(ctx, w, 0.125), EFFML_OK);
  f->n_before = 30; /* weight [5, 6] */
  memcpy(f->before, effml_tensor_data_const(w), sizeof(float) * 30);
}

static effml_status run_layer_load(effml_context *ctx, fixture *f, void **out) {
  (void)out;
  return effml_layer_load(ctx, f->layer, f->path, "model.", EFFML_LAYER_LOAD_STRICT);
}

static int weights_unchanged(fixture *f) {
  return memcmp(f->before, effml_tensor_data_const(effml_layer_param(f->layer, 0)),
                sizeof(float) * 30) == 0;
}

/* ---- the other layer kinds and objects ---- */

#define LAYER_RUN(fn_name, call)                                       \
  static effml_status fn_name(effml_context *ctx, fixture *f, void **out) { \
    (void)f;                                                           \
    effml_layer *l = (effml_layer *)*out;                              \
    effml_status st = (call);                                          \
    *out = l;                                                          \
    return st;                                                         \
  }

LAYER_RUN(run_activation_create, effml_layer_activation_create(ctx, EFFML_LAYER_ACT_GELU, &l))
LAYER_RUN(run_dropout_create, effml_layer_dropout_create(ctx, 0.25, 7, &l))
LAYER_RUN(run_layernorm_create, effml_layer_layernorm_create(ctx, 12, 1e-5, &l))
LAYER_RUN(run_sparse_linear_create, effml_sparse_linear_create(ctx, 16, 8, NULL, &l))
LAYER_RUN(run_sparse_wide_create, effml_sparse_wide_create(ctx, 16, 8, NULL, &l))
LAYER_RUN(run_sparse_parallel_create, effml_sparse_parallel_create(ctx, 16, 8, NULL, &l))
LAYER_RUN(run_sparse_factorized_create, effml_sparse_factorized_create(ctx, 16, 8, NULL, &l))

static effml_status run_phm_create(effml_context *ctx, fixture *f, void **out) {
  (void)f;
  effml_adapter_phm_options o;
  effml_adapter_phm_options_init(&o);
  effml_layer *l = (effml_layer *)*out;
  effml_status st = effml_adapter_phm_create(ctx, 8, 12, &o, NULL, &l);
  *out = l;
  return st;
}

static effml_status run_adapter_create(effml_context *ctx, fixture *f, void **out) {
  (void)f;
  effml_adapter_options o;
  effml_adapter_options_init(&o);
  effml_layer *l = (effml_layer *)*out;
  effml_status st = effml_adapter_create(ctx, 128, &o, NULL, &l);
  *out = l;
  return st;
}

/* LoRA/LoKr take ownership of the base on success only. */
static void setup_base(effml_context *ctx, fixture *f) {
  ck_assert_int_eq(effml_layer_dense_create(ctx, 12, 8, 1, &f->child), EFFML_OK);
}

static effml_status run_lora_create(effml_context *ctx, fixture *f, void **out) {
  effml_adapter_lora_options o;
  effml_adapter_lora_options_init(&o);
  o.rank = 4;
  effml_layer *l = (effml_layer *)*out;
  effml_status st = effml_adapter_lora_create(ctx, f->child, &o, &l);
  if (st == EFFML_OK) f->child_owned = 1;
  *out = l;
  return st;
}

static effml_status run_lokr_create(effml_context *ctx, fixture *f, void **out) {
  effml_adapter_lokr_options o;
  effml_adapter_lokr_options_init(&o);
  o.rank = 2;
  effml_layer *l = (effml_layer *)*out;
  effml_status st = effml_adapter_lokr_create(ctx, f->child, &o, &l);
  if (st == EFFML_OK) f->child_owned = 1;
  *out = l;
  return st;
}

static void release_optimizer(void *out) { effml_optimizer_free((effml_optimizer *)out); }

static effml_status run_optimizer_create(effml_context *ctx, fixture *f, void **out) {
  effml_optimizer_options o;
  effml_optimizer_options_init(&o);
  effml_optimizer *opt = (effml_optimizer *)*out;
  effml_status st = effml_optimizer_create(ctx, &o, &opt);
  if (st == EFFML_OK) {
    /* Registering a model's parameters allocates optimizer state too. */
    st = effml_optimizer_add_layer(ctx, opt, f->layer);
    if (st != EFFML_OK) {
      effml_optimizer_free(opt);
      return st;
    }
  }
  *out = opt;
  return st;
}

static void release_cascade(void *out) { effml_cascade_free((effml_cascade *)out); }

static effml_status run_cascade_create(effml_context *ctx, fixture *f, void **out) {
  (void)f;
  effml_cascade_options o;
  effml_cascade_options_init(&o);
  o.num_classes = 10;
  effml_cascade *c = (effml_cascade *)*out;
  effml_status st = effml_cascade_create(ctx, &o, &c);
  *out = c;
  return st;
}

/* ---- samplers and IDX ---- */

/* Two well-separated, imbalanced classes: 12 of class 0, 5 of class 1. */
static void setup_imbalanced(effml_context *ctx, fixture *f) {
  int64_t shape[1] = {17};
  f->src = tu_f32(ctx, 17, 3, NULL);
  tu_fill_uniform(f->src, 3, 0, 1);
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_I64, 1, shape, &f->hi), EFFML_OK);
  int64_t *y = (int64_t *)effml_tensor_data(f->hi);
  float *x = (float *)effml_tensor_data(f->src);
  for (int i = 12; i < 17; ++i) {
    y[i] = 1;
    x[3 * i] += 5.0f;
  }
}

static effml_status run_knn(effml_context *ctx, fixture *f, void **out) {
  effml_tensor *idx = (effml_tensor *)*out, *dist = SENTINEL;
  effml_status st = effml_sampler_knn(ctx, f->src, NULL, 3, &idx, &dist);
  if (st != EFFML_OK) {
    ck_assert_ptr_eq(dist, SENTINEL); /* the second output is untouched too */
  } else {
    ck_assert_int_eq(effml_tensor_dim(dist, 1), 3);
    effml_tensor_free(dist);
  }
  *out = idx;
  return st;
}

static effml_status run_smote(effml_context *ctx, fixture *f, void **out) {
  effml_sampler_resample_options o;
  effml_sampler_resample_options_init(&o);
  o.k_neighbors = 3;
  o.seed = 11;
  effml_tensor *xo = (effml_tensor *)*out, *yo = SENTINEL;
  effml_status st = effml_sampler_resample(ctx, &o, f->src, f->hi, &xo, &yo);
  if (st != EFFML_OK) {
    ck_assert_ptr_eq(yo, SENTINEL);
  } else {
    ck_assert_int_eq(effml_tensor_dim(xo, 0), 24); /* balanced: 12 + 12 */
    effml_tensor_free(yo);
  }
  *out = xo;
  return st;
}

static void release_alias(void *out) { effml_sampler_alias_free((effml_sampler_alias *)out); }

static effml_status run_alias_create(effml_context *ctx, fixture *f, void **out) {
  (void)f;
  const double w[5] = {0.1, 0.0, 2.0, 1.0, 0.5};
  effml_sampler_alias *a = (effml_sampler_alias *)*out;
  effml_status st = effml_sampler_alias_create(ctx, w, 5, 3, &a);
  *out = a;
  return st;
}

#ifndef FMNIST_LABELS
#define FMNIST_LABELS "/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz"
#endif

/* A gzipped IDX file from dataset-fashion-mnist, or a raw one we write. */
static void setup_idx(effml_context *ctx, fixture *f) {
  (void)ctx;
  FILE *probe = fopen(FMNIST_LABELS, "rb");
  if (probe) {
    fclose(probe);
    snprintf(f->path, sizeof f->path, "%s", FMNIST_LABELS);
    return;
  }
  static const unsigned char idx[] = {0, 0, 0x08, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6};
  tmp_path(f, "labels.idx");
  FILE *fp = fopen(f->path, "wb");
  ck_assert_ptr_nonnull(fp);
  ck_assert_uint_eq(fwrite(idx, 1, sizeof idx, fp), sizeof idx);
  ck_assert_int_eq(fclose(fp), 0);
}

static effml_status run_idx_load(effml_context *ctx, fixture *f, void **out) {
  effml_tensor *t = (effml_tensor *)*out;
  effml_status st = effml_data_idx_load(ctx, f->path, &t);
  *out = t;
  return st;
}

static const alloc_case cases[] = {
    {"tensor_create", NULL, run_create, release_tensor, NULL},
    {"tensor_wrap", NULL, run_wrap, release_tensor, NULL},
    {"tensor_slice", setup_src, run_slice, release_tensor, NULL},
    {"tensor_reshape", setup_src, run_reshape, release_tensor, NULL},
    {"tensor_transpose", setup_src, run_transpose, release_tensor, NULL},
    {"tensor_contiguous", setup_transposed, run_contiguous, release_tensor, NULL},
    {"tensor_convert", setup_transposed, run_convert, release_tensor, NULL},
    {"tensor_copy_overlapping", setup_overlap, run_copy_overlap, NULL, src_unchanged},
    {"npy_load_buffer", setup_npy, run_npy_load_buffer, release_tensor, NULL},
    {"npy_load", setup_npy, run_npy_load, release_tensor, NULL},
    {"npy_save", setup_npy_save, run_npy_save, NULL, file_is_original},
    {"safetensors_load_buffer", setup_st, run_st_load_buffer, release_st, NULL},
    {"safetensors_load_copy", setup_st, run_st_load_copy, release_st, NULL},
    {"safetensors_load_mmap", setup_st, run_st_load_mmap, release_st, NULL},
    {"safetensors_save", setup_st_save, run_st_save, NULL, file_is_original},
    {"dense_create", NULL, run_dense_create, release_layer, NULL},
    {"sequential_create", NULL, run_sequential_create, release_layer, NULL},
    {"sequential_add", setup_model, run_sequential_add, NULL, model_unchanged},
    {"layer_save", setup_layer_save, run_layer_save, NULL, file_is_original},
    {"layer_load", setup_layer_load, run_layer_load, NULL, weights_unchanged},
    {"activation_create", NULL, run_activation_create, release_layer, NULL},
    {"dropout_create", NULL, run_dropout_create, release_layer, NULL},
    {"layernorm_create", NULL, run_layernorm_create, release_layer, NULL},
    {"optimizer_create_add_layer", setup_model, run_optimizer_create, release_optimizer, NULL},
    {"phm_create", NULL, run_phm_create, release_layer, NULL},
    {"adapter_create", NULL, run_adapter_create, release_layer, NULL},
    {"lora_create", setup_base, run_lora_create, release_layer, NULL},
    {"lokr_create", setup_base, run_lokr_create, release_layer, NULL},
    {"sparse_linear_create", NULL, run_sparse_linear_create, release_layer, NULL},
    {"sparse_wide_create", NULL, run_sparse_wide_create, release_layer, NULL},
    {"sparse_parallel_create", NULL, run_sparse_parallel_create, release_layer, NULL},
    {"sparse_factorized_create", NULL, run_sparse_factorized_create, release_layer, NULL},
    {"cascade_create", NULL, run_cascade_create, release_cascade, NULL},
    {"knn", setup_imbalanced, run_knn, release_tensor, NULL},
    {"resample_smote", setup_imbalanced, run_smote, release_tensor, NULL},
    {"alias_sampler_create", NULL, run_alias_create, release_alias, NULL},
    {"idx_load", setup_idx, run_idx_load, release_tensor, NULL},
};

START_TEST(alloc_failure_path) { torture(&cases[_i]); }
END_TEST

/* The torture must really bite: a path that allocates fails at N = 1. */
START_TEST(alloc_failure_first_allocation) {
  tu_failing_alloc fa = {0, 0, 0};
  effml_context *ctx = tu_ctx_failing(&fa);
  fa.fail_at = 1;
  int64_t shape[1] = {4};
  effml_tensor *t = SENTINEL;
  ck_assert_int_eq(effml_tensor_create(ctx, EFFML_F32, 1, shape, &t), EFFML_E_NOMEM);
  ck_assert_ptr_eq(t, SENTINEL);
  ck_assert_int_eq(fa.count, 1);
  ck_assert_ptr_nonnull(strstr(effml_context_last_error(ctx), "memory"));
  effml_context_free(ctx);
  ck_assert_int_eq(fa.live, 0);
}
END_TEST

static Suite *alloc_suite(void) {
  Suite *s = suite_create("alloc");
  TCase *c = tcase_create("nomem");
  tcase_add_test(c, alloc_failure_first_allocation);
  tcase_add_loop_test(c, alloc_failure_path, 0, (int)(sizeof cases / sizeof cases[0]));
  suite_add_tcase(s, c);
  return s;
}

int main(void) { return tu_run(alloc_suite()); }
