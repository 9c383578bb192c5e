/*
 * Randomized API soak: many short lives of a context, each a random sequence of
 * create / forward / backward / save / load / free over random layer stacks
 * and shapes, random bad arguments, and (in some lives) random allocation
 * failures through the context's allocator.
 *
 *   soak [--seed S] [--iterations N] [--seconds T] [--dir DIR] [--verbose]
 *
 * Rules checked every step:
 *  - a call either succeeds or returns an error status with a message; with
 *    allocation failures switched off every valid call succeeds, and with them
 *    on the only error a valid call may return is EFFML_E_NOMEM;
 *  - a bad argument (wrong shape, wrong dtype, NULL, bad size or option) is
 *    refused with the expected status, and the objects stay usable;
 *  - save followed by load reproduces every parameter bit for bit, and a
 *    failed load changes nothing;
 *  - forward is deterministic (two INFER passes give the same bytes);
 *  - when a life ends every block its allocator handed out has been freed.
 * Any violation prints the seed, the life and the step, and exits 1.  The
 * short seeded run is the CTest test `soak_short`; run it under
 * AddressSanitizer + UndefinedBehaviorSanitizer for minutes with --seconds.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "effml.h"

/* ---- deterministic randomness (splitmix64) ---- */
static uint64_t rng_state;
static uint64_t rnd(void) {
  uint64_t z = (rng_state += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}
static int64_t rint_in(int64_t lo, int64_t hi) { return lo + (int64_t)(rnd() % (uint64_t)(hi - lo + 1)); }
static double runif(void) { return (double)(rnd() >> 11) * 0x1.0p-53; }

/* ---- an allocator that fails at random and counts live blocks ---- */
typedef struct {
  double fail_p; /* probability that one allocation fails (0: never) */
  uint64_t state;
  int64_t live, count, failed;
} soak_alloc;

static void *sa_alloc(void *user, size_t size) {
  soak_alloc *a = (soak_alloc *)user;
  a->count++;
  if (a->fail_p > 0) {
    a->state = a->state * 6364136223846793005ULL + 1442695040888963407ULL;
    if ((double)(a->state >> 11) * 0x1.0p-53 < a->fail_p) {
      a->failed++;
      return NULL;
    }
  }
  void *p = malloc(size ? size : 1);
  if (p == NULL) return NULL;
  a->live++;
  return p;
}
static void sa_free(void *user, void *ptr) {
  if (ptr == NULL) return;
  ((soak_alloc *)user)->live--;
  free(ptr);
}

/* ---- failure reporting ---- */
static uint64_t g_seed;
static long long g_allocs, g_injected, g_nomem, g_bad_calls;
static long g_life, g_step;
static const char *g_what = "";

#define FAIL(...)                                                                          \
  do {                                                                                     \
    fprintf(stderr, "soak: seed %llu life %ld step %ld (%s): ", (unsigned long long)g_seed, \
            g_life, g_step, g_what);                                                       \
    fprintf(stderr, __VA_ARGS__);                                                          \
    fprintf(stderr, "\n");                                                                 \
    exit(1);                                                                               \
  } while (0)

/* A valid call: OK, or (allocation failures on) EFFML_E_NOMEM with a message. */
static int ok_or_nomem(effml_context *ctx, effml_status st, const soak_alloc *a, const char *call) {
  if (st == EFFML_OK) return 1;
  if (st == EFFML_E_NOMEM && a->fail_p > 0) {
    if (effml_context_last_error(ctx)[0] == '\0') FAIL("%s: EFFML_E_NOMEM without a message", call);
    g_nomem++;
    return 0;
  }
  FAIL("%s: %s (%s)", call, effml_status_str(st), effml_context_last_error(ctx));
  return 0;
}

/* A bad call: exactly `want`, with a message. */
static void expect_err(effml_context *ctx, effml_status st, effml_status want, const soak_alloc *a,
                       const char *call) {
  g_bad_calls++;
  if (st == want || (st == EFFML_E_NOMEM && a->fail_p > 0)) {
    if (effml_context_last_error(ctx)[0] == '\0') FAIL("%s: error without a message", call);
    return;
  }
  FAIL("%s: got %s, want %s (%s)", call, effml_status_str(st), effml_status_str(want),
       effml_context_last_error(ctx));
}

/* ---- one random model ---- */
typedef struct {
  int n;             /* layers in the stack */
  int kind[6];       /* 0 dense, 1 activation, 2 layernorm, 3 dropout, 4 LoRA(dense) */
  int64_t width[7];  /* width[0] = in, width[i+1] = out of layer i */
  int act[6];
  double p[6];
  int64_t rank[6];
  int bias[6];
} spec;

static void random_spec(spec *s) {
  s->n = (int)rint_in(1, 6);
  s->width[0] = rint_in(1, 24);
  for (int i = 0; i < s->n; ++i) {
    int k = (int)rint_in(0, 4);
    s->kind[i] = k;
    s->act[i] = (int)rint_in(0, 3);
    s->p[i] = runif() * 0.9;
    s->rank[i] = rint_in(1, 4);
    s->bias[i] = (int)(rnd() & 1);
    s->width[i + 1] = (k == 0 || k == 4) ? rint_in(1, 24) : s->width[i];
  }
}

/* Build the model of `s`; NULL (after freeing what was made) on an allowed NOMEM. */
static effml_layer *build(effml_context *ctx, const spec *s, const soak_alloc *a, uint64_t seed) {
  effml_layer *seq = NULL;
  if (!ok_or_nomem(ctx, effml_layer_sequential_create(ctx, &seq), a, "sequential_create")) return NULL;
  for (int i = 0; i < s->n; ++i) {
    effml_layer *l = NULL;
    effml_status st = EFFML_OK;
    switch (s->kind[i]) {
      case 0: st = effml_layer_dense_create(ctx, s->width[i], s->width[i + 1], s->bias[i], &l); break;
      case 1: st = effml_layer_activation_create(ctx, s->act[i], &l); break;
      case 2: st = effml_layer_layernorm_create(ctx, s->width[i], 1e-5, &l); break;
      case 3: st = effml_layer_dropout_create(ctx, s->p[i], seed + (uint64_t)i, &l); break;
      default: {
        effml_layer *base = NULL;
        st = effml_layer_dense_create(ctx, s->width[i], s->width[i + 1], 1, &base);
        if (st == EFFML_OK) {
          effml_adapter_lora_options o;
          effml_adapter_lora_options_init(&o);
          o.rank = s->rank[i];
          st = effml_adapter_lora_create(ctx, base, &o, &l);
          if (st != EFFML_OK) effml_layer_free(base);
        }
      }
    }
    if (!ok_or_nomem(ctx, st, a, "layer create")) {
      effml_layer_free(seq);
      return NULL;
    }
    st = effml_layer_sequential_add(ctx, seq, l);
    if (!ok_or_nomem(ctx, st, a, "sequential_add")) {
      effml_layer_free(l);
      effml_layer_free(seq);
      return NULL;
    }
  }
  return seq;
}

static void fill(effml_tensor *t) {
  float *p = (float *)effml_tensor_data(t);
  size_t n = effml_tensor_nbytes(t) / sizeof(float);
  for (size_t i = 0; i < n; ++i) p[i] = (float)(2.0 * runif() - 1.0);
}

/* Every parameter's bytes, concatenated (malloc'd; *len receives the size). */
static unsigned char *snapshot(effml_layer *m, size_t *len) {
  size_t total = 0;
  int32_t np = effml_layer_num_params(m);
  for (int32_t i = 0; i < np; ++i) total += effml_tensor_nbytes(effml_layer_param(m, i));
  unsigned char *buf = malloc(total ? total : 1), *p = buf;
  for (int32_t i = 0; i < np; ++i) {
    const effml_tensor *t = effml_layer_param(m, i);
    memcpy(p, effml_tensor_data_const(t), effml_tensor_nbytes(t));
    p += effml_tensor_nbytes(t);
  }
  *len = total;
  return buf;
}

/* ---- one life of a context ---- */
static void life(const char *dir) {
  soak_alloc a = {0, rnd(), 0, 0, 0};
  const int failing = rnd() % 3 == 0;
  effml_context_options co;
  effml_context_options_init(&co);
  co.alloc = sa_alloc;
  co.free = sa_free;
  co.alloc_user_data = &a;
  co.num_threads = (int32_t)rint_in(1, 2);
  co.seed = rnd();
  effml_context *ctx = NULL;
  g_what = "context_create";
  if (effml_context_create(&co, &ctx) != EFFML_OK) FAIL("context_create failed");
  if (failing) a.fail_p = 0.002 + 0.05 * runif();

  spec s;
  random_spec(&s);
  g_what = "build";
  effml_layer *m = build(ctx, &s, &a, rnd());
  const int64_t in = s.width[0], out = s.width[s.n];
  for (int step = 0; m != NULL && step < 12; ++step) {
    g_step = step;
    const int64_t batch = rint_in(1, 9);
    int64_t xs[2] = {batch, in}, ys[2] = {batch, out};
    effml_tensor *x = NULL, *y = NULL, *y2 = NULL, *dy = NULL, *dx = NULL;
    g_what = "tensor_create";
    if (!ok_or_nomem(ctx, effml_tensor_create(ctx, EFFML_F32, 2, xs, &x), &a, "tensor_create x") ||
        !ok_or_nomem(ctx, effml_tensor_create(ctx, EFFML_F32, 2, ys, &y), &a, "tensor_create y") ||
        !ok_or_nomem(ctx, effml_tensor_create(ctx, EFFML_F32, 2, ys, &y2), &a, "tensor_create y2") ||
        !ok_or_nomem(ctx, effml_tensor_create(ctx, EFFML_F32, 2, ys, &dy), &a, "tensor_create dy") ||
        !ok_or_nomem(ctx, effml_tensor_create(ctx, EFFML_F32, 2, xs, &dx), &a, "tensor_create dx"))
      goto next;
    fill(x);
    fill(dy);
    switch (rnd() % 6) {
      case 0: case 1: { /* train step: forward, zero_grad, backward */
        g_what = "forward/backward";
        if (!ok_or_nomem(ctx, effml_layer_forward(ctx, m, x, y, EFFML_LAYER_MODE_TRAIN), &a, "forward"))
          break;
        effml_layer_zero_grad(m);
        ok_or_nomem(ctx, effml_layer_backward(ctx, m, dy, rnd() & 1 ? dx : NULL), &a, "backward");
        break;
      }
      case 2: { /* inference is deterministic */
        g_what = "infer twice";
        if (ok_or_nomem(ctx, effml_layer_forward(ctx, m, x, y, EFFML_LAYER_MODE_INFER), &a, "infer") &&
            ok_or_nomem(ctx, effml_layer_forward(ctx, m, x, y2, EFFML_LAYER_MODE_INFER), &a, "infer") &&
            memcmp(effml_tensor_data(y), effml_tensor_data(y2), effml_tensor_nbytes(y)) != 0)
          FAIL("two INFER passes differ");
        break;
      }
      case 3: { /* save, then load into a fresh copy of the model and compare */
        g_what = "save/load";
        char path[4200];
        snprintf(path, sizeof path, "%s/soak_%ld_%d.safetensors", dir, (long)getpid(), step);
        if (effml_layer_num_params(m) == 0) { /* nothing to save is an error, not an empty file */
          expect_err(ctx, effml_layer_save(ctx, m, path, "m."), EFFML_E_INVALID_ARG, &a,
                     "save of a model without parameters");
        } else if (ok_or_nomem(ctx, effml_layer_save(ctx, m, path, "m."), &a, "save")) {
          uint64_t seed2 = rnd();
          effml_layer *m2 = build(ctx, &s, &a, seed2);
          if (m2 != NULL) {
            size_t l1, l2;
            unsigned char *before = snapshot(m2, &l2);
            effml_status st = effml_layer_load(ctx, m2, path, "m.", EFFML_LAYER_LOAD_STRICT);
            if (ok_or_nomem(ctx, st, &a, "load")) {
              unsigned char *s1 = snapshot(m, &l1), *s2 = snapshot(m2, &l2);
              if (l1 != l2 || memcmp(s1, s2, l1) != 0) FAIL("load did not reproduce the saved parameters");
              free(s1);
              free(s2);
            } else {
              unsigned char *after = snapshot(m2, &l1);
              if (l1 != l2 || memcmp(before, after, l1) != 0) FAIL("a failed load changed parameters");
              free(after);
            }
            /* a wrong prefix names a missing key and changes nothing */
            unsigned char *b2 = snapshot(m2, &l2);
            expect_err(ctx, effml_layer_load(ctx, m2, path, "other.", EFFML_LAYER_LOAD_STRICT),
                       EFFML_E_NOT_FOUND, &a, "load with a wrong prefix");
            unsigned char *a2 = snapshot(m2, &l1);
            if (memcmp(b2, a2, l1) != 0) FAIL("a refused load changed parameters");
            free(b2);
            free(a2);
            free(before);
            effml_layer_free(m2);
          }
        }
        unlink(path);
        break;
      }
      case 4: { /* bad arguments: the model must stay usable afterwards */
        g_what = "bad arguments";
        int64_t bad_in[2] = {batch, in + 1};
        effml_tensor *xb = NULL, *xi = NULL;
        if (ok_or_nomem(ctx, effml_tensor_create(ctx, EFFML_F32, 2, bad_in, &xb), &a, "tensor_create")) {
          fill(xb);
          expect_err(ctx, effml_layer_forward(ctx, m, xb, y, EFFML_LAYER_MODE_TRAIN), EFFML_E_SHAPE, &a,
                     "forward with in+1 features");
        }
        if (ok_or_nomem(ctx, effml_tensor_create(ctx, EFFML_I32, 2, xs, &xi), &a, "tensor_create")) {
          int st = effml_layer_forward(ctx, m, xi, y, EFFML_LAYER_MODE_INFER);
          if (st != EFFML_E_DTYPE && !(st == EFFML_E_NOMEM && a.fail_p > 0))
            FAIL("forward with i32 input: %s (%s)", effml_status_str(st), effml_context_last_error(ctx));
        }
        expect_err(ctx, effml_layer_forward(ctx, m, NULL, y, EFFML_LAYER_MODE_INFER),
                   EFFML_E_INVALID_ARG, &a, "forward with x = NULL");
        expect_err(ctx, effml_layer_forward(ctx, m, x, y, 7), EFFML_E_INVALID_ARG, &a,
                   "forward with mode 7");
        effml_layer *l = NULL;
        expect_err(ctx, effml_layer_dense_create(ctx, -(int64_t)(rnd() % 5), 3, 1, &l),
                   EFFML_E_INVALID_ARG, &a, "dense_create with in <= 0");
        expect_err(ctx, effml_layer_dropout_create(ctx, 1.5, 1, &l), EFFML_E_INVALID_ARG, &a,
                   "dropout_create with p = 1.5");
        int64_t neg[2] = {-1, 3};
        effml_tensor *tn = NULL;
        expect_err(ctx, effml_tensor_create(ctx, EFFML_F32, 2, neg, &tn), EFFML_E_SHAPE, &a,
                   "tensor_create with a negative size");
        expect_err(ctx, effml_layer_load(ctx, m, "/nonexistent/soak.safetensors", NULL, 0), EFFML_E_IO,
                   &a, "load of a missing file");
        effml_tensor_free(xb);
        effml_tensor_free(xi);
        /* still usable */
        ok_or_nomem(ctx, effml_layer_forward(ctx, m, x, y, EFFML_LAYER_MODE_INFER), &a,
                    "forward after bad arguments");
        break;
      }
      default: { /* backward without a preceding TRAIN forward is a state error */
        g_what = "backward without forward";
        effml_layer *fresh = build(ctx, &s, &a, rnd());
        if (fresh) {
          effml_status st = effml_layer_backward(ctx, fresh, dy, NULL);
          if (st != EFFML_OK && effml_context_last_error(ctx)[0] == '\0')
            FAIL("backward error without a message");
          effml_layer_free(fresh);
        }
      }
    }
  next:
    effml_tensor_free(x);
    effml_tensor_free(y);
    effml_tensor_free(y2);
    effml_tensor_free(dy);
    effml_tensor_free(dx);
  }
  effml_layer_free(m);
  g_what = "context_free";
  effml_context_free(ctx);
  if (a.live != 0) FAIL("%lld blocks still allocated after every object was freed", (long long)a.live);
  g_allocs += a.count;
  g_injected += a.failed;
}

int main(int argc, char **argv) {
  uint64_t seed = 1;
  long iterations = 200, verbose = 0;
  double seconds = 0;
  const char *dir = NULL;
  for (int i = 1; i < argc; ++i) {
    if (!strcmp(argv[i], "--seed") && i + 1 < argc) seed = strtoull(argv[++i], NULL, 10);
    else if (!strcmp(argv[i], "--iterations") && i + 1 < argc) iterations = strtol(argv[++i], NULL, 10);
    else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) seconds = strtod(argv[++i], NULL);
    else if (!strcmp(argv[i], "--dir") && i + 1 < argc) dir = argv[++i];
    else if (!strcmp(argv[i], "--verbose")) verbose = 1;
    else {
      fprintf(stderr, "usage: %s [--seed S] [--iterations N] [--seconds T] [--dir DIR] [--verbose]\n",
              argv[0]);
      return strcmp(argv[i], "--help") ? 2 : 0;
    }
  }
  if (!dir) {
    const char *t = getenv("TMPDIR");
    dir = t && *t ? t : "/tmp";
  }
  g_seed = seed;
  rng_state = seed;
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  long n = 0;
  for (;; ++n) {
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double el = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    if (seconds > 0 ? el >= seconds : n >= iterations) break;
    g_life = n;
    g_step = -1;
    life(dir);
    if (verbose && n % 1000 == 0) fprintf(stderr, "soak: %ld lives, %.0f s\n", n, el);
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  printf("soak: seed %llu, %ld lives in %.1f s: %lld allocations, %lld failed on purpose "
         "(%lld calls returned EFFML_E_NOMEM), %lld bad-argument calls refused: OK\n",
         (unsigned long long)seed, n,
         (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec), g_allocs,
         g_injected, g_nomem, g_bad_calls);
  return 0;
}
