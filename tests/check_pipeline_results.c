/* Checks the results.json written by `pipeline_fashion_mnist --quick`
 * structure (every stage present with every field) and sane
 * values (accuracies above chance, parameter percentages in range, iso-FLOP
 * sparse model, cascades cheaper than the full ensemble, data files written).
 * Usage: check_pipeline_results results.json out_dir */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;

#define EXPECT(cond, ...)                 \
  do {                                    \
    if (!(cond)) {                        \
      fprintf(stderr, "FAIL: " __VA_ARGS__); \
      fprintf(stderr, "\n");              \
      failures++;                         \
    }                                     \
  } while (0)

static const cJSON *find_stage(const cJSON *results, const char *stage) {
  const cJSON *r;
  cJSON_ArrayForEach(r, results) {
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(r, "stage");
    if (cJSON_IsString(s) && strcmp(s->valuestring, stage) == 0) return r;
  }
  return NULL;
}

static double num(const cJSON *r, const char *key) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(r, key);
  return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

/* Split one RFC 4180 record from `p` into fields (quoted fields may hold commas and doubled
 * quotes); returns the number of fields and advances *p past the line end, or -1 at EOF
 * or on a malformed quote.  Field k (< max) is copied into out[k]. */
static int csv_record(const char **p, char out[][128], int max) {
  const char *s = *p;
  if (!*s) return -1;
  int n = 0;
  for (;;) {
    char buf[128];
    size_t len = 0;
    if (*s == '"') {
      ++s;
      for (;;) {
        if (!*s) return -1;
        if (*s == '"') {
          if (s[1] == '"') {
            s += 2;
            if (len < sizeof buf - 1) buf[len++] = '"';
            continue;
          }
          ++s;
          break;
        }
        if (len < sizeof buf - 1) buf[len++] = *s;
        ++s;
      }
      if (*s != ',' && *s != '\n' && *s != '\r' && *s) return -1; /* text after the quote */
    } else {
      while (*s && *s != ',' && *s != '\n' && *s != '\r') {
        if (*s == '"') return -1; /* a quote inside an unquoted field */
        if (len < sizeof buf - 1) buf[len++] = *s;
        ++s;
      }
    }
    buf[len] = '\0';
    if (n < max) memcpy(out[n], buf, len + 1);
    ++n;
    if (*s == ',') {
      ++s;
      continue;
    }
    if (*s == '\r') ++s;
    if (*s == '\n') ++s;
    *p = s;
    return n;
  }
}

int main(int argc, char **argv) {
  if (argc != 3 && argc != 4) {
    fprintf(stderr, "usage: %s results.json out_dir [must_stay_empty_dir]\n", argv[0]);
    return 2;
  }
  FILE *f = fopen(argv[1], "rb");
  if (!f) {
    fprintf(stderr, "FAIL: cannot open %s\n", argv[1]);
    return 1;
  }
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = calloc(1, (size_t)n + 1);
  if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) return 1;
  fclose(f);
  cJSON *root = cJSON_Parse(buf);
  free(buf);
  if (!root) {
    fprintf(stderr, "FAIL: %s is not valid JSON\n", argv[1]);
    return 1;
  }
  const cJSON *results = cJSON_GetObjectItemCaseSensitive(root, "results");
  EXPECT(cJSON_IsArray(results), "no results array");
  const cJSON *chosen = cJSON_GetObjectItemCaseSensitive(root, "chosen_sampler");
  EXPECT(cJSON_IsString(chosen) && (!strcmp(chosen->valuestring, "smote") ||
                                    !strcmp(chosen->valuestring, "temperature")),
         "chosen_sampler must be smote or temperature");

  static const char *stages[] = {"rebalance:none", "rebalance:smote", "rebalance:temperature",
                                 "rebalance:upweight", "rebalance:temperature+cooldown",
                                 "calibrated:temperature", "calibrated:vector",
                                 "calibrated:correctness_aware", "cascade_window_calibrated",
                                 "dense", "sparse_wide_rigl", "single_small", "ensemble",
                                 "cascade_threshold", "cascade_window", "shift:frozen_base",
                                 "shift:compacter"};
  static const char *fields[] = {"test_accuracy", "balanced_accuracy", "trainable_params",
                                 "total_params", "trainable_percent", "macs_per_sample",
                                 "coverage_at_5pct_risk", "risk_at_80pct_coverage", "ece_15bins",
                                 "seconds"};
  for (size_t i = 0; i < sizeof stages / sizeof *stages; ++i) {
    const cJSON *r = find_stage(results, stages[i]);
    EXPECT(r != NULL, "stage %s missing", stages[i]);
    if (!r) continue;
    for (size_t k = 0; k < sizeof fields / sizeof *fields; ++k) {
      double v = num(r, fields[k]);
      EXPECT(isfinite(v) && v >= 0, "%s.%s = %g is not a finite number >= 0", stages[i], fields[k], v);
    }
    double acc = num(r, "test_accuracy"), bal = num(r, "balanced_accuracy");
    EXPECT(acc <= 1 && bal <= 1, "%s: accuracies must be <= 1", stages[i]);
    EXPECT(num(r, "coverage_at_5pct_risk") <= 1, "%s: coverage > 1", stages[i]);
    EXPECT(num(r, "ece_15bins") <= 1, "%s: ECE > 1", stages[i]);
    EXPECT(num(r, "trainable_percent") <= 100, "%s: trainable percent > 100", stages[i]);
    /* Chance is 10 %; every model trained on the rebalanced data must beat it clearly. */
    if (strncmp(stages[i], "shift:", 6) != 0 && strcmp(stages[i], "rebalance:none") != 0)
      EXPECT(bal > 0.30, "%s: balanced accuracy %.3f is not above chance", stages[i], bal);
  }
  const cJSON *none = find_stage(results, "rebalance:none");
  const cJSON *smote = find_stage(results, "rebalance:smote");
  const cJSON *temp = find_stage(results, "rebalance:temperature");
  const cJSON *dense = find_stage(results, "dense");
  const cJSON *sparse = find_stage(results, "sparse_wide_rigl");
  const cJSON *ens = find_stage(results, "ensemble");
  const cJSON *win = find_stage(results, "cascade_window");
  const cJSON *thr = find_stage(results, "cascade_threshold");
  const cJSON *frozen = find_stage(results, "shift:frozen_base");
  const cJSON *comp = find_stage(results, "shift:compacter");
  if (none && smote && temp) {
    EXPECT(num(none, "balanced_accuracy") > 0.10, "long-tailed model is not above chance");
    EXPECT(num(smote, "balanced_accuracy") > num(none, "balanced_accuracy") ||
               num(temp, "balanced_accuracy") > num(none, "balanced_accuracy"),
           "rebalancing did not improve balanced accuracy");
  }
  if (dense && sparse) {
    double d = num(dense, "macs_per_sample"), s = num(sparse, "macs_per_sample");
    EXPECT(fabs(s - d) <= 0.01 * d, "sparse wide MACs %.0f not within 1%% of dense %.0f", s, d);
  }
  if (ens && win && thr) {
    EXPECT(num(win, "macs_per_sample") < num(ens, "macs_per_sample"),
           "window cascade is not cheaper than the full ensemble");
    EXPECT(num(thr, "macs_per_sample") < num(ens, "macs_per_sample"),
           "threshold cascade is not cheaper than the full ensemble");
  }
  /* Temperature scaling never changes a prediction: member 1's accuracy is unchanged. */
  const cJSON *small = find_stage(results, "single_small");
  const cJSON *ts = find_stage(results, "calibrated:temperature");
  if (small && ts)
    EXPECT(num(ts, "test_accuracy") == num(small, "test_accuracy"),
           "temperature scaling changed member 1's accuracy (%.4f -> %.4f)",
           num(small, "test_accuracy"), num(ts, "test_accuracy"));
  if (frozen && comp) {
    double pct = num(comp, "trainable_percent");
    EXPECT(pct > 0 && pct < 2.0, "Compacter trains %.3f%% of the parameters (must be in (0, 2))", pct);
    EXPECT(num(comp, "test_accuracy") > num(frozen, "test_accuracy"),
           "Compacter adaptation did not beat the frozen base on the shifted task");
    EXPECT(num(comp, "test_accuracy") > 0.10, "Compacter on the shifted task is not above chance");
  }
  /* results.csv: valid CSV (RFC 4180), one record per result with the header's field count,
   * the same stage and model names as results.json. */
  {
    char path[4096];
    snprintf(path, sizeof path, "%s/results.csv", argv[2]);
    size_t len = 0;
    FILE *g = fopen(path, "rb");
    char *csv = NULL;
    if (g) {
      csv = calloc(1, 1 << 20);
      len = fread(csv, 1, (1 << 20) - 1, g);
      fclose(g);
    }
    EXPECT(csv != NULL && len > 0, "cannot read %s", path);
    if (csv) {
      const char *q = csv;
      static char f[16][128];
      int header = csv_record(&q, f, 16);
      EXPECT(header == 11, "results.csv header has %d fields, need 11", header);
      EXPECT(header >= 2 && !strcmp(f[0], "stage") && !strcmp(f[1], "model"),
             "results.csv header does not start with stage,model");
      int rows = 0, k;
      while ((k = csv_record(&q, f, 16)) != -1) {
        EXPECT(k == header, "results.csv record %d has %d fields, header %d", rows + 1, k, header);
        const cJSON *r = cJSON_GetArrayItem(results, rows);
        if (r && k >= 2) {
          const cJSON *st = cJSON_GetObjectItemCaseSensitive(r, "stage");
          const cJSON *mo = cJSON_GetObjectItemCaseSensitive(r, "model");
          EXPECT(cJSON_IsString(st) && !strcmp(st->valuestring, f[0]),
                 "results.csv record %d: stage '%s' differs from results.json", rows + 1, f[0]);
          EXPECT(cJSON_IsString(mo) && !strcmp(mo->valuestring, f[1]),
                 "results.csv record %d: model '%s' differs from results.json", rows + 1, f[1]);
        }
        ++rows;
      }
      EXPECT(*q == '\0', "results.csv: malformed record after %d rows", rows);
      EXPECT(rows == cJSON_GetArraySize(results), "results.csv has %d records, results.json %d",
             rows, cJSON_GetArraySize(results));
      free(csv);
    }
  }
  { /* the cascade paper and its claim are named, with the verdict */
    const cJSON *cl = cJSON_GetObjectItemCaseSensitive(root, "claim");
    const cJSON *paper = cl ? cJSON_GetObjectItemCaseSensitive(cl, "paper") : NULL;
    const cJSON *holds = cl ? cJSON_GetObjectItemCaseSensitive(cl, "holds") : NULL;
    EXPECT(cJSON_IsString(paper) && strstr(paper->valuestring, "Xia & Bouganis") &&
               strstr(paper->valuestring, "2303.08010"),
           "results.json: claim.paper must name Xia & Bouganis, arXiv 2303.08010");
    EXPECT(cJSON_IsBool(holds), "results.json: claim.holds must be true or false");
  }
  cJSON_Delete(root);
  /* Data files for the plots and the CSV exist. */
  static const char *files[] = {"results.csv", "per_class_recall.dat", "rc_member.dat",
                                "rc_dense.dat", "rc_ensemble.dat", "rc_cascade_threshold.dat",
                                "rc_cascade_window.dat", "plots.gp", "cost.dat",
                                "pareto_cov.dat", "pareto_acc.dat", "loss_temperature.dat",
                                "loss_upweight.dat", "loss_cooldown.dat", "reliability.dat"};
  for (size_t i = 0; i < sizeof files / sizeof *files; ++i) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", argv[2], files[i]);
    FILE *g = fopen(path, "r");
    EXPECT(g != NULL, "missing output file %s", path);
    if (g) fclose(g);
  }
  if (argc > 3) { /* the working directory the example ran in: nothing written there */
    DIR *d = opendir(argv[3]);
    EXPECT(d != NULL, "cannot open %s", argv[3]);
    if (d) {
      struct dirent *e;
      while ((e = readdir(d)) != NULL)
        EXPECT(!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."),
               "the example wrote %s into its working directory %s", e->d_name, argv[3]);
      closedir(d);
    }
  }
  if (failures) {
    fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  printf("pipeline results OK\n");
  return 0;
}
