/* Sampler benchmarks.  How the two sides meet: this program times ours
 * (one warm-up, then --reps runs, default 5) with the case's floor measured
 * interleaved in the same process (ours, floor, ours, floor, ...), prints the
 * machine line and the "_vs_floor" lines itself (speedup = floor / ours),
 * writes the inputs as .npy under /tmp and ours' raw runs to
 * $EFFML_BENCH_SAMPLER_OURS (default /tmp/effml_bench_sampler_ours.json);
 * bench/sampler_baseline.py then times the Python baseline on the same data
 * and prints the combined lines (speedup = baseline_s / ours_s).
 * scripts/bench.sh alternates the two processes several rounds and pools
 * them (bench/combine.py).
 * Our context keeps a worker pool for the library's loops
 * (effml_context_set_thread_pool, default spin time; "--no-pool" for
 * per-call threads, "--pool-spin US"); the machine line says so ("pool",
 * "pool_spin_us").
 *
 * Cases:
 *   smote_200k_32    SMOTE, 200 000 x 32 f64, 5 % minority, k = 5, vs
 *                    imbalanced-learn 0.10 SMOTE.fit_resample, timed on a
 *                    context with the default allocator (what a caller who
 *                    sets no allocator hooks gets: outputs of 32 MiB and more
 *                    in 2 MiB-aligned mappings advised for transparent huge
 *                    pages, lib/core/context.c); ours_cpu_s / floor_cpu_s are
 *                    the process CPU seconds per call (all threads), the
 *                    figure to trust on a loaded machine.  The peak memory of
 *                    the library's own allocations (lib_peak_mb) comes from
 *                    one more, untimed call on a context whose allocator hook
 *                    counts them; the process peak RSS beside it.
 *   smote_200k_32_vs_floor  floor = what exact SMOTE cannot avoid: the
 *                    neighbour search's GEMM work (the minority class's Gram
 *                    matrix, cblas_ssyrk, the cheapest exact search we know:
 *                    f32 candidates, exact f64 re-rank) plus writing the
 *                    output once into memory of the kind the API hands back:
 *                    new zeroed tensors of the outputs' shapes made through
 *                    the same context, hence the same allocation path as
 *                    SMOTE's outputs (effml_tensor_create's zero fill is the
 *                    one write).
 *   smote_200k_32_t1 the same call on one library thread (vs the same
 *                    imbalanced-learn runs): how the method scales.
 *   smote_200k_32_into, smote_200k_32_into_vs_floor  the same through
 *                    effml_sampler_resample_into, the caller's output buffers
 *                    reused run after run (a user resampling repeatedly pays
 *                    the fresh-page cost once); its floor writes the output
 *                    into that warm memory.
 *   leverage_1e6_32  exact leverage scores of 10^6 x 32 f64 vs numpy
 *                    (q, _ = np.linalg.qr(A); (q*q).sum(1)); the baseline
 *                    script also reports the max difference.
 *   leverage_1e6_32_vs_floor  floor = two streaming read passes over A (Gram
 *                    pass and output pass) plus writing tau.
 *   temperature_draws  alias draws over 8 temperature-weighted sources on one
 *                    thread vs numpy Generator.choice(8, size, p=q).
 *   parity_<sampler>_<n>  the imbalanced-learn-parity samplers (NearMiss 1/2/3,
 *                    RENN, AllKNN, NCL, CNN, OSS, ClusterCentroids, IHT,
 *                    SVM-SMOTE, KMeans-SMOTE, SMOTEN, SMOTEENN, SMOTETomek)
 *                    on a Gaussian two-class mixture (d = 16, the minority
 *                    shifted by 0.35 per feature, 10 % minority unless the
 *                    table says otherwise) vs the same imbalanced-learn 0.10
 *                    class on the same .npy data.  200 000 rows, except
 *                    where imbalanced-learn's algorithm cannot finish in a
 *                    few seconds per run: NearMiss-2 asks its kNN for every
 *                    minority row of each majority row (an n_maj x n_min
 *                    array), CNN loops in Python per sample, OSS fits a
 *                    1-NN per seed, ClusterCentroids runs k-means with
 *                    n_minority centres, SMOTEN builds the minority's dense
 *                    VDM distance matrix -- each case's n is in its name.
 *                    SVM-SMOTE gets the same support vectors on both sides
 *                    (a fixed band around the class boundary; imblearn's
 *                    svm_estimator is a stub whose fit sets support_), so the
 *                    SVC fit is out of both timings; IHT uses the same
 *                    nearest-centroid softmax classifier on both sides (a C
 *                    callback here, a scikit-learn estimator there).  Each
 *                    line also carries the library's peak memory during the
 *                    call (context allocator hook, outputs included),
 *                    output_mb (x_out + y_out) and peak_over_output.  The
 *                    parity cases are timed on that counting context, so
 *                    their outputs come from plain malloc, not from the
 *                    default allocator's huge-page mappings.
 *
 * Options: --threads N (library threads, default 2), --reps N (default 5),
 * --quick (smaller sizes for a smoke run), --only smote|leverage|temperature|parity
 * (--only parity:NAME runs one parity case)
 * (one case; the baseline script then needs the others' files from an
 * earlier full run).  OpenBLAS threads are the caller's
 * (OPENBLAS_NUM_THREADS). */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "benchutil.h"
#include "effml.h"

/* Counting allocator: peak bytes held by the library. */
typedef struct {
  int64_t live, peak;
} counter;

static void *count_alloc(void *ud, size_t size) {
  counter *c = (counter *)ud;
  size_t *p = (size_t *)malloc(size + 64);
  if (!p) return NULL;
  p[0] = size;
  c->live += (int64_t)size;
  if (c->live > c->peak) c->peak = c->live;
  return (char *)p + 64;
}

static void count_free(void *ud, void *ptr) {
  counter *c = (counter *)ud;
  size_t *p = (size_t *)(void *)((char *)ptr - 64);
  c->live -= (int64_t)p[0];
  free(p);
}

/* splitmix64 of (seed, index) -> uniform [0,1): the baseline script regenerates nothing; it loads the .npy. */
static double unif(uint64_t seed, uint64_t i) {
  uint64_t x = seed * 0x9e3779b97f4a7c15ULL + i;
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return (double)(x >> 11) * 0x1.0p-53;
}

/* CPU seconds of the whole process (all threads, user + system) so far. */
static double cpu_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_sec +
         1e-6 * (double)ru.ru_stime.tv_usec;
}

static double med_copy(const double *v, int n) {
  double c[32];
  memcpy(c, v, (size_t)n * sizeof *c);
  return bu_median(c, n);
}

/* One streaming read pass over v[0..n) (four accumulators, so the loop is
 * bound by memory, not by the add latency). */
static double read_pass(const double *v, int64_t n) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += v[i];
    s1 += v[i + 1];
    s2 += v[i + 2];
    s3 += v[i + 3];
  }
  for (; i < n; ++i) s0 += v[i];
  return s0 + s1 + s2 + s3;
}

/* Passes the exact leverage call makes over A: the library reports one
 * progress step per pass (counted on an untimed call). */
static int32_t count_progress(void *user, const char *call, int64_t done, int64_t total) {
  (void)call;
  (void)done;
  (void)total;
  ++*(int *)user;
  return 0;
}

#define CHECK(expr)                                                                  \
  do {                                                                               \
    effml_status st_ = (expr);                                                       \
    if (st_ != EFFML_OK) {                                                           \
      fprintf(stderr, "bench_sampler: %s failed: %s\n", #expr, effml_context_last_error(ctx)); \
      exit(1);                                                                       \
    }                                                                                \
  } while (0)

/* ---- parity cases: the imbalanced-learn-parity samplers (see the top comment) ---- */

typedef struct {
  const char *name;  /* case = "parity_<name>_<n/1000>k" */
  int32_t method, version;
  int64_t n;         /* rows (scripts/bench.sh default) */
  double frac;       /* minority fraction */
  int nominal;       /* SMOTEN: x holds category codes */
  int base_reps;     /* imblearn repetitions per round (fewer where one run takes seconds) */
} parity_case;

/* Sizes: every case's imblearn run takes at most a few seconds on the 2-core
 * CI VM, so the whole sampler bench fits the recording window (at 200 000
 * rows imbalanced-learn 0.10 needs ~37 s for one NearMiss-1 run there and
 * minutes for the all-pairs cleaners: its kNN is brute force for d = 16 >
 * 15, as ours).  --parity-scale S multiplies every n (S = 4 gives 200 000
 * rows for NearMiss-1/3, IHT, SVM-SMOTE and KMeans-SMOTE).  The baseline runs
 * base_reps times per round without a warm-up (scripts/bench.sh pools 3
 * rounds: 6 runs); ours runs min(--reps, 3) times after one warm-up (9
 * pooled runs), so the 15 cases fit the recording window. */
static const parity_case PARITY[] = {
    {"nearmiss1", EFFML_SAMPLER_RESAMPLE_NEARMISS, 1, 50000, 0.10, 0, 2},
    {"nearmiss2", EFFML_SAMPLER_RESAMPLE_NEARMISS, 2, 10000, 0.10, 0, 2},
    {"nearmiss3", EFFML_SAMPLER_RESAMPLE_NEARMISS, 3, 50000, 0.10, 0, 2},
    {"renn", EFFML_SAMPLER_RESAMPLE_RENN, 1, 20000, 0.10, 0, 2},
    {"allknn", EFFML_SAMPLER_RESAMPLE_ALLKNN, 1, 20000, 0.10, 0, 2},
    {"ncl", EFFML_SAMPLER_RESAMPLE_NCL, 1, 20000, 0.10, 0, 2},
    {"cnn", EFFML_SAMPLER_RESAMPLE_CNN, 1, 1000, 0.10, 0, 2},
    {"oss", EFFML_SAMPLER_RESAMPLE_OSS, 1, 10000, 0.10, 0, 2},
    {"cluster_centroids", EFFML_SAMPLER_RESAMPLE_CLUSTER_CENTROIDS, 1, 2000, 0.05, 0, 2},
    {"iht", EFFML_SAMPLER_RESAMPLE_IHT, 1, 50000, 0.10, 0, 2},
    {"svmsmote", EFFML_SAMPLER_RESAMPLE_SVMSMOTE, 1, 50000, 0.10, 0, 2},
    {"kmeans_smote", EFFML_SAMPLER_RESAMPLE_KMEANS_SMOTE, 1, 50000, 0.10, 0, 2},
    {"smoten", EFFML_SAMPLER_RESAMPLE_SMOTEN, 1, 20000, 0.10, 1, 2},
    {"smoteenn", EFFML_SAMPLER_RESAMPLE_SMOTEENN, 1, 20000, 0.10, 0, 2},
    {"smotetomek", EFFML_SAMPLER_RESAMPLE_SMOTETOMEK, 1, 20000, 0.10, 0, 2},
};

/* The IHT classifier (same as bench/sampler_baseline.py's NearestCentroidSoftmax):
 * P(c | x) proportional to exp(-|x - mean_c|^2 / 2), mean_c over the fold's
 * rows of class c (a class absent from the fold gets probability 0). */
static int nc_softmax(void *ud, const double *xt, const int64_t *yt, int64_t nt, const double *xq,
                      int64_t nq, int64_t d, const int64_t *classes, int64_t nc, double *proba) {
  (void)ud;
  double *mu = (double *)calloc((size_t)(nc * d), sizeof(double));
  int64_t *cn = (int64_t *)calloc((size_t)nc, sizeof(int64_t));
  if (!mu || !cn) {
    free(mu);
    free(cn);
    return 1;
  }
  for (int64_t i = 0; i < nt; ++i) {
    int64_t c = 0;
    while (c < nc && classes[c] != yt[i]) ++c;
    if (c == nc) continue;
    ++cn[c];
    for (int64_t j = 0; j < d; ++j) mu[c * d + j] += xt[i * d + j];
  }
  for (int64_t c = 0; c < nc; ++c)
    for (int64_t j = 0; j < d; ++j) mu[c * d + j] /= cn[c] ? (double)cn[c] : 1.0;
  for (int64_t i = 0; i < nq; ++i) {
    double mx = -INFINITY;
    for (int64_t c = 0; c < nc; ++c) {
      double s = 0;
      for (int64_t j = 0; j < d; ++j) {
        double t = xq[i * d + j] - mu[c * d + j];
        s += t * t;
      }
      proba[i * nc + c] = cn[c] ? -0.5 * s : -INFINITY;
      if (proba[i * nc + c] > mx) mx = proba[i * nc + c];
    }
    double z = 0;
    for (int64_t c = 0; c < nc; ++c) z += (proba[i * nc + c] = exp(proba[i * nc + c] - mx));
    for (int64_t c = 0; c < nc; ++c) proba[i * nc + c] /= z;
  }
  free(mu);
  free(cn);
  return 0;
}

/* Standard normal from two uniforms (Box-Muller). */
static double gauss(uint64_t seed, uint64_t i) {
  double u1 = unif(seed, 2 * i), u2 = unif(seed, 2 * i + 1);
  if (u1 < 1e-300) u1 = 1e-300;
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

static void run_parity(effml_context *ctx, counter *cnt, FILE *js, int threads, int reps,
                       double scale, const char *which) {
  double t[32];
  const int64_t d = 16;
  const double shift = 0.35;
  const int preps = reps < 3 ? reps : 3;
  for (size_t ci = 0; ci < sizeof PARITY / sizeof PARITY[0]; ++ci) {
    const parity_case *pc = &PARITY[ci];
    if (*which && strcmp(which, pc->name)) continue;
    const int64_t n = (int64_t)((double)pc->n * scale);
    char cname[96], xpath[160], ypath[160], spath[160];
    snprintf(cname, sizeof cname, "parity_%s_%lldk", pc->name, (long long)(n / 1000));
    snprintf(xpath, sizeof xpath, "/tmp/effml_bench_sampler_%s_x.npy", cname);
    snprintf(ypath, sizeof ypath, "/tmp/effml_bench_sampler_%s_y.npy", cname);
    snprintf(spath, sizeof spath, "/tmp/effml_bench_sampler_%s_support.npy", cname);
    int64_t xs[2] = {n, d};
    effml_tensor *x = NULL, *y = NULL, *sup = NULL;
    CHECK(effml_tensor_create(ctx, EFFML_F64, 2, xs, &x));
    CHECK(effml_tensor_create(ctx, EFFML_I64, 1, &n, &y));
    double *xp = (double *)effml_tensor_data(x);
    int64_t *yp = (int64_t *)effml_tensor_data(y);
    int64_t n_sup = 0;
    for (int64_t i = 0; i < n; ++i) {
      yp[i] = unif(7, (uint64_t)i) < pc->frac;
      double proj = 0;
      for (int64_t j = 0; j < d; ++j) {
        double v = gauss(8, (uint64_t)(i * d + j)) + shift * (double)yp[i];
        proj += v;
        xp[i * d + j] = pc->nominal ? fmin(3.0, fmax(-3.0, floor(1.5 * v))) : v;
      }
      proj /= sqrt((double)d); /* class means 0 and shift * sqrt(d) along the diagonal */
      if (fabs(proj - 0.5 * shift * sqrt((double)d)) < 0.5) ++n_sup;
    }
    if (pc->method == EFFML_SAMPLER_RESAMPLE_SVMSMOTE) {
      /* support vectors: a fixed band around the class boundary */
      CHECK(effml_tensor_create(ctx, EFFML_I64, 1, &n_sup, &sup));
      int64_t *sp = (int64_t *)effml_tensor_data(sup), m = 0;
      for (int64_t i = 0; i < n; ++i) {
        double proj = 0;
        for (int64_t j = 0; j < d; ++j) proj += xp[i * d + j];
        proj /= sqrt((double)d);
        if (fabs(proj - 0.5 * shift * sqrt((double)d)) < 0.5) sp[m++] = i;
      }
      CHECK(effml_io_npy_save(ctx, spath, sup));
    }
    CHECK(effml_io_npy_save(ctx, xpath, x));
    CHECK(effml_io_npy_save(ctx, ypath, y));
    effml_sampler_resample_options o;
    effml_sampler_resample_options_init(&o);
    o.method = pc->method;
    o.version = pc->version;
    o.seed = 0;
    if (pc->method == EFFML_SAMPLER_RESAMPLE_NCL) o.kind_sel = EFFML_SAMPLER_ENN_MODE;
    if (pc->method == EFFML_SAMPLER_RESAMPLE_KMEANS_SMOTE) o.cluster_balance_threshold = 0.05;
    if (pc->method == EFFML_SAMPLER_RESAMPLE_IHT) o.proba_fn = nc_softmax;
    if (sup) {
      o.support_indices = (const int64_t *)effml_tensor_data(sup);
      o.n_support = n_sup;
    }
    const int64_t base_live = cnt->live;
    int64_t peak = 0, rows_out = 0;
    for (int r = -1; r < preps; ++r) {
      effml_tensor *xr = NULL, *yr = NULL;
      cnt->peak = cnt->live;
      double t0 = bu_now();
      CHECK(effml_sampler_resample(ctx, &o, x, y, &xr, &yr));
      double t1 = bu_now();
      if (cnt->peak - base_live > peak) peak = cnt->peak - base_live;
      rows_out = effml_tensor_shape(yr)[0];
      effml_tensor_free(xr);
      effml_tensor_free(yr);
      if (r >= 0) t[r] = t1 - t0;
    }
    const double out_mb = (double)rows_out * (double)(d + 1) * 8.0 / 1048576.0;
    const double peak_mb = (double)peak / 1048576.0;
    fprintf(stderr, "bench_sampler: %s ours median %.4f s, %lld rows out, library peak %.2f MiB = %.2f x output\n",
            cname, med_copy(t, preps), (long long)rows_out, peak_mb, peak_mb / out_mb);
    fprintf(js, "\"%s\": {\"ours_runs\": [", cname);
    for (int r = 0; r < preps; ++r) fprintf(js, "%s%.9g", r ? ", " : "", t[r]);
    fprintf(js, "], \"sampler\": \"%s\", \"n\": %lld, \"d\": %lld, \"minority_fraction\": %g, "
                "\"threads\": %d, \"rows_out\": %lld, \"lib_peak_mb\": %.3f, \"output_mb\": %.3f, "
                "\"peak_over_output\": %.3f, \"baseline_reps\": %d, \"x\": \"%s\", \"y\": \"%s\"%s%s%s},\n",
            pc->name, (long long)n, (long long)d, pc->frac, threads, (long long)rows_out, peak_mb,
            out_mb, peak_mb / out_mb, pc->base_reps, xpath, ypath, sup ? ", \"support\": \"" : "",
            sup ? spath : "", sup ? "\"" : "");
    effml_tensor_free(sup);
    effml_tensor_free(x);
    effml_tensor_free(y);
  }
}

int main(int argc, char **argv) {
  int threads = 2, reps = 5, quick = 0;
  const char *only = ""; /* --only smote|leverage|temperature|parity[:NAME]: that case alone */
  double scale = 1.0;
  for (int i = 1; i < argc; ++i) {
    if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--quick")) quick = 1;
    else if (!strcmp(argv[i], "--only") && i + 1 < argc) only = argv[++i];
    else if (!strcmp(argv[i], "--parity-scale") && i + 1 < argc) scale = atof(argv[++i]);
  }
  if (reps < 1) reps = 1;
  if (reps > 31) reps = 31;
  counter cnt = {0, 0};
  effml_context_options co;
  effml_context_options_init(&co);
  co.num_threads = threads;
  co.alloc = count_alloc;
  co.free = count_free;
  co.alloc_user_data = &cnt;
  effml_context *ctx = NULL;
  if (effml_context_create(&co, &ctx) != EFFML_OK) return 1;
  /* the default allocator (no hooks), for the cases timed as a caller gets them */
  effml_context_options dco;
  effml_context_options_init(&dco);
  dco.num_threads = threads;
  effml_context *dctx = NULL;
  if (effml_context_create(&dco, &dctx) != EFFML_OK) return 1;
  const char *path = getenv("EFFML_BENCH_SAMPLER_OURS");
  if (!path || !*path) path = "/tmp/effml_bench_sampler_ours.json";
  FILE *js = fopen(path, "w");
  if (!js) return 1;
  fprintf(js, "{");
  double t[32], tf[32];
  char pool[96];
  if (bu_pool_setup(ctx, argc, argv, pool, sizeof pool) < 0 ||
      bu_pool_setup(dctx, argc, argv, NULL, 0) < 0) /* both contexts alike */
    return 1;
  bu_machine("sampler", threads, pool);

  /* ---- smote_200k_32 ---- */
  if (!*only || !strcmp(only, "smote")) {
    const int64_t n = quick ? 20000 : 200000, d = 32;
    int64_t xs[2] = {n, d};
    effml_tensor *x = NULL, *y = NULL;
    CHECK(effml_tensor_create(ctx, EFFML_F64, 2, xs, &x));
    CHECK(effml_tensor_create(ctx, EFFML_I64, 1, &n, &y));
    double *xp = (double *)effml_tensor_data(x);
    int64_t *yp = (int64_t *)effml_tensor_data(y);
    for (int64_t i = 0; i < n; ++i) {
      yp[i] = (i % 20 == 0); /* 5 % minority */
      for (int64_t j = 0; j < d; ++j) xp[i * d + j] = unif(1, (uint64_t)(i * d + j)) + 0.5 * (double)yp[i];
    }
    CHECK(effml_io_npy_save(ctx, "/tmp/effml_bench_sampler_smote_x.npy", x));
    CHECK(effml_io_npy_save(ctx, "/tmp/effml_bench_sampler_smote_y.npy", y));
    effml_sampler_resample_options o;
    effml_sampler_resample_options_init(&o);
    o.k_neighbors = 5;
    int64_t base_live = cnt.live;
    /* floor inputs: the minority rows as f32 (what the Gram matrix reads) */
    const int64_t nmin = (n + 19) / 20, n_out = n + (n - 2 * nmin);
    float *xm = (float *)malloc((size_t)(nmin * d) * sizeof(float));
    float *gram = (float *)malloc((size_t)(nmin * nmin) * sizeof(float));
    if (!xm || !gram) return 1;
    for (int64_t i = 0; i < nmin; ++i)
      for (int64_t j = 0; j < d; ++j) xm[i * d + j] = (float)xp[i * 20 * d + j];
    double tg[32], tw[32], cu[32], cf[32];
    for (int r = -1; r < reps; ++r) {
      effml_tensor *xr = NULL, *yr = NULL;
      double c0 = cpu_s(), t0 = bu_now();
      CHECK(effml_sampler_resample(dctx, &o, x, y, &xr, &yr));
      double t1 = bu_now(), c1 = cpu_s();
      effml_tensor_free(xr);
      effml_tensor_free(yr);
      /* floor, interleaved: Gram of the minority class + new output tensors from the
       * same context (same allocation path as SMOTE's outputs) */
      double c2 = cpu_s(), t2 = bu_now();
      cblas_ssyrk(CblasRowMajor, CblasUpper, CblasNoTrans, (int)nmin, (int)d, 1.0f, xm, (int)d,
                  0.0f, gram, (int)nmin);
      double t3 = bu_now();
      int64_t os[2] = {n_out, d};
      effml_tensor *fx = NULL, *fy = NULL;
      CHECK(effml_tensor_create(dctx, EFFML_F64, 2, os, &fx));
      CHECK(effml_tensor_create(dctx, EFFML_I64, 1, &n_out, &fy));
      /* the write itself: a fresh mapping comes back zero without being touched (the
       * zeroed create skips its memset there), so the floor writes the output once */
      memset(effml_tensor_data(fx), 0, (size_t)(n_out * d) * sizeof(double));
      memset(effml_tensor_data(fy), 0, (size_t)n_out * sizeof(int64_t));
      double t4 = bu_now(), c4 = cpu_s();
      effml_tensor_free(fx);
      effml_tensor_free(fy);
      if (r >= 0) {
        t[r] = t1 - t0;
        tg[r] = t3 - t2;
        tw[r] = t4 - t3;
        tf[r] = tg[r] + tw[r];
        cu[r] = c1 - c0;
        cf[r] = c4 - c2;
      }
    }
    /* the library's peak memory: one more call, untimed, on the counting context */
    {
      effml_tensor *xr = NULL, *yr = NULL;
      cnt.peak = cnt.live;
      CHECK(effml_sampler_resample(ctx, &o, x, y, &xr, &yr));
      effml_tensor_free(xr);
      effml_tensor_free(yr);
    }
    /* the same on one thread (interleaved with the 2-thread call: t1, then t2 again) */
    double t1r[32];
    for (int r = -1; r < reps; ++r) {
      effml_tensor *xr = NULL, *yr = NULL;
      CHECK(effml_context_set_num_threads(dctx, 1));
      double t0 = bu_now();
      CHECK(effml_sampler_resample(dctx, &o, x, y, &xr, &yr));
      double t1 = bu_now();
      CHECK(effml_context_set_num_threads(dctx, threads));
      effml_tensor_free(xr);
      effml_tensor_free(yr);
      if (r >= 0) t1r[r] = t1 - t0;
    }
    /* the same into caller buffers (effml_sampler_resample_into), reused run after run,
     * against the floor for that case: the Gram matrix + writing the output once into
     * memory already written (warm) */
    double ti[32], tfi[32], cui[32], cfi[32];
    {
      int64_t os[2] = {n_out, d};
      effml_tensor *bx = NULL, *by = NULL;
      CHECK(effml_tensor_create(dctx, EFFML_F64, 2, os, &bx));
      CHECK(effml_tensor_create(dctx, EFFML_I64, 1, &n_out, &by));
      for (int r = -1; r < reps; ++r) {
        int64_t got = 0;
        double c0 = cpu_s(), t0 = bu_now();
        CHECK(effml_sampler_resample_into(dctx, &o, x, y, bx, by, &got));
        double t1 = bu_now(), c1 = cpu_s();
        if (got != n_out) {
          fprintf(stderr, "bench_sampler: resample_into gave %lld rows, expected %lld\n", (long long)got,
                  (long long)n_out);
          return 1;
        }
        cblas_ssyrk(CblasRowMajor, CblasUpper, CblasNoTrans, (int)nmin, (int)d, 1.0f, xm, (int)d,
                    0.0f, gram, (int)nmin);
        memset(effml_tensor_data(bx), 0, (size_t)(n_out * d) * sizeof(double));
        memset(effml_tensor_data(by), 0, (size_t)n_out * sizeof(int64_t));
        double t2 = bu_now(), c2 = cpu_s();
        if (r >= 0) {
          ti[r] = t1 - t0;
          tfi[r] = t2 - t1;
          cui[r] = c1 - c0;
          cfi[r] = c2 - c1;
        }
      }
      effml_tensor_free(bx);
      effml_tensor_free(by);
    }
    free(xm);
    free(gram);
    /* peak of the last run: output tensors (x_out, y_out) + plan + working memory */
    double peak_mb = (double)(cnt.peak - base_live) / 1048576.0;
    double out_mb = (double)n_out * (double)(d + 1) * 8.0 / 1048576.0;
    char extra[512];
    double gm[32], wm[32];
    memcpy(gm, tg, sizeof gm);
    memcpy(wm, tw, sizeof wm);
    snprintf(extra, sizeof extra,
             "\"threads\":%d,\"n\":%lld,\"d\":%lld,\"k\":5,\"floor_gemm_s\":%.6g,"
             "\"floor_output_write_s\":%.6g,\"output_mb\":%.2f,\"ours_cpu_s\":%.6g,"
             "\"floor_cpu_s\":%.6g,\"allocator\":\"default\"",
             threads, (long long)n, (long long)d, bu_median(gm, reps), bu_median(wm, reps), out_mb,
             bu_median(cu, reps), bu_median(cf, reps));
    bu_report_runs("sampler", "smote_200k_32_vs_floor", t, reps,
                   "floor: ssyrk of the minority rows + new output tensor", tf, reps, extra);
    fprintf(stderr, "bench_sampler: smote ours median %.4f s, library peak %.1f MiB (outputs %.1f MiB)\n",
            med_copy(t, reps), peak_mb, out_mb);
    snprintf(extra, sizeof extra,
             "\"threads\":%d,\"n\":%lld,\"d\":%lld,\"k\":5,\"output_mb\":%.2f,"
             "\"ours_cpu_s\":%.6g,\"floor_cpu_s\":%.6g",
             threads, (long long)n, (long long)d, out_mb, bu_median(cui, reps), bu_median(cfi, reps));
    bu_report_runs("sampler", "smote_200k_32_into_vs_floor", ti, reps,
                   "floor: ssyrk of the minority rows + writing the output (warm)", tfi, reps, extra);
    fprintf(js, "\"smote_200k_32_t1\": {\"ours_runs\": [");
    for (int r = 0; r < reps; ++r) fprintf(js, "%s%.9g", r ? ", " : "", t1r[r]);
    fprintf(js, "], \"n\": %lld, \"d\": %lld, \"k\": 5, \"threads\": 1},\n", (long long)n,
            (long long)d);
    fprintf(js, "\"smote_200k_32_into\": {\"ours_runs\": [");
    for (int r = 0; r < reps; ++r) fprintf(js, "%s%.9g", r ? ", " : "", ti[r]);
    fprintf(js, "], \"n\": %lld, \"d\": %lld, \"k\": 5, \"threads\": %d},\n", (long long)n,
            (long long)d, threads);
    fprintf(js, "\"smote_200k_32\": {\"ours_runs\": [");
    for (int r = 0; r < reps; ++r) fprintf(js, "%s%.9g", r ? ", " : "", t[r]);
    fprintf(js, "], \"n\": %lld, \"d\": %lld, \"k\": 5, "
                "\"threads\": %d, \"rows_out\": %lld, \"lib_peak_mb\": %.2f, \"output_mb\": %.2f, "
                "\"peak_over_output\": %.3f, \"process_peak_rss_mb\": %.1f},\n",
            (long long)n, (long long)d, threads, (long long)n_out, peak_mb, out_mb, peak_mb / out_mb,
            (double)bu_peak_rss() / 1048576.0);
    effml_tensor_free(x);
    effml_tensor_free(y);
  }

  /* ---- leverage_1e6_32 ---- */
  if (!*only || !strcmp(only, "leverage")) {
    const int64_t n = quick ? 100000 : 1000000, d = 32;
    int64_t as[2] = {n, d};
    effml_tensor *a = NULL, *tau = NULL;
    CHECK(effml_tensor_create(ctx, EFFML_F64, 2, as, &a));
    double *ap = (double *)effml_tensor_data(a);
    /* columns with scales 1 .. 1e-6 (cond ~ 1e6) and heavy rows every 1000th */
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < d; ++j)
        ap[i * d + j] = (unif(2, (uint64_t)(i * d + j)) - 0.5) * (i % 1000 == 0 ? 50.0 : 1.0) *
                        (j == d - 1 ? 1e-6 : 1.0);
    CHECK(effml_io_npy_save(ctx, "/tmp/effml_bench_sampler_lev_a.npy", a));
    effml_sampler_leverage_options lo;
    effml_sampler_leverage_options_init(&lo);
    volatile double sink_d = 0;
    int lev_passes = 0;
    effml_context_set_progress(ctx, count_progress, &lev_passes);
    CHECK(effml_sampler_leverage_scores(ctx, &lo, a, &tau));
    effml_context_set_progress(ctx, NULL, NULL);
    for (int method = 0; method < 2; ++method) {
      lo.method = method;
      for (int r = -1; r < reps; ++r) {
        effml_tensor_free(tau);
        tau = NULL;
        double t0 = bu_now();
        CHECK(effml_sampler_leverage_scores(ctx, &lo, a, &tau));
        double t1 = bu_now();
        if (method == 0) { /* floor, interleaved: two read passes over A + writing tau */
          sink_d += read_pass(ap, n * d);
          sink_d += read_pass(ap, n * d);
          effml_tensor *ft = NULL;
          CHECK(effml_tensor_create(ctx, EFFML_F64, 1, &n, &ft));
          effml_tensor_free(ft);
        }
        double t2 = bu_now();
        if (r >= 0) {
          t[r] = t1 - t0;
          tf[r] = t2 - t1;
        }
      }
      const char *key = method == 0 ? "leverage_1e6_32" : "leverage_1e6_32_sketch";
      if (method == 0) {
        char extra[256];
        snprintf(extra, sizeof extra,
                 "\"threads\":%d,\"n\":%lld,\"d\":%lld,\"a_mb\":%.1f,\"passes_over_a\":%d", threads,
                 (long long)n, (long long)d, (double)(n * d) * 8.0 / 1048576.0, lev_passes);
        bu_report_runs("sampler", "leverage_1e6_32_vs_floor", t, reps,
                       "floor: two read passes over A + writing tau", tf, reps, extra);
        CHECK(effml_io_npy_save(ctx, "/tmp/effml_bench_sampler_lev_tau.npy", tau));
      } else {
        CHECK(effml_io_npy_save(ctx, "/tmp/effml_bench_sampler_lev_tau_sketch.npy", tau));
      }
      fprintf(stderr, "bench_sampler: %s ours median %.4f s\n", key, med_copy(t, reps));
      fprintf(js, "\"%s\": {\"ours_runs\": [", key);
      for (int r = 0; r < reps; ++r) fprintf(js, "%s%.9g", r ? ", " : "", t[r]);
      if (method == 0)
        fprintf(js, "], \"n\": %lld, \"d\": %lld, \"threads\": %d, \"passes_over_a\": %d, "
                    "\"method\": \"CholeskyQR (refined unless provably not needed), Householder TSQR fallback\"},\n",
                (long long)n, (long long)d, threads, lev_passes);
      else
        fprintf(js, "], \"n\": %lld, \"d\": %lld, \"threads\": %d, "
                    "\"method\": \"CountSketch %lld rows\"},\n",
                (long long)n, (long long)d, threads, (long long)(4 * d * d));
    }
    effml_tensor_free(tau);
    effml_tensor_free(a);
  }

  /* ---- temperature_draws (one thread) ---- */
  if (!*only || !strcmp(only, "temperature")) {
    const double sizes[8] = {5e9, 2e9, 8e8, 3e8, 1e8, 2e7, 5e6, 1e6};
    double q[8];
    CHECK(effml_sampler_temperature_probs(ctx, sizes, 8, 3.33, q));
    const int64_t total = quick ? 10000000 : 100000000, chunk = 1000000;
    int64_t *buf = (int64_t *)malloc((size_t)chunk * sizeof(int64_t));
    effml_sampler_alias *al = NULL;
    CHECK(effml_sampler_alias_create(ctx, q, 8, 42, &al));
    int64_t sink = 0;
    for (int r = -1; r < reps; ++r) {
      double t0 = bu_now();
      for (int64_t done = 0; done < total; done += chunk) {
        CHECK(effml_sampler_alias_draw(ctx, al, chunk, buf));
        sink += buf[chunk - 1];
      }
      if (r >= 0) t[r] = bu_now() - t0;
    }
    double ours = med_copy(t, reps);
    fprintf(stderr, "bench_sampler: temperature draws %.1f M/s (sink %lld)\n",
            (double)total / ours / 1e6, (long long)sink);
    fprintf(js, "\"temperature_draws\": {\"ours_runs\": [");
    for (int r = 0; r < reps; ++r) fprintf(js, "%s%.9g", r ? ", " : "", t[r]);
    fprintf(js, "], \"draws\": %lld, \"threads\": 1, \"temperature\": 3.33, \"q\": [",
            (long long)total);
    for (int i = 0; i < 8; ++i) fprintf(js, "%s%.17g", i ? ", " : "", q[i]);
    fprintf(js, "]},\n");
    effml_sampler_alias_free(al);
    free(buf);
  }
  /* ---- parity cases ---- */
  if (!*only || !strncmp(only, "parity", 6)) {
    if (quick) scale *= 0.2;
    run_parity(ctx, &cnt, js, threads, reps, scale, !strncmp(only, "parity:", 7) ? only + 7 : "");
  }
  fprintf(js, "\"_end\": true}\n");
  fclose(js);
  effml_context_free(dctx);
  effml_context_free(ctx);
  return 0;
}
