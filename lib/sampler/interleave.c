/* Interleaving K sources with the stopping strategies of Hugging Face
 * datasets `interleave_datasets` (Hugging Face datasets documentation): round robin without
 * probabilities; with probabilities, one source draw per example (alias
 * method), the stop test before each draw (so the example that exhausts a
 * source is included), wrapping sources unless without replacement.  Sources
 * with probability 0 are never drawn and never block stopping (datasets PR
 * #7157).  The draws differ from numpy's PCG64 stream; the rules are the same. */
#include <math.h>
#include <string.h>

#include "sampler_internal.h"

typedef struct {
  int64_t n, cap;
  int64_t *src, *idx;
  int fixed; /* src/idx are the caller's arrays of `cap` entries: never grown or freed */
} seq;

static effml_status seq_push(effml_context *ctx, seq *q, int64_t s, int64_t i) {
  if (q->n == q->cap && !q->fixed) {
    int64_t cap = q->cap ? q->cap * 2 : 64;
    int64_t *a = (int64_t *)effml__malloc(ctx, (size_t)cap * sizeof(int64_t));
    int64_t *b = (int64_t *)effml__malloc(ctx, (size_t)cap * sizeof(int64_t));
    if (!a || !b) {
      effml__free(ctx, a);
      effml__free(ctx, b);
      return effml__err(ctx, EFFML_E_NOMEM, "out of memory for %lld interleaved examples",
                        (long long)cap);
    }
    if (q->n) {
      memcpy(a, q->src, (size_t)q->n * sizeof(int64_t));
      memcpy(b, q->idx, (size_t)q->n * sizeof(int64_t));
    }
    effml__free(ctx, q->src);
    effml__free(ctx, q->idx);
    q->src = a;
    q->idx = b;
    q->cap = cap;
  }
  q->src[q->n] = s;
  q->idx[q->n] = i;
  q->n++;
  return EFFML_OK;
}

static effml_status check_interleave_args(effml_context *ctx, const int64_t *lengths,
                                          int64_t n_sources, const double *probs,
                                          int32_t stopping_strategy, int64_t max_len) {
  if (n_sources < 1)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "n_sources=%lld must be >= 1", (long long)n_sources);
  if (stopping_strategy < EFFML_SAMPLER_STOP_FIRST_EXHAUSTED ||
      stopping_strategy > EFFML_SAMPLER_STOP_ALL_EXHAUSTED_WITHOUT_REPLACEMENT)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "stopping_strategy=%d is not an EFFML_SAMPLER_STOP_* value",
                      (int)stopping_strategy);
  if (max_len < 1) return effml__err(ctx, EFFML_E_INVALID_ARG, "max_len=%lld must be >= 1", (long long)max_len);
  double psum = 0;
  for (int64_t s = 0; s < n_sources; ++s) {
    if (lengths[s] < 1)
      return effml__err(ctx, EFFML_E_INVALID_ARG, "lengths[%lld]=%lld must be >= 1", (long long)s,
                        (long long)lengths[s]);
    if (probs) {
      if (!(probs[s] >= 0) || !isfinite(probs[s]))
        return effml__err(ctx, EFFML_E_INVALID_ARG, "probs[%lld]=%g must be finite and >= 0",
                          (long long)s, probs[s]);
      psum += probs[s];
    }
  }
  if (probs && fabs(psum - 1.0) > 1e-6)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "probs sum to %.17g, expected 1", psum);
  return EFFML_OK;
}

static effml_status too_long(effml_context *ctx, int64_t max_len) {
  return effml__err(ctx, EFFML_E_RANGE, "interleaved sequence longer than max_len=%lld",
                    (long long)max_len);
}

/* Without probabilities: rounds of one example per source (sources shorter than the
 * round count wrap, or are skipped without replacement). */
static effml_status round_robin(effml_context *ctx, const int64_t *lengths, int64_t n_sources,
                                int32_t stopping_strategy, int wrap, int64_t max_len, seq *q) {
  effml_status st = EFFML_OK;
  int64_t rounds = lengths[0];
  for (int64_t s = 1; s < n_sources; ++s)
    rounds = stopping_strategy == EFFML_SAMPLER_STOP_FIRST_EXHAUSTED
                 ? (lengths[s] < rounds ? lengths[s] : rounds)
                 : (lengths[s] > rounds ? lengths[s] : rounds);
  for (int64_t r = 0; st == EFFML_OK && r < rounds; ++r)
    for (int64_t s = 0; st == EFFML_OK && s < n_sources; ++s) {
      if (!wrap && r >= lengths[s]) continue;
      st = q->n == max_len ? too_long(ctx, max_len) : seq_push(ctx, q, s, r % lengths[s]);
    }
  return st;
}

/* With probabilities: the stop test (over sources of probability > 0), then one alias
 * draw per example; pos[s] is source s's next index, done[s] whether it was exhausted. */
static effml_status drawn(effml_context *ctx, const int64_t *lengths, int64_t n_sources,
                          const double *probs, int32_t stopping_strategy, uint64_t seed, int wrap,
                          int64_t max_len, int64_t *pos, char *done, seq *q) {
  effml_sampler_alias *al = NULL;
  effml_status st = effml_sampler_alias_create(ctx, probs, n_sources, seed, &al);
  for (;;) {
    if (st != EFFML_OK) break;
    int any = 0, all = 1;
    for (int64_t s = 0; s < n_sources; ++s) {
      if (!(probs[s] > 0)) continue;
      any |= done[s];
      all &= done[s];
    }
    if (stopping_strategy == EFFML_SAMPLER_STOP_FIRST_EXHAUSTED ? any : all) break;
    if (q->n == max_len) {
      st = too_long(ctx, max_len);
      break;
    }
    int64_t s;
    do { /* without replacement: skip exhausted sources */
      st = effml_sampler_alias_draw(ctx, al, 1, &s);
    } while (st == EFFML_OK && !wrap && done[s]);
    if (st != EFFML_OK) break;
    st = seq_push(ctx, q, s, pos[s]);
    if (++pos[s] == lengths[s]) {
      done[s] = 1;
      if (wrap) pos[s] = 0;
    }
  }
  effml_sampler_alias_free(al);
  return st;
}

/* The sequence into q (grown, or the caller's arrays when q->fixed); max_len >= 1.
 * Phases: arguments, then round_robin (no probabilities) or drawn. */
static effml_status interleave_run(effml_context *ctx, const int64_t *lengths, int64_t n_sources,
                                   const double *probs, int32_t stopping_strategy, uint64_t seed,
                                   int64_t max_len, seq *q) {
  EFFML__TRY(check_interleave_args(ctx, lengths, n_sources, probs, stopping_strategy, max_len));
  effml_status st = EFFML_OK;
  int64_t *pos = (int64_t *)effml__calloc(ctx, (size_t)n_sources, sizeof(int64_t));
  char *done = (char *)effml__calloc(ctx, (size_t)n_sources, 1);
  if (!pos || !done) st = effml__err(ctx, EFFML_E_NOMEM, "out of memory");
  const int wrap = stopping_strategy != EFFML_SAMPLER_STOP_ALL_EXHAUSTED_WITHOUT_REPLACEMENT;
  if (st == EFFML_OK && probs == NULL)
    st = round_robin(ctx, lengths, n_sources, stopping_strategy, wrap, max_len, q);
  else if (st == EFFML_OK)
    st = drawn(ctx, lengths, n_sources, probs, stopping_strategy, seed, wrap, max_len, pos, done, q);
  effml__free(ctx, pos);
  effml__free(ctx, done);
  return st;
}

effml_status effml_sampler_interleave(effml_context *ctx, const int64_t *lengths,
                                      int64_t n_sources, const double *probs,
                                      int32_t stopping_strategy, uint64_t seed, int64_t max_len,
                                      effml_tensor **source, effml_tensor **index) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, lengths);
  EFFML__CHECK_NULL(ctx, source);
  EFFML__CHECK_NULL(ctx, index);
  seq q;
  memset(&q, 0, sizeof q);
  effml_status st = interleave_run(ctx, lengths, n_sources, probs, stopping_strategy, seed,
                                   max_len, &q);
  effml_tensor *ts = NULL, *ti = NULL;
  if (st == EFFML_OK) st = effml__tensor_create_uninit(ctx, EFFML_I64, 1, &q.n, &ts);
  if (st == EFFML_OK) st = effml__tensor_create_uninit(ctx, EFFML_I64, 1, &q.n, &ti);
  if (st == EFFML_OK && q.n > 0) {
    memcpy(ts->data, q.src, (size_t)q.n * sizeof(int64_t));
    memcpy(ti->data, q.idx, (size_t)q.n * sizeof(int64_t));
  }
  effml__free(ctx, q.src);
  effml__free(ctx, q.idx);
  if (st != EFFML_OK) {
    effml_tensor_free(ts);
    effml_tensor_free(ti);
    return st;
  }
  *source = ts;
  *index = ti;
  return EFFML_OK;
}

effml_status effml_sampler_interleave_into(effml_context *ctx, const int64_t *lengths,
                                           int64_t n_sources, const double *probs,
                                           int32_t stopping_strategy, uint64_t seed,
                                           effml_tensor *source, effml_tensor *index,
                                           int64_t *n_out) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, lengths);
  EFFML__CHECK_NULL(ctx, n_out);
  EFFML__TRY(effml__check_tensor(ctx, source, "source", EFFML_I64, 1, 1));
  EFFML__TRY(effml__check_writable(ctx, source, "source"));
  EFFML__TRY(effml__check_tensor(ctx, index, "index", EFFML_I64, 1, 1));
  EFFML__TRY(effml__check_writable(ctx, index, "index"));
  EFFML__TRY(effml__check_dim(ctx, index, "index", 0, source->shape[0]));
  seq q;
  memset(&q, 0, sizeof q);
  q.fixed = 1;
  q.cap = source->shape[0];
  q.src = (int64_t *)(void *)source->data;
  q.idx = (int64_t *)(void *)index->data;
  if (q.cap < 1)
    return effml__err(ctx, EFFML_E_SHAPE, "source and index have 0 entries: nothing fits");
  EFFML__TRY(interleave_run(ctx, lengths, n_sources, probs, stopping_strategy, seed, q.cap, &q));
  *n_out = q.n;
  return EFFML_OK;
}
