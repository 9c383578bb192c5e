/* The classifier training loop and batched inference.
 *
 * One epoch: draw a permutation from (shuffle_seed, epoch); for each batch,
 * gather its rows into a workspace, forward in train mode, softmax
 * cross-entropy, zero the model's gradients, backward (no input gradient),
 * step_hook, optional clipping, optimizer step.  Every workspace is allocated
 * once per call (two shapes: full batches and the last, smaller one). */
#include <math.h>
#include <string.h>

#include "../layer/layer_internal.h"

void effml_train_options_init(effml_train_options *opt) {
  if (!opt) return;
  memset(opt, 0, sizeof *opt);
  opt->struct_size = (uint32_t)sizeof *opt;
  opt->epochs = 1;
  opt->batch_size = 128;
}

/* Validate x [n, f] f32 against the model and labels [n] i32/i64 in [0, c). */
static effml_status check_data(effml_context *ctx, const char *fn, const effml_layer *model,
                               const effml_tensor *x, const effml_tensor *labels, int64_t *c) {
  EFFML__TRY(effml__check_tensor(ctx, x, "x", EFFML_F32, 2, 1));
  const int64_t in = effml_layer_in_features(model);
  if (in && x->shape[1] != in)
    return effml__err(ctx, EFFML_E_SHAPE, "%s: x has %lld features, the model expects %lld", fn,
                      (long long)x->shape[1], (long long)in);
  *c = effml_layer_out_features(model);
  if (*c == 0) *c = x->shape[1];
  if (!labels) return EFFML_OK;
  EFFML__TRY(effml__check_tensor(ctx, labels, "labels", 0, 1, 1));
  if (labels->dtype != EFFML_I32 && labels->dtype != EFFML_I64)
    return effml__err(ctx, EFFML_E_DTYPE, "%s: labels must be i32 or i64, got %s", fn,
                      effml_tensor_dtype_name(labels->dtype));
  if (labels->shape[0] != x->shape[0])
    return effml__err(ctx, EFFML_E_SHAPE, "%s: labels has %lld entries but x has %lld rows", fn,
                      (long long)labels->shape[0], (long long)x->shape[0]);
  for (int64_t i = 0; i < x->shape[0]; ++i) {
    const int64_t y = effml__label_at(labels, i);
    if (y < 0 || y >= *c)
      return effml__err(ctx, EFFML_E_RANGE, "%s: labels[%lld]=%lld is outside [0, %lld)", fn,
                        (long long)i, (long long)y, (long long)*c);
  }
  return EFFML_OK;
}

/* Workspaces for one batch size. */
typedef struct batch_ws {
  effml_tensor *x, *y, *logits, *dlogits, *w;
} batch_ws;

static void ws_free(batch_ws *w) {
  effml_tensor_free(w->w);
  effml_tensor_free(w->x);
  effml_tensor_free(w->y);
  effml_tensor_free(w->logits);
  effml_tensor_free(w->dlogits);
  memset(w, 0, sizeof *w);
}

static effml_status ws_make(effml_context *ctx, batch_ws *w, int64_t rows, int64_t f, int64_t c) {
  EFFML__TRY(effml__tensor_f32_2d(ctx, rows, f, &w->x));
  EFFML__TRY(effml_tensor_create(ctx, EFFML_I32, 1, &rows, &w->y));
  EFFML__TRY(effml__tensor_f32_2d(ctx, rows, c, &w->logits));
  EFFML__TRY(effml__tensor_f32_2d(ctx, rows, c, &w->dlogits));
  EFFML__TRY(effml_tensor_create(ctx, EFFML_F64, 1, &rows, &w->w));
  return EFFML_OK;
}

typedef struct fit_state {
  effml_context *ctx;
  effml_layer *model;
  effml_optimizer *opt;
  const effml_tensor *x, *labels;
  effml_train_options fo;
  int64_t n, f, c;
  int64_t *perm;
  batch_ws full, tail;
  /* weighted loss */
  int weighted;
  double *class_w;     /* [c] static class factor: class_weight x balanced */
  double *class_sum;   /* [c] Σ of sample weights (or counts) per class */
  double *sizes;       /* [c] class sizes (scalarization) */
  double *scal_w;      /* [c] scalarization weights at the current T */
  double *cur_w;       /* [c] class_w x scal_w / (data mean under REDUCTION_MEAN) */
  double cur_t;        /* temperature cur_w was made for (NaN: not yet) */
} fit_state;

static double sample_w(const effml_tensor *t, int64_t i) {
  const int64_t off = i * t->strides[0];
  return t->dtype == EFFML_F64 ? ((const double *)(const void *)t->data)[off]
                               : (double)((const float *)(const void *)t->data)[off];
}

/* Per-class factors for the step `step` (0-based, counted in this call). */
static effml_status update_class_weights(fit_state *s, int64_t step) {
  double t = 1.0;
  if (s->fo.scalarization) {
    EFFML__TRY(effml_sampler_temperature_at(s->ctx, s->fo.scalarization, step, &t));
    if (t == s->cur_t) return EFFML_OK;
    EFFML__TRY(effml_train_scalarization_weights(s->ctx, s->sizes, s->c, t, s->scal_w));
  } else if (!isnan(s->cur_t)) {
    return EFFML_OK;
  }
  s->cur_t = t;
  double mean = 0.0;
  for (int64_t k = 0; k < s->c; ++k) {
    s->cur_w[k] = s->class_w[k] * (s->fo.scalarization ? s->scal_w[k] : 1.0);
    mean += s->class_sum[k] * s->cur_w[k];
  }
  mean /= (double)s->n;
  if (s->fo.reduction == EFFML_TRAIN_REDUCTION_MEAN) {
    if (!(mean > 0.0))
      return effml__err(s->ctx, EFFML_E_INVALID_ARG,
                        "effml_train_classifier: every row weight is 0 (reduction MEAN divides "
                        "the weights by their mean)");
    for (int64_t k = 0; k < s->c; ++k) s->cur_w[k] /= mean;
  }
  return EFFML_OK;
}

/* Check the weight options and fill the static per-class arrays. */
static effml_status weights_setup(fit_state *s) {
  effml_context *ctx = s->ctx;
  const effml_train_options *fo = &s->fo;
  static const char fn[] = "effml_train_classifier";
  if (fo->reduction != EFFML_TRAIN_REDUCTION_WEIGHTED_MEAN &&
      fo->reduction != EFFML_TRAIN_REDUCTION_MEAN)
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "%s: fit->reduction=%d is not EFFML_TRAIN_REDUCTION_WEIGHTED_MEAN (0) or "
                      "EFFML_TRAIN_REDUCTION_MEAN (1)",
                      fn, (int)fo->reduction);
  s->weighted = fo->sample_weight || fo->class_weight || fo->class_weight_balanced ||
                fo->scalarization;
  if (!s->weighted) return EFFML_OK;
  const effml_tensor *vecs[2] = {fo->sample_weight, fo->class_weight};
  const char *names[2] = {"fit->sample_weight", "fit->class_weight"};
  const int64_t lens[2] = {s->n, s->c};
  for (int v = 0; v < 2; ++v) {
    const effml_tensor *t = vecs[v];
    if (!t) continue;
    EFFML__TRY(effml__check_tensor(ctx, t, names[v], 0, 1, 0));
    if (t->dtype != EFFML_F32 && t->dtype != EFFML_F64)
      return effml__err(ctx, EFFML_E_DTYPE, "%s: %s must be f32 or f64, got %s", fn, names[v],
                        effml_tensor_dtype_name(t->dtype));
    if (t->shape[0] != lens[v])
      return effml__err(ctx, EFFML_E_SHAPE, "%s: %s has %lld entries, need %lld (%s)", fn,
                        names[v], (long long)t->shape[0], (long long)lens[v],
                        v ? "classes" : "rows of x");
    for (int64_t i = 0; i < lens[v]; ++i) {
      const double w = sample_w(t, i);
      if (!(w >= 0.0) || !isfinite(w))
        return effml__err(ctx, EFFML_E_INVALID_ARG, "%s: %s[%lld]=%g must be finite and >= 0",
                          fn, names[v], (long long)i, w);
    }
  }
  double *blk = (double *)effml__calloc_or_err(ctx, (size_t)(5 * s->c), sizeof(double),
                                               "class weights");
  if (!blk) return EFFML_E_NOMEM;
  s->class_w = blk;
  s->class_sum = blk + s->c;
  s->sizes = blk + 2 * s->c;
  s->scal_w = blk + 3 * s->c;
  s->cur_w = blk + 4 * s->c;
  s->cur_t = NAN;
  for (int64_t k = 0; k < s->c; ++k)
    s->class_w[k] = fo->class_weight ? sample_w(fo->class_weight, k) : 1.0;
  if (fo->class_weight_balanced) {
    EFFML__TRY(effml_train_class_weight_balanced(ctx, s->labels, s->c, s->cur_w));
    for (int64_t k = 0; k < s->c; ++k) s->class_w[k] *= s->cur_w[k];
  }
  for (int64_t i = 0; i < s->n; ++i) {
    const int64_t y = effml__label_at(s->labels, i);
    s->sizes[y] += 1.0;
    s->class_sum[y] += fo->sample_weight ? sample_w(fo->sample_weight, i) : 1.0;
  }
  double total = 0.0; /* Σ_i sample_weight[i] · class factor[y_i] */
  for (int64_t k = 0; k < s->c; ++k) total += s->class_sum[k] * s->class_w[k];
  if (!(total > 0.0))
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "%s: every row weight (sample_weight x class_weight) is 0: nothing to "
                      "train on",
                      fn);
  return update_class_weights(s, 0);
}

/* A non-finite logit in the batch that starts at `start` of the epoch's permutation:
 * the error names the epoch, the step and the dataset row (the batch row mapped back
 * through the permutation), and says whether that row of x is itself non-finite or the
 * model diverged.  EFFML_OK when every logit is finite. */
static effml_status check_batch_logits(fit_state *s, const batch_ws *w, int64_t rows,
                                       int64_t start, int64_t epoch, int64_t step) {
  const float *z = effml__cf32(w->logits);
  for (int64_t k = 0; k < rows; ++k) {
    const float *zk = z + k * s->c;
    int64_t j = 0;
    while (j < s->c && isfinite(zk[j])) ++j;
    if (j == s->c) continue;
    const int64_t i = s->perm[start + k];
    const float *xi = effml__cf32(s->x) + i * s->f;
    for (int64_t q = 0; q < s->f; ++q)
      if (!isfinite(xi[q]))
        return effml__err(s->ctx, EFFML_E_NUMERIC,
                          "effml_train_classifier: epoch %lld (0-based), dataset row %lld: "
                          "x[%lld, %lld]=%g is not finite",
                          (long long)epoch, (long long)i, (long long)i, (long long)q, (double)xi[q]);
    return effml__err(s->ctx, EFFML_E_NUMERIC,
                      "effml_train_classifier: epoch %lld (0-based), dataset row %lld: "
                      "logits[%lld]=%g is not finite at step %lld although the row of x is "
                      "finite: the model diverged (lower the learning rate or set clip_norm)",
                      (long long)epoch, (long long)i, (long long)j, (double)zk[j],
                      (long long)step + 1);
  }
  return EFFML_OK;
}

static effml_status fit_epoch(fit_state *s, int64_t epoch, int64_t *step, double *epoch_loss,
                              double *report_sum, int64_t *report_count) {
  effml_context *ctx = s->ctx;
  /* Fisher-Yates over a per-epoch stream: same order for any thread count. */
  effml__rng r;
  effml__rng_seed(&r, s->fo.shuffle_seed, (uint64_t)epoch);
  for (int64_t i = 0; i < s->n; ++i) s->perm[i] = i;
  for (int64_t i = s->n - 1; i > 0; --i) {
    int64_t j = (int64_t)effml__rng_below(&r, (uint64_t)(i + 1));
    int64_t t = s->perm[i];
    s->perm[i] = s->perm[j];
    s->perm[j] = t;
  }
  const float *X = effml__cf32(s->x);
  const size_t row_bytes = (size_t)s->f * sizeof(float);
  double sum = 0.0;
  int64_t batches = 0;
  const int64_t steps_per_epoch = (s->n + s->fo.batch_size - 1) / s->fo.batch_size;
  for (int64_t start = 0; start < s->n; start += s->fo.batch_size) {
    EFFML__TRY(effml__progress(ctx, *step, steps_per_epoch * s->fo.epochs, "steps"));
    const int64_t rows = s->n - start < s->fo.batch_size ? s->n - start : s->fo.batch_size;
    batch_ws *w = rows == s->fo.batch_size ? &s->full : &s->tail;
    float *xb = effml__f32(w->x);
    int32_t *yb = (int32_t *)(void *)w->y->data;
    for (int64_t k = 0; k < rows; ++k) {
      const int64_t i = s->perm[start + k];
      memcpy(xb + k * s->f, X + i * s->f, row_bytes);
      yb[k] = (int32_t)effml__label_at(s->labels, i);
    }
    double loss = 0.0;
    int skip = 0;
    if (s->weighted) {
      EFFML__TRY(update_class_weights(s, *step));
      double *wb = effml__f64(w->w), wsum = 0.0;
      for (int64_t k = 0; k < rows; ++k) {
        const int64_t i = s->perm[start + k];
        wb[k] = (s->fo.sample_weight ? sample_w(s->fo.sample_weight, i) : 1.0) * s->cur_w[yb[k]];
        wsum += wb[k];
      }
      /* WEIGHTED_MEAN divides by Σ w_i: a batch whose weights sum to 0 has no loss and no
       * gradient, so it is skipped (train.h): no forward, no hook, no optimizer step */
      skip = s->fo.reduction == EFFML_TRAIN_REDUCTION_WEIGHTED_MEAN && !(wsum > 0.0);
    }
    if (skip) {
      ++*step;
    } else {
      EFFML__TRY(effml_layer_forward(ctx, s->model, w->x, w->logits, EFFML_LAYER_MODE_TRAIN));
      EFFML__TRY(check_batch_logits(s, w, rows, start, epoch, *step));
      if (s->weighted)
        EFFML__TRY(effml_train_softmax_cross_entropy_weighted(
            ctx, w->logits, w->y, w->w, NULL, s->fo.reduction, &loss, w->dlogits));
      else
        EFFML__TRY(effml_train_softmax_cross_entropy(ctx, w->logits, w->y, &loss, w->dlogits));
      effml_layer_zero_grad(s->model);
      EFFML__TRY(effml_layer_backward(ctx, s->model, w->dlogits, NULL));
      ++*step;
      if (s->fo.step_hook && s->fo.step_hook(s->fo.step_hook_user_data, *step) != 0)
        return effml__err(ctx, EFFML_E_STATE,
                          "effml_train_classifier: step_hook aborted at step %lld",
                          (long long)*step);
      if (s->fo.clip_norm > 0)
        EFFML__TRY(effml_optimizer_clip_grad_norm(ctx, s->opt, s->fo.clip_norm, NULL));
      EFFML__TRY(effml_optimizer_step(ctx, s->opt));
      sum += loss;
      ++batches;
      *report_sum += loss;
      ++*report_count;
    }
    if (s->fo.progress && s->fo.progress_every > 0 && *step % s->fo.progress_every == 0) {
      s->fo.progress(s->fo.progress_user_data, epoch, *step,
                     *report_count ? *report_sum / (double)*report_count : NAN);
      *report_sum = 0.0;
      *report_count = 0;
    }
  }
  *epoch_loss = batches ? sum / (double)batches : NAN; /* NaN: every batch was skipped */
  if (s->fo.progress && s->fo.progress_every <= 0) {
    s->fo.progress(s->fo.progress_user_data, epoch, *step,
                   *report_count ? *report_sum / (double)*report_count : NAN);
    *report_sum = 0.0;
    *report_count = 0;
  }
  return EFFML_OK;
}

effml_status effml_train_classifier(effml_context *ctx, effml_layer *model, effml_optimizer *opt,
                                  const effml_tensor *x, const effml_tensor *labels,
                                  const effml_train_options *fit, double *final_loss) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, model);
  EFFML__CHECK_NULL(ctx, opt);
  EFFML__CHECK_NULL(ctx, labels);
  EFFML__CHECK_NULL(ctx, fit);
  if (fit->struct_size < offsetof(effml_train_options, batch_size) + sizeof(int64_t) ||
      fit->struct_size > EFFML__OPTIONS_MAX_SIZE)
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "effml_train_classifier: fit->struct_size=%u is not valid (%s %zu bytes; "
                      "call effml_train_options_init)",
                      (unsigned)fit->struct_size,
                      fit->struct_size > EFFML__OPTIONS_MAX_SIZE ? "at most" : "at least",
                      fit->struct_size > EFFML__OPTIONS_MAX_SIZE
                          ? (size_t)EFFML__OPTIONS_MAX_SIZE
                          : offsetof(effml_train_options, batch_size) + sizeof(int64_t));
  EFFML__TRY(effml__options_check_tail(ctx, "effml_train_classifier", "effml_train_options",
                                       strlen("effml_train_options"), fit, fit->struct_size,
                                       sizeof(effml_train_options)));
  fit_state s;
  memset(&s, 0, sizeof s);
  effml_train_options_init(&s.fo);
  memcpy(&s.fo, fit, fit->struct_size < sizeof s.fo ? fit->struct_size : sizeof s.fo);
  if (s.fo.epochs < 1)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "effml_train_classifier: epochs=%lld must be >= 1",
                      (long long)s.fo.epochs);
  if (s.fo.batch_size < 1)
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "effml_train_classifier: batch_size=%lld must be >= 1",
                      (long long)s.fo.batch_size);
  if (!(s.fo.clip_norm >= 0))
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "effml_train_classifier: clip_norm=%g must be >= 0 (0 = off)", s.fo.clip_norm);
  EFFML__TRY(check_data(ctx, "effml_train_classifier", model, x, labels, &s.c));
  s.ctx = ctx;
  s.model = model;
  s.opt = opt;
  s.x = x;
  s.labels = labels;
  s.n = x->shape[0];
  s.f = x->shape[1];
  if (s.fo.batch_size > s.n) s.fo.batch_size = s.n;
  effml_status st = EFFML_OK;
  s.perm = (int64_t *)effml__alloc_or_err(ctx, (size_t)s.n * sizeof(int64_t), "permutation");
  if (!s.perm) return EFFML_E_NOMEM;
  st = ws_make(ctx, &s.full, s.fo.batch_size, s.f, s.c);
  if (st == EFFML_OK && s.n % s.fo.batch_size) st = ws_make(ctx, &s.tail, s.n % s.fo.batch_size, s.f, s.c);
  if (st == EFFML_OK) st = weights_setup(&s);
  int64_t step = 0, report_count = 0;
  double epoch_loss = NAN, report_sum = 0.0;
  for (int64_t e = 0; st == EFFML_OK && e < s.fo.epochs; ++e)
    st = fit_epoch(&s, e, &step, &epoch_loss, &report_sum, &report_count);
  ws_free(&s.full);
  ws_free(&s.tail);
  effml__free(ctx, s.perm);
  effml__free(ctx, s.class_w);
  if (st == EFFML_OK && final_loss) *final_loss = epoch_loss;
  return st;
}

effml_status effml_train_predict(effml_context *ctx, effml_layer *model, const effml_tensor *x,
                           int64_t batch_size, effml_tensor *logits) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, model);
  if (batch_size < 1)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "effml_train_predict: batch_size=%lld must be >= 1",
                      (long long)batch_size);
  int64_t c = 0;
  EFFML__TRY(check_data(ctx, "effml_train_predict", model, x, NULL, &c));
  EFFML__TRY(effml__check_tensor(ctx, logits, "logits", EFFML_F32, 2, 1));
  EFFML__TRY(effml__check_writable(ctx, logits, "logits"));
  EFFML__TRY(effml__check_dim(ctx, logits, "logits", 0, x->shape[0]));
  EFFML__TRY(effml__check_dim(ctx, logits, "logits", 1, c));
  const int64_t n = x->shape[0];
  const int64_t batches = (n + batch_size - 1) / batch_size;
  /* One batch writes logits directly after the cancellation check; several go through
   * a scratch [n, c] copied once at the end, so that a cancelled (or failed) call
   * leaves logits untouched. */
  effml_tensor *dst = logits;
  if (batches > 1) EFFML__TRY(effml__tensor_f32_2d(ctx, n, c, &dst));
  effml_status st = EFFML_OK;
  for (int64_t b = 0; st == EFFML_OK && b < batches; ++b) {
    const int64_t start = b * batch_size, stop = n - start < batch_size ? n : start + batch_size;
    st = effml__progress(ctx, start, n, "rows");
    effml_tensor *xv = NULL, *yv = NULL;
    if (st == EFFML_OK) st = effml_tensor_slice(ctx, x, 0, start, stop, 1, &xv);
    if (st == EFFML_OK) st = effml_tensor_slice(ctx, dst, 0, start, stop, 1, &yv);
    if (st == EFFML_OK) st = effml_layer_forward(ctx, model, xv, yv, EFFML_LAYER_MODE_INFER);
    effml_tensor_free(xv);
    effml_tensor_free(yv);
  }
  if (dst != logits) {
    if (st == EFFML_OK) st = effml_tensor_copy(ctx, logits, dst);
    effml_tensor_free(dst);
  }
  return st;
}
