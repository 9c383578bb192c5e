/* Temperature sampling over K sources (Arivazhagan et al. 2019, arXiv 1907.05019; UniMax: Chung et al. 2023, arXiv 2304.09151; Cooldown: Li et al. 2025, arXiv 2410.04579): probabilities
 * q_i ∝ (n_i/N)^(1/T), schedules of T, UniMax budgets, fairseq virtual sizes. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sampler_internal.h"

static effml_status check_sizes(effml_context *ctx, const double *sizes, int64_t n) {
  EFFML__CHECK_NULL(ctx, sizes);
  if (n < 1) return effml__err(ctx, EFFML_E_INVALID_ARG, "n_sources=%lld must be >= 1", (long long)n);
  double total = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (!(sizes[i] >= 0) || !isfinite(sizes[i]))
      return effml__err(ctx, EFFML_E_INVALID_ARG, "sizes[%lld]=%g must be finite and >= 0",
                        (long long)i, sizes[i]);
    total += sizes[i];
  }
  if (!(total > 0)) return effml__err(ctx, EFFML_E_INVALID_ARG, "sizes are all 0");
  return EFFML_OK;
}

effml_status effml_sampler_temperature_probs_alpha(effml_context *ctx, const double *sizes,
                                           int64_t n_sources, double alpha, double *probs) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__TRY(check_sizes(ctx, sizes, n_sources));
  EFFML__CHECK_NULL(ctx, probs);
  if (!(alpha >= 0) || !isfinite(alpha))
    return effml__err(ctx, EFFML_E_INVALID_ARG, "alpha=%g must be finite and >= 0 (alpha = 1/T)", alpha);
  double total = 0, mx = 0;
  for (int64_t i = 0; i < n_sources; ++i) {
    total += sizes[i];
    if (sizes[i] > mx) mx = sizes[i];
  }
  /* q_i ∝ (n_i/N)^alpha, computed as (n_i/max)^alpha for range safety. */
  double z = 0;
  for (int64_t i = 0; i < n_sources; ++i) {
    double v = sizes[i] > 0 ? pow(sizes[i] / mx, alpha) : 0.0;
    probs[i] = v;
    z += v;
  }
  for (int64_t i = 0; i < n_sources; ++i) probs[i] /= z;
  (void)total;
  return EFFML_OK;
}

effml_status effml_sampler_temperature_probs(effml_context *ctx, const double *sizes, int64_t n_sources,
                                     double temperature, double *probs) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  if (!(temperature > 0))
    return effml__err(ctx, EFFML_E_INVALID_ARG, "temperature=%g must be > 0 (INFINITY: uniform)",
                      temperature);
  return effml_sampler_temperature_probs_alpha(ctx, sizes, n_sources, isinf(temperature) ? 0.0 : 1.0 / temperature,
                                       probs);
}

void effml_sampler_temperature_schedule_init(effml_sampler_temperature_schedule *s) {
  if (s == NULL) return;
  memset(s, 0, sizeof *s);
  s->struct_size = (uint32_t)sizeof *s;
  s->kind = EFFML_SAMPLER_SCHEDULE_CONSTANT;
  s->t_start = 1.0;
  s->t_end = 1.0;
  s->total_steps = 1;
  s->switch_fraction = 0.5;
}

effml_status effml_sampler_temperature_at(effml_context *ctx, const effml_sampler_temperature_schedule *schedule,
                                  int64_t step, double *temperature) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, schedule);
  EFFML__CHECK_NULL(ctx, temperature);
  effml_sampler_temperature_schedule s;
  effml_sampler_temperature_schedule_init(&s);
  if (schedule->struct_size < offsetof(effml_sampler_temperature_schedule, t_start) ||
      schedule->struct_size > EFFML__OPTIONS_MAX_SIZE)
    return effml__err(ctx, EFFML_E_INVALID_ARG,
                      "schedule->struct_size=%u is invalid (use effml_sampler_temperature_schedule_init)",
                      (unsigned)schedule->struct_size);
  EFFML__TRY(effml__options_check_tail(ctx, NULL, "effml_sampler_temperature_schedule",
                                       strlen("effml_sampler_temperature_schedule"), schedule,
                                       schedule->struct_size, sizeof s));
  memcpy(&s, schedule, schedule->struct_size < sizeof s ? schedule->struct_size : sizeof s);
  if (s.total_steps < 1)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "total_steps=%lld must be >= 1", (long long)s.total_steps);
  if (step < 0) return effml__err(ctx, EFFML_E_INVALID_ARG, "step=%lld must be >= 0", (long long)step);
  if (s.kind != EFFML_SAMPLER_SCHEDULE_CUSTOM && (!(s.t_start > 0) || !(s.t_end > 0)))
    return effml__err(ctx, EFFML_E_INVALID_ARG, "t_start=%g and t_end=%g must be > 0", s.t_start,
                      s.t_end);
  double f = step >= s.total_steps ? 1.0 : (double)step / (double)s.total_steps;
  double t;
  switch (s.kind) {
    case EFFML_SAMPLER_SCHEDULE_CONSTANT: t = s.t_start; break;
    case EFFML_SAMPLER_SCHEDULE_LINEAR: t = s.t_start + (s.t_end - s.t_start) * f; break;
    case EFFML_SAMPLER_SCHEDULE_COSINE:
      t = s.t_end + (s.t_start - s.t_end) * 0.5 * (1.0 + cos(3.14159265358979323846 * f));
      break;
    case EFFML_SAMPLER_SCHEDULE_COOLDOWN:
      if (!(s.switch_fraction >= 0 && s.switch_fraction <= 1))
        return effml__err(ctx, EFFML_E_INVALID_ARG, "switch_fraction=%g must be in [0, 1]",
                          s.switch_fraction);
      t = (double)step < s.switch_fraction * (double)s.total_steps ? s.t_start : s.t_end;
      break;
    case EFFML_SAMPLER_SCHEDULE_CUSTOM:
      if (s.fn == NULL)
        return effml__err(ctx, EFFML_E_INVALID_ARG, "EFFML_SAMPLER_SCHEDULE_CUSTOM needs schedule->fn");
      t = s.fn(s.user_data, step, s.total_steps);
      if (!(t > 0))
        return effml__err(ctx, EFFML_E_INVALID_ARG, "custom schedule returned T=%g at step %lld",
                          t, (long long)step);
      break;
    default:
      return effml__err(ctx, EFFML_E_INVALID_ARG, "schedule kind=%d is not an EFFML_SAMPLER_SCHEDULE_* value",
                        (int)s.kind);
  }
  *temperature = t;
  return EFFML_OK;
}

typedef struct {
  double size;
  int64_t index;
} sized;

static int cmp_sized(const void *a, const void *b) {
  const sized *x = (const sized *)a, *y = (const sized *)b;
  if (x->size != y->size) return x->size < y->size ? -1 : 1;
  return (x->index > y->index) - (x->index < y->index);
}

effml_status effml_sampler_unimax(effml_context *ctx, const double *sizes, int64_t n_sources, double budget,
                          double max_epochs, double *allocation, double *probs) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__TRY(check_sizes(ctx, sizes, n_sources));
  EFFML__CHECK_NULL(ctx, probs);
  if (!(budget > 0) || !isfinite(budget))
    return effml__err(ctx, EFFML_E_INVALID_ARG, "budget=%g must be finite and > 0", budget);
  if (!(max_epochs > 0))
    return effml__err(ctx, EFFML_E_INVALID_ARG, "max_epochs=%g must be > 0", max_epochs);
  sized *order = (sized *)effml__alloc_or_err(ctx, (size_t)n_sources * sizeof(sized), "UniMax order");
  double *u = (double *)effml__malloc(ctx, (size_t)n_sources * sizeof(double));
  if (!order || !u) {
    effml__free(ctx, order);
    effml__free(ctx, u);
    return order ? effml__err(ctx, EFFML_E_NOMEM, "out of memory") : EFFML_E_NOMEM;
  }
  for (int64_t i = 0; i < n_sources; ++i) {
    order[i].size = sizes[i];
    order[i].index = i;
  }
  qsort(order, (size_t)n_sources, sizeof(sized), cmp_sized);
  double b = budget, total = 0;
  for (int64_t i = 0; i < n_sources; ++i) {
    double fair = b / (double)(n_sources - i);
    double cap = max_epochs * order[i].size;
    double v = fair < cap ? fair : cap;
    u[order[i].index] = v;
    b -= v;
    total += v;
  }
  for (int64_t i = 0; i < n_sources; ++i) {
    if (allocation) allocation[i] = u[i];
    probs[i] = u[i] / total;
  }
  effml__free(ctx, order);
  effml__free(ctx, u);
  return EFFML_OK;
}

effml_status effml_sampler_virtual_sizes(effml_context *ctx, const int64_t *sizes, const double *probs,
                                 int64_t n_sources, int64_t virtual_size, int64_t *counts,
                                 int64_t *virtual_size_out) {
  EFFML__ENTER(ctx);
  EFFML__CHECK_NULL(ctx, ctx);
  EFFML__CHECK_NULL(ctx, sizes);
  EFFML__CHECK_NULL(ctx, probs);
  EFFML__CHECK_NULL(ctx, counts);
  if (n_sources < 1)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "n_sources=%lld must be >= 1", (long long)n_sources);
  if (virtual_size < 0)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "virtual_size=%lld must be >= 0", (long long)virtual_size);
  double psum = 0, N = 0;
  int64_t L = 0;
  for (int64_t i = 0; i < n_sources; ++i) {
    if (sizes[i] < 0)
      return effml__err(ctx, EFFML_E_INVALID_ARG, "sizes[%lld]=%lld must be >= 0", (long long)i,
                        (long long)sizes[i]);
    if (!(probs[i] >= 0) || !isfinite(probs[i]))
      return effml__err(ctx, EFFML_E_INVALID_ARG, "probs[%lld]=%g must be finite and >= 0",
                        (long long)i, probs[i]);
    psum += probs[i];
    N += (double)sizes[i];
    if (sizes[i] > sizes[L]) L = i;
  }
  if (fabs(psum - 1.0) > 1e-9)
    return effml__err(ctx, EFFML_E_INVALID_ARG, "probs sum to %.17g, expected 1", psum);
  int64_t V = virtual_size;
  if (V == 0) {
    /* fairseq SampledMultiDataset default: int(min(sum_i (q_i/q_L) n_L, 1.5 N)). */
    if (!(probs[L] > 0))
      return effml__err(ctx, EFFML_E_INVALID_ARG,
                        "virtual_size=0 (fairseq default) needs probs > 0 for the largest source %lld",
                        (long long)L);
    double v = 0;
    for (int64_t i = 0; i < n_sources; ++i) v += probs[i] / probs[L] * (double)sizes[L];
    V = (int64_t)(v < 1.5 * N ? v : 1.5 * N);
    if (V < 1) V = 1;
  }
  /* Largest-remainder (Hamilton) allocation of V over probs; ties -> lower index. */
  int64_t given = 0;
  for (int64_t i = 0; i < n_sources; ++i) {
    counts[i] = (int64_t)floor((double)V * probs[i]);
    given += counts[i];
  }
  while (given < V) {
    int64_t best = -1;
    double br = -1;
    for (int64_t i = 0; i < n_sources; ++i) {
      if (!(probs[i] > 0)) continue;
      /* remainder relative to the current count (handles repeated passes) */
      double r = (double)V * probs[i] - (double)counts[i];
      if (r > br) {
        br = r;
        best = i;
      }
    }
    counts[best]++;
    given++;
  }
  while (given > V) { /* only from float error when probs sum to just over 1 */
    int64_t worst = -1;
    double wr = INFINITY;
    for (int64_t i = 0; i < n_sources; ++i) {
      double r = (double)V * probs[i] - (double)counts[i];
      if (counts[i] > 0 && r < wr) {
        wr = r;
        worst = i;
      }
    }
    counts[worst]--;
    given--;
  }
  if (virtual_size_out) *virtual_size_out = V;
  return EFFML_OK;
}
