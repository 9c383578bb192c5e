/* Public re-sampling entry points: options, strategy resolution, plan,
 * apply.  Output order follows imbalanced-learn (`SamplerMixin.fit_resample`):
 * over-samplers emit the originals, then one block per class in ascending
 * label order. */
#include <math.h>
#include <stdatomic.h>
#include <string.h>

#include "sampler_internal.h"

void effml_sampler_resample_options_init(effml_sampler_resample_options *opt) {
  if (opt == NULL) return;
  memset(opt, 0, sizeof *opt);
  opt->struct_size = (uint32_t)sizeof *opt;
  opt->method = EFFML_SAMPLER_RESAMPLE_SMOTE;
  opt->sampling_strategy = EFFML_SAMPLER_STRATEGY_AUTO;
  opt->ratio = 1.0;
  opt->k_neighbors = 0; /* the method's default, see read_options */
  opt->m_neighbors = 10;
  opt->n_neighbors = 0; /* the method's default, see read_options */
  opt->kind_sel = EFFML_SAMPLER_ENN_ALL;
  opt->block_rows = 0;
  opt->version = 1;
  opt->allow_minority = 0;
  opt->n_neighbors_ver3 = 3;
  opt->max_iter = 100;
  opt->threshold_cleaning = 0.5;
  opt->n_seeds_S = 1;
  opt->voting = EFFML_SAMPLER_VOTING_SOFT;
  opt->kmeans_n_init = 0; /* the method's default, see read_options */
  opt->kmeans_max_iter = 0; /* the method's default, see read_options */
  opt->kmeans_tol = 1e-4;
  opt->cv = 5;
  opt->out_step = 0.5;
  opt->n_clusters = 8;
  opt->cluster_balance_threshold = NAN;
  opt->density_exponent = NAN;
}

static effml_status read_options(effml_context *ctx, const effml_sampler_resample_options *opt,
                                 effml_sampler_resample_options *o) {
  effml_sampler_resample_options_init(o);
  if (opt == NULL) {
    o->k_neighbors = 5;
    o->n_neighbors = 3;
    return EFFML_OK;
  }
  EFFML__TRY(effml__options_read(ctx, NULL, "effml_sampler_resample_options_init", opt, o,
                                 sizeof *o, offsetof(effml_sampler_resample_options, ratio)));
  switch (o->method) {
    case EFFML_SAMPLER_RESAMPLE_SMOTE:
    case EFFML_SAMPLER_RESAMPLE_BORDERLINE1:
    case EFFML_SAMPLER_RESAMPLE_BORDERLINE2:
    case EFFML_SAMPLER_RESAMPLE_ADASYN:
    case EFFML_SAMPLER_RESAMPLE_SMOTENC:
    case EFFML_SAMPLER_RESAMPLE_RANDOM_OVER:
    case EFFML_SAMPLER_RESAMPLE_RANDOM_UNDER:
    case EFFML_SAMPLER_RESAMPLE_TOMEK:
    case EFFML_SAMPLER_RESAMPLE_ENN:
    case EFFML_SAMPLER_RESAMPLE_NEARMISS:
    case EFFML_SAMPLER_RESAMPLE_RENN:
    case EFFML_SAMPLER_RESAMPLE_ALLKNN:
    case EFFML_SAMPLER_RESAMPLE_NCL:
    case EFFML_SAMPLER_RESAMPLE_CNN:
    case EFFML_SAMPLER_RESAMPLE_OSS:
    case EFFML_SAMPLER_RESAMPLE_SMOTEENN:
    case EFFML_SAMPLER_RESAMPLE_SMOTETOMEK:
    case EFFML_SAMPLER_RESAMPLE_CLUSTER_CENTROIDS:
    case EFFML_SAMPLER_RESAMPLE_IHT:
    case EFFML_SAMPLER_RESAMPLE_SVMSMOTE:
    case EFFML_SAMPLER_RESAMPLE_KMEANS_SMOTE:
    case EFFML_SAMPLER_RESAMPLE_SMOTEN: break;
    default:
      return effml__err(ctx, EFFML_E_INVALID_ARG, "method=%d is not an EFFML_SAMPLER_RESAMPLE_* value",
                        (int)o->method);
  }
  if (o->k_neighbors == 0) /* imbalanced-learn's default for the method */
    o->k_neighbors = o->method == EFFML_SAMPLER_RESAMPLE_KMEANS_SMOTE ? 2 : 5;
  if (o->n_neighbors == 0) /* imbalanced-learn's default for the method */
    o->n_neighbors = (o->method == EFFML_SAMPLER_RESAMPLE_CNN || o->method == EFFML_SAMPLER_RESAMPLE_OSS) ? 1 : 3;
  /* k-means defaults: ClusterCentroids as scikit-learn 1.2's KMeans (10 runs
   * of at most 300 iterations); KMeans-SMOTE 3 runs (the n_init of imblearn
   * 0.10's MiniBatchKMeans) of at most 20 iterations: its clustering only
   * gates and weights where SMOTE samples, and 20 Lloyd iterations already
   * give a lower inertia than imblearn's mini-batch run (docs/samplers.md). */
  const int kms = o->method == EFFML_SAMPLER_RESAMPLE_KMEANS_SMOTE;
  if (o->kmeans_n_init == 0) o->kmeans_n_init = kms ? 3 : 10;
  if (o->kmeans_max_iter == 0) o->kmeans_max_iter = kms ? 20 : 300;
  if (o->reserved0 != 0)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "opt->reserved0=%d must be 0", (int)o->reserved0);
  if (o->block_rows < 0)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "block_rows=%lld must be >= 0",
                      (long long)o->block_rows);
  return EFFML_OK;
}

static effml_status i64_vector(effml_context *ctx, const int64_t *v, int64_t n, effml_tensor **out) {
  effml_tensor *t = NULL;
  EFFML__TRY(effml_tensor_create(ctx, EFFML_I64, 1, &n, &t));
  memcpy(t->data, v, (size_t)n * sizeof(int64_t));
  *out = t;
  return EFFML_OK;
}

effml_status effml_sampler_strategy_resolve(effml_context *ctx, const effml_sampler_resample_options *opt,
                                             const effml_tensor *y, effml_tensor **labels,
                                             effml_tensor **values) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, labels);
  EFFML__CHECK_NULL(ctx, values);
  effml_sampler_resample_options o;
  EFFML__TRY(read_options(ctx, opt, &o));
  EFFML__TRY(effml__sampler_labels_check(ctx, y, -1));
  effml__classes c; /* labels and counts are all a strategy looks at */
  EFFML__TRY(effml__classes_count(ctx, y, &c));
  effml_status st;
  int64_t *v = (int64_t *)effml__alloc_or_err(ctx, (size_t)c.n_classes * sizeof(int64_t), "strategy");
  effml_tensor *tl = NULL, *tv = NULL;
  st = v ? effml__strategy_resolve(ctx, &o, &c, v) : EFFML_E_NOMEM;
  if (st == EFFML_OK) st = i64_vector(ctx, c.labels, c.n_classes, &tl);
  if (st == EFFML_OK) st = i64_vector(ctx, v, c.n_classes, &tv);
  effml__free(ctx, v);
  effml__classes_free(ctx, &c);
  if (st != EFFML_OK) {
    effml_tensor_free(tl);
    return st;
  }
  *labels = tl;
  *values = tv;
  return EFFML_OK;
}

/* Plan for validated options `o` into *p (caller frees with effml__plan_free). */
static effml_status build_plan(effml_context *ctx, const effml_sampler_resample_options *o,
                               const effml_tensor *x, const effml_tensor *y, int lead_ok,
                               effml__plan *p) {
  const int random_method = o->method == EFFML_SAMPLER_RESAMPLE_RANDOM_OVER ||
                            o->method == EFFML_SAMPLER_RESAMPLE_RANDOM_UNDER;
  const double *xd = NULL;
  double *x_own = NULL;
  /* Random samplers never look at feature values, so NaN is fine for them. */
  EFFML__TRY(effml__sampler_x_f64(ctx, x, "x", random_method, &xd, &x_own));
  const int64_t n = x->shape[0], d = x->shape[1];
  int64_t *y64 = NULL, *values = NULL;
  const int64_t *yv = NULL; /* the labels as int64: y's own data when it is i64 (no copy) */
  effml__classes c;
  memset(&c, 0, sizeof c);
  memset(p, 0, sizeof *p);
  effml_status st = effml__sampler_labels_check(ctx, y, n);
  if (st == EFFML_OK && y->dtype == EFFML_I64)
    yv = (const int64_t *)(const void *)y->data; /* checked contiguous */
  else if (st == EFFML_OK)
    st = effml__labels_to_i64(ctx, y, n, "labels", &y64);
  if (st == EFFML_OK && !yv) yv = y64;
  if (st == EFFML_OK) st = effml__classes_build(ctx, yv, n, &c);
  if (st == EFFML_OK) {
    values = (int64_t *)effml__alloc_or_err(ctx, (size_t)c.n_classes * sizeof(int64_t), "strategy");
    st = values ? effml__strategy_resolve(ctx, o, &c, values) : EFFML_E_NOMEM;
  }
  if (st == EFFML_OK && effml__method_family(o->method) == EFFML__FAMILY_OVER) {
    /* the originals first: implicit (p->lead) where the caller applies the plan
     * itself and the method does not clean the plan's rows afterwards */
    const int implicit = lead_ok && o->method != EFFML_SAMPLER_RESAMPLE_SMOTEENN &&
                         o->method != EFFML_SAMPLER_RESAMPLE_SMOTETOMEK;
    int64_t total = implicit ? 0 : n; /* reserve the plan once (ADASYN may need a little more) */
    for (int64_t k = 0; k < c.n_classes; ++k) total += values[k] > 0 ? values[k] : 0;
    st = effml__plan_reserve(ctx, p, total);
    if (implicit)
      p->lead = n;
    else
      for (int64_t i = 0; st == EFFML_OK && i < n; ++i) effml__plan_push(p, i, -1, 0.0);
  }
  if (st == EFFML_OK) {
    effml__resample_in in = {o, xd, n, d, yv, &c, values, x->dtype == EFFML_F32};
    switch (o->method) {
      case EFFML_SAMPLER_RESAMPLE_SMOTE: st = effml__smote_plan(ctx, &in, p); break;
      case EFFML_SAMPLER_RESAMPLE_BORDERLINE1:
      case EFFML_SAMPLER_RESAMPLE_BORDERLINE2: st = effml__borderline_plan(ctx, &in, p); break;
      case EFFML_SAMPLER_RESAMPLE_ADASYN: st = effml__adasyn_plan(ctx, &in, p); break;
      case EFFML_SAMPLER_RESAMPLE_RANDOM_OVER: st = effml__random_over_plan(ctx, &in, p); break;
      case EFFML_SAMPLER_RESAMPLE_RANDOM_UNDER: st = effml__random_under_plan(ctx, &in, p); break;
      case EFFML_SAMPLER_RESAMPLE_TOMEK: st = effml__tomek_plan(ctx, &in, p); break;
      case EFFML_SAMPLER_RESAMPLE_NEARMISS: st = effml__nearmiss_plan(ctx, &in, p); break;
      case EFFML_SAMPLER_RESAMPLE_RENN: st = effml__renn_plan(ctx, &in, p); break;
      case EFFML_SAMPLER_RESAMPLE_ALLKNN: st = effml__allknn_plan(ctx, &in, p); break;
      case EFFML_SAMPLER_RESAMPLE_NCL: st = effml__ncl_plan(ctx, &in, p); break;
      case EFFML_SAMPLER_RESAMPLE_CNN: st = effml__cnn_plan(ctx, &in, p); break;
      case EFFML_SAMPLER_RESAMPLE_OSS: st = effml__oss_plan(ctx, &in, p); break;
      case EFFML_SAMPLER_RESAMPLE_SMOTEENN:
      case EFFML_SAMPLER_RESAMPLE_SMOTETOMEK:
        st = effml__smote_plan(ctx, &in, p);
        if (st == EFFML_OK) st = effml__combine_clean(ctx, &in, p);
        break;
      case EFFML_SAMPLER_RESAMPLE_CLUSTER_CENTROIDS:
        st = effml__cluster_centroids_plan(ctx, &in, p);
        break;
      case EFFML_SAMPLER_RESAMPLE_IHT: st = effml__iht_plan(ctx, &in, p); break;
      case EFFML_SAMPLER_RESAMPLE_SVMSMOTE: st = effml__svmsmote_plan(ctx, &in, p); break;
      case EFFML_SAMPLER_RESAMPLE_KMEANS_SMOTE: st = effml__kmeans_smote_plan(ctx, &in, p); break;
      case EFFML_SAMPLER_RESAMPLE_ENN: st = effml__enn_plan(ctx, &in, p); break;
      default:
        st = effml__err(ctx, EFFML_E_UNSUPPORTED,
                        "method=%d has no plan form (it makes rows that are not "
                        "interpolations of two rows of x); use effml_sampler_resample",
                        (int)o->method);
        break;
    }
  }
  if (st == EFFML_OK && p->lead + p->n == 0)
    st = effml__err(ctx, EFFML_E_NUMERIC, "re-sampling removed every sample");
  effml__classes_free(ctx, &c);
  effml__free(ctx, values);
  effml__free(ctx, y64);
  effml__free(ctx, x_own);
  if (st != EFFML_OK) effml__plan_free(ctx, p);
  return st;
}

effml_status effml_sampler_resample_plan(effml_context *ctx, const effml_sampler_resample_options *opt,
                                 const effml_tensor *x, const effml_tensor *y, effml_tensor **base,
                                 effml_tensor **neighbor, effml_tensor **step) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, base);
  EFFML__CHECK_NULL(ctx, neighbor);
  EFFML__CHECK_NULL(ctx, step);
  effml_sampler_resample_options o;
  EFFML__TRY(read_options(ctx, opt, &o));
  if (o.method == EFFML_SAMPLER_RESAMPLE_SMOTENC)
    return effml__err(ctx, EFFML_E_UNSUPPORTED,
                      "SMOTE-NC has no plan form (categorical values are neighbour votes); "
                      "use effml_sampler_resample");
  effml__plan p;
  EFFML__TRY(build_plan(ctx, &o, x, y, 0, &p));
  effml_tensor *tb = NULL, *tn = NULL, *ts = NULL;
  effml_status st = i64_vector(ctx, p.base, p.n, &tb);
  if (st == EFFML_OK) st = i64_vector(ctx, p.nbr, p.n, &tn);
  if (st == EFFML_OK) st = effml_tensor_create(ctx, EFFML_F64, 1, &p.n, &ts);
  if (st == EFFML_OK) memcpy(ts->data, p.step, (size_t)p.n * sizeof(double));
  effml__plan_free(ctx, &p);
  if (st != EFFML_OK) {
    effml_tensor_free(tb);
    effml_tensor_free(tn);
    effml_tensor_free(ts);
    return st;
  }
  *base = tb;
  *neighbor = tn;
  *step = ts;
  return EFFML_OK;
}

/* x_out[r] = x[b[r]] + s[r] (x[nb[r]] - x[b[r]]), y_out[r] = y[b[r]]; indices already checked. */
typedef struct apply_job {
  const effml_tensor *x, *y;
  const int64_t *b, *nb;
  const double *s;
  int64_t d;
  effml_tensor *xo, *yo;
  int64_t lead; /* output rows [0, lead) are x's rows as they are (not in the plan) */
  int64_t r0; /* first output row of the round */
  int64_t cnt; /* rows in the round */
  atomic_llong next; /* next chunk to claim (relative to r0) */
} apply_job;

static void apply_range(void *arg, int64_t begin, int64_t end, int32_t worker);

/* Each worker claims chunks of 4096 rows until the round is done, so a worker
 * the system deschedules holds up no one but itself. */
static void apply_claim(void *arg, int64_t w0, int64_t w1, int32_t worker) {
  (void)w0;
  (void)w1;
  apply_job *jb = (apply_job *)arg;
  for (;;) {
    const int64_t c0 = (int64_t)atomic_fetch_add_explicit(&jb->next, 4096, memory_order_relaxed);
    if (c0 >= jb->cnt) break;
    apply_range(arg, c0, c0 + 4096 < jb->cnt ? c0 + 4096 : jb->cnt, worker);
  }
}

/* Write the m plan rows into xo [>= m, d] and yo [>= m] (checked by the caller), in
 * rounds of rows with a progress report (cancellation point) before each. */
static effml_status apply_rows_into(effml_context *ctx, const effml_tensor *x,
                                    const effml_tensor *y, int64_t lead, const int64_t *b,
                                    const int64_t *nb, const double *s, int64_t m,
                                    effml_tensor *xo, effml_tensor *yo) {
  const int64_t round = EFFML__RESAMPLE_ROUND_ROWS;
  m += lead;
  for (int64_t r0 = 0; r0 < m; r0 += round) {
    EFFML__TRY(effml__progress(ctx, r0, m, "output rows"));
    const int64_t cnt = m - r0 < round ? m - r0 : round;
    apply_job job = {x, y, b, nb, s, x->shape[1], xo, yo, lead, r0, cnt, 0};
    atomic_init(&job.next, 0);
    /* Rows are independent: any split gives the same bytes. */
    int64_t workers = (cnt + 8191) / 8192;
    if (workers > effml__ctx_threads(ctx)) workers = effml__ctx_threads(ctx);
    EFFML__TRY(effml__parallel_for(ctx, workers, 1, apply_claim, &job));
  }
  return EFFML_OK;
}

static effml_status apply_rows(effml_context *ctx, const effml_tensor *x, const effml_tensor *y,
                               int64_t lead, const int64_t *b, const int64_t *nb, const double *s,
                               int64_t m, effml_tensor **x_out, effml_tensor **y_out) {
  const int64_t d = x->shape[1];
  int64_t shape[2] = {lead + m, d}, rows = lead + m;
  effml_tensor *xo = NULL, *yo = NULL;
  /* Every row of both outputs is written below: skip the zeroing pass. */
  EFFML__TRY(effml__tensor_create_uninit(ctx, x->dtype, 2, shape, &xo));
  effml_status st = effml__tensor_create_uninit(ctx, y->dtype, 1, &rows, &yo);
  if (st != EFFML_OK) {
    effml_tensor_free(xo);
    return st;
  }
  st = apply_rows_into(ctx, x, y, lead, b, nb, s, m, xo, yo);
  if (st != EFFML_OK) {
    effml_tensor_free(xo);
    effml_tensor_free(yo);
    return st;
  }
  *x_out = xo;
  *y_out = yo;
  return EFFML_OK;
}

/* Caller-owned outputs of the _into calls: x_out [cap, d] in x's dtype, y_out [cap] in y's
 * dtype, both contiguous and writable, cap the same for both; *cap receives it. */
static effml_status check_out_buffers(effml_context *ctx, const effml_tensor *x,
                                      const effml_tensor *y, const effml_tensor *x_out,
                                      const effml_tensor *y_out, int64_t *cap) {
  EFFML__TRY(effml__check_tensor(ctx, x_out, "x_out", x->dtype, 2, 1));
  EFFML__TRY(effml__check_writable(ctx, x_out, "x_out"));
  EFFML__TRY(effml__check_dim(ctx, x_out, "x_out", 1, x->shape[1]));
  EFFML__TRY(effml__check_tensor(ctx, y_out, "y_out", y->dtype, 1, 1));
  EFFML__TRY(effml__check_writable(ctx, y_out, "y_out"));
  EFFML__TRY(effml__check_dim(ctx, y_out, "y_out", 0, x_out->shape[0]));
  *cap = x_out->shape[0];
  return EFFML_OK;
}

static effml_status check_capacity(effml_context *ctx, int64_t need, int64_t cap) {
  if (need > cap)
    return effml__err(ctx, EFFML_E_SHAPE,
                      "the result has %lld rows but x_out and y_out hold %lld: allocate at "
                      "least %lld rows (*n_out says so) and call again",
                      (long long)need, (long long)cap, (long long)need);
  return EFFML_OK;
}

static void apply_range(void *arg, int64_t begin, int64_t end, int32_t worker) {
  (void)worker;
  const apply_job *jb = (const apply_job *)arg;
  const effml_tensor *x = jb->x, *y = jb->y;
  const int64_t *b = jb->b, *nb = jb->nb;
  const double *s = jb->s;
  const int64_t d = jb->d, lead = jb->lead, rend = jb->r0 + end;
  effml_tensor *xo = jb->xo, *yo = jb->yo;
  const size_t esz = x->dtype == EFFML_F64 ? sizeof(double) : sizeof(float);
  for (int64_t r = jb->r0 + begin; r < rend; ++r) {
    /* output rows [r, e) are x's rows [i, i + e - r): one memcpy */
    int64_t i = r, e = r < lead ? (rend < lead ? rend : lead) : r + 1;
    if (r >= lead) { /* plan row q */
      const int64_t q = r - lead;
      i = b[q];
      const int64_t j = nb[q];
      if (j >= 0) {
        if (x->dtype == EFFML_F64) {
          const double *xi = effml__cf64(x) + i * d, *xj = effml__cf64(x) + j * d;
          double *o = effml__f64(xo) + r * d;
          for (int64_t t = 0; t < d; ++t) o[t] = xi[t] + s[q] * (xj[t] - xi[t]);
        } else {
          const float *xi = effml__cf32(x) + i * d, *xj = effml__cf32(x) + j * d;
          float *o = effml__f32(xo) + r * d;
          for (int64_t t = 0; t < d; ++t)
            o[t] = (float)((double)xi[t] + s[q] * ((double)xj[t] - (double)xi[t]));
        }
        if (y->dtype == EFFML_I64)
          ((int64_t *)(void *)yo->data)[r] = ((const int64_t *)(const void *)y->data)[i];
        else
          ((int32_t *)(void *)yo->data)[r] = ((const int32_t *)(const void *)y->data)[i];
        continue;
      }
      /* a run of plain copies of consecutive rows */
      while (e < rend && nb[e - lead] < 0 && b[e - lead] == i + (e - r)) ++e;
    }
    memcpy((char *)xo->data + (size_t)r * (size_t)d * esz,
           (const char *)x->data + (size_t)i * (size_t)d * esz, (size_t)(e - r) * (size_t)d * esz);
    if (y->dtype == EFFML_I64)
      memcpy((int64_t *)(void *)yo->data + r, (const int64_t *)(const void *)y->data + i,
             (size_t)(e - r) * sizeof(int64_t));
    else
      memcpy((int32_t *)(void *)yo->data + r, (const int32_t *)(const void *)y->data + i,
             (size_t)(e - r) * sizeof(int32_t));
    r = e - 1;
  }
}

/* Inputs of resample_apply, checked; *m receives the number of plan rows. */
static effml_status check_apply_inputs(effml_context *ctx, const effml_tensor *x,
                                       const effml_tensor *y, const effml_tensor *base,
                                       const effml_tensor *neighbor, const effml_tensor *step,
                                       int64_t *m_out) {
  EFFML__TRY(effml__check_tensor(ctx, x, "x", 0, 2, 1));
  if (x->dtype != EFFML_F32 && x->dtype != EFFML_F64)
    return effml__err(ctx, EFFML_E_DTYPE, "argument 'x' has dtype %s, expected f32 or f64",
                      effml_tensor_dtype_name(x->dtype));
  EFFML__TRY(effml__check_tensor(ctx, y, "y", 0, 1, 1));
  if (y->dtype != EFFML_I32 && y->dtype != EFFML_I64)
    return effml__err(ctx, EFFML_E_DTYPE, "argument 'y' has dtype %s, expected i32 or i64",
                      effml_tensor_dtype_name(y->dtype));
  const int64_t n = x->shape[0];
  EFFML__TRY(effml__check_dim(ctx, y, "y", 0, n));
  EFFML__TRY(effml__check_tensor(ctx, base, "base", EFFML_I64, 1, 1));
  const int64_t m = base->shape[0];
  EFFML__TRY(effml__check_tensor(ctx, neighbor, "neighbor", EFFML_I64, 1, 1));
  EFFML__TRY(effml__check_dim(ctx, neighbor, "neighbor", 0, m));
  EFFML__TRY(effml__check_tensor(ctx, step, "step", EFFML_F64, 1, 1));
  EFFML__TRY(effml__check_dim(ctx, step, "step", 0, m));
  const int64_t *b = (const int64_t *)(const void *)base->data;
  const int64_t *nb = (const int64_t *)(const void *)neighbor->data;
  for (int64_t r = 0; r < m; ++r) {
    if (b[r] < 0 || b[r] >= n || nb[r] < -1 || nb[r] >= n)
      return effml__err(ctx, EFFML_E_RANGE,
                        "plan row %lld: base=%lld / neighbor=%lld outside [0, %lld)",
                        (long long)r, (long long)b[r], (long long)nb[r], (long long)n);
  }
  *m_out = m;
  return EFFML_OK;
}

effml_status effml_sampler_resample_apply(effml_context *ctx, const effml_tensor *x,
                                          const effml_tensor *y, const effml_tensor *base,
                                          const effml_tensor *neighbor, const effml_tensor *step,
                                          effml_tensor **x_out, effml_tensor **y_out) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, x_out);
  EFFML__CHECK_NULL(ctx, y_out);
  int64_t m = 0;
  EFFML__TRY(check_apply_inputs(ctx, x, y, base, neighbor, step, &m));
  return apply_rows(ctx, x, y, 0, (const int64_t *)(const void *)base->data,
                    (const int64_t *)(const void *)neighbor->data, effml__cf64(step), m, x_out,
                    y_out);
}

effml_status effml_sampler_resample_apply_into(effml_context *ctx, const effml_tensor *x,
                                               const effml_tensor *y, const effml_tensor *base,
                                               const effml_tensor *neighbor,
                                               const effml_tensor *step, effml_tensor *x_out,
                                               effml_tensor *y_out) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  int64_t m = 0, cap = 0;
  EFFML__TRY(check_apply_inputs(ctx, x, y, base, neighbor, step, &m));
  EFFML__TRY(check_out_buffers(ctx, x, y, x_out, y_out, &cap));
  EFFML__TRY(check_capacity(ctx, m, cap));
  return apply_rows_into(ctx, x, y, 0, (const int64_t *)(const void *)base->data,
                         (const int64_t *)(const void *)neighbor->data, effml__cf64(step), m,
                         x_out, y_out);
}

effml_status effml_sampler_resample(effml_context *ctx, const effml_sampler_resample_options *opt,
                            const effml_tensor *x, const effml_tensor *y, effml_tensor **x_out,
                            effml_tensor **y_out) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, x_out);
  EFFML__CHECK_NULL(ctx, y_out);
  effml_sampler_resample_options o;
  EFFML__TRY(read_options(ctx, opt, &o));
  if (o.method == EFFML_SAMPLER_RESAMPLE_SMOTENC) return effml__smotenc_resample(ctx, &o, x, y, x_out, y_out);
  if (o.method == EFFML_SAMPLER_RESAMPLE_SMOTEN) return effml__smoten_resample(ctx, &o, x, y, x_out, y_out);
  if (o.method == EFFML_SAMPLER_RESAMPLE_CLUSTER_CENTROIDS && o.voting == EFFML_SAMPLER_VOTING_SOFT)
    return effml__cluster_centroids_resample(ctx, &o, x, y, x_out, y_out);
  if (o.method == EFFML_SAMPLER_RESAMPLE_SMOTEENN || o.method == EFFML_SAMPLER_RESAMPLE_SMOTETOMEK) {
    /* SMOTE into the output, the plan freed, then the cleaning on the output
     * rows in place: library memory = the SMOTE output + the cleaning's
     * per-row index arrays, no f64 copy of the rows for f64 x. */
    if (o.method == EFFML_SAMPLER_RESAMPLE_SMOTEENN && o.n_neighbors < 1)
      return effml__err(ctx, EFFML_E_INVALID_ARG, "n_neighbors=%lld must be >= 1",
                        (long long)o.n_neighbors);
    if (o.method == EFFML_SAMPLER_RESAMPLE_SMOTEENN && o.kind_sel != EFFML_SAMPLER_ENN_ALL &&
        o.kind_sel != EFFML_SAMPLER_ENN_MODE)
      return effml__err(ctx, EFFML_E_INVALID_ARG,
                        "kind_sel=%d must be EFFML_SAMPLER_ENN_ALL or EFFML_SAMPLER_ENN_MODE",
                        (int)o.kind_sel);
    effml_sampler_resample_options os = o;
    os.method = EFFML_SAMPLER_RESAMPLE_SMOTE;
    effml__plan p;
    EFFML__TRY(build_plan(ctx, &os, x, y, 1, &p));
    effml_tensor *xo = NULL, *yo = NULL;
    effml_status st = apply_rows(ctx, x, y, p.lead, p.base, p.nbr, p.step, p.n, &xo, &yo);
    effml__plan_free(ctx, &p);
    if (st == EFFML_OK) st = effml__combine_clean_rows(ctx, &o, xo, yo);
    if (st == EFFML_OK && xo->shape[0] == 0)
      st = effml__err(ctx, EFFML_E_NUMERIC, "re-sampling removed every sample");
    if (st != EFFML_OK) {
      effml_tensor_free(xo);
      effml_tensor_free(yo);
      return st;
    }
    *x_out = xo;
    *y_out = yo;
    return EFFML_OK;
  }
  effml__plan p;
  EFFML__TRY(build_plan(ctx, &o, x, y, 1, &p));
  effml_status st = apply_rows(ctx, x, y, p.lead, p.base, p.nbr, p.step, p.n, x_out, y_out);
  effml__plan_free(ctx, &p);
  return st;
}

effml_status effml_sampler_resample_into(effml_context *ctx,
                                         const effml_sampler_resample_options *opt,
                                         const effml_tensor *x, const effml_tensor *y,
                                         effml_tensor *x_out, effml_tensor *y_out,
                                         int64_t *n_out) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, n_out);
  effml_sampler_resample_options o;
  EFFML__TRY(read_options(ctx, opt, &o));
  EFFML__TRY(effml__check_tensor(ctx, x, "x", 0, 2, 1));
  EFFML__TRY(effml__check_tensor(ctx, y, "y", 0, 1, 1));
  int64_t cap = 0;
  EFFML__TRY(check_out_buffers(ctx, x, y, x_out, y_out, &cap));
  const int direct = o.method == EFFML_SAMPLER_RESAMPLE_SMOTENC ||
                     o.method == EFFML_SAMPLER_RESAMPLE_SMOTEN ||
                     (o.method == EFFML_SAMPLER_RESAMPLE_CLUSTER_CENTROIDS &&
                      o.voting == EFFML_SAMPLER_VOTING_SOFT);
  if (direct) {
    /* SMOTE-NC / SMOTEN vote categorical values, soft ClusterCentroids makes
     * centroids: no plan form, so the result is built in library memory and
     * copied. */
    effml_tensor *xo = NULL, *yo = NULL;
    EFFML__TRY(effml_sampler_resample(ctx, &o, x, y, &xo, &yo));
    const int64_t m = xo->shape[0];
    effml_status st = check_capacity(ctx, m, cap);
    if (st == EFFML_OK) {
      memcpy(x_out->data, xo->data, effml_tensor_nbytes(xo));
      memcpy(y_out->data, yo->data, effml_tensor_nbytes(yo));
    }
    effml_tensor_free(xo);
    effml_tensor_free(yo);
    *n_out = m;
    return st;
  }
  effml__plan p;
  EFFML__TRY(build_plan(ctx, &o, x, y, 1, &p));
  effml_status st = check_capacity(ctx, p.lead + p.n, cap);
  if (st == EFFML_OK)
    st = apply_rows_into(ctx, x, y, p.lead, p.base, p.nbr, p.step, p.n, x_out, y_out);
  *n_out = p.lead + p.n;
  effml__plan_free(ctx, &p);
  return st;
}
