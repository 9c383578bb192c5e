#include "benchutil.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>
#include <sys/syscall.h>

double bu_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void bu_report(const char *bench, const char *case_name, double ours_s, const char *baseline,
               double baseline_s, const char *extra) {
  printf("{\"bench\":\"%s\",\"case\":\"%s\",\"ours_s\":%.6g,\"baseline\":\"%s\","
         "\"baseline_s\":%.6g,\"speedup\":%.4g%s%s}\n",
         bench, case_name, ours_s, baseline, baseline_s, ours_s > 0 ? baseline_s / ours_s : 0.0,
         extra && *extra ? "," : "", extra ? extra : "");
  fflush(stdout);
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

double bu_median(double *v, int n) {
  if (n <= 0) return 0.0;
  qsort(v, (size_t)n, sizeof *v, cmp_d);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void print_runs(const char *key, const double *v, int n) {
  printf(",\"%s\":[", key);
  for (int i = 0; i < n; ++i) printf("%s%.6g", i ? "," : "", v[i]);
  printf("]");
}

void bu_report_runs(const char *bench, const char *case_name, const double *ours, int n,
                    const char *baseline, const double *base, int nb, const char *extra) {
  double o[256], b[256];
  if (n > 256) n = 256;
  if (nb > 256) nb = 256;
  memcpy(o, ours, (size_t)n * sizeof *o);
  if (nb > 0) memcpy(b, base, (size_t)nb * sizeof *b);
  double om = bu_median(o, n), bm = nb > 0 ? bu_median(b, nb) : 0.0;
  printf("{\"bench\":\"%s\",\"case\":\"%s\",\"ours_s\":%.6g,\"ours_min\":%.6g,\"ours_max\":%.6g,"
         "\"baseline\":\"%s\",",
         bench, case_name, om, o[0], o[n - 1], baseline);
  if (nb > 0)
    printf("\"baseline_s\":%.6g,\"baseline_min\":%.6g,\"baseline_max\":%.6g,\"speedup\":%.4g", bm,
           b[0], b[nb - 1], om > 0 ? bm / om : 0.0);
  else
    printf("\"baseline_s\":null,\"speedup\":null");
  printf(",\"reps\":%d", n);
  print_runs("ours_runs", ours, n);
  if (nb > 0) print_runs("baseline_runs", base, nb);
  if (extra && *extra) printf(",%s", extra);
  printf("}\n");
  fflush(stdout);
}

int64_t bu_peak_rss(void) {
  FILE *f = fopen("/proc/self/status", "r");
  if (!f) return -1;
  char line[256];
  long long kb = -1;
  while (fgets(line, sizeof line, f))
    if (strncmp(line, "VmHWM:", 6) == 0) sscanf(line + 6, "%lld", &kb);
  fclose(f);
  return kb < 0 ? -1 : (int64_t)kb * 1024;
}

const char *bu_isa_level(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return "avx512f";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "avx2+fma";
#endif
  return "baseline";
}

double bu_copy_gbs(size_t bytes, int fresh) {
  char *src = (char *)malloc(bytes);
  char *dst = fresh ? NULL : (char *)malloc(bytes);
  if (!src || (!fresh && !dst)) {
    free(src);
    free(dst);
    return 0.0;
  }
  memset(src, 1, bytes);
  if (dst) memset(dst, 2, bytes);
  double t[5];
  for (int r = 0; r < 5; ++r) {
    char *d = dst;
    double t0 = bu_now();
    if (fresh) d = (char *)malloc(bytes);
    if (!d) break;
    memcpy(d, src, bytes);
    t[r] = bu_now() - t0;
    if (fresh) {
      volatile char sink = d[bytes / 2];
      (void)sink;
      free(d);
    }
  }
  free(src);
  free(dst);
  return (double)bytes / bu_median(t, 5) / 1e9;
}

double bu_fresh_write_s(size_t bytes) {
  double t0 = bu_now();
  char *d = (char *)malloc(bytes);
  if (!d) return 0.0;
  memset(d, 0, bytes);
  double t = bu_now() - t0;
  volatile char sink = d[bytes / 3];
  (void)sink;
  free(d);
  return t;
}

static void cpu_model(char *out, size_t cap) {
  snprintf(out, cap, "unknown");
  FILE *f = fopen("/proc/cpuinfo", "r");
  if (!f) return;
  char line[512];
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, "model name", 10) == 0) {
      char *c = strchr(line, ':');
      if (c) {
        c += 1 + (c[1] == ' ');
        c[strcspn(c, "\n")] = 0;
        size_t k = 0;
        for (; *c && k + 1 < cap; ++c)
          if (*c != '"' && *c != '\\') out[k++] = *c;
        out[k] = 0;
      }
      break;
    }
  }
  fclose(f);
}

void bu_machine(const char *bench, int threads, const char *extra) {
  char cpu[160], cfg[256], core[64];
  cpu_model(cpu, sizeof cpu);
  snprintf(cfg, sizeof cfg, "%s", openblas_get_config());
  snprintf(core, sizeof core, "%s", openblas_get_corename());
  for (char *p = cfg; *p; ++p)
    if (*p == '"' || *p == '\\') *p = ' ';
  double load[3] = {-1, -1, -1};
  FILE *f = fopen("/proc/loadavg", "r");
  if (f) {
    if (fscanf(f, "%lf %lf %lf", &load[0], &load[1], &load[2]) != 3) load[0] = -1;
    fclose(f);
  }
  const size_t bytes = (size_t)64 << 20;
  double warm = bu_copy_gbs(bytes, 0), fresh = bu_copy_gbs(bytes, 1);
  long ncpu = 0;
  f = fopen("/proc/cpuinfo", "r");
  if (f) {
    char line[512];
    while (fgets(line, sizeof line, f)) ncpu += strncmp(line, "processor", 9) == 0;
    fclose(f);
  }
  printf("{\"bench\":\"%s\",\"case\":\"machine\",\"cpu\":\"%s\",\"cpus\":%ld,\"isa\":\"%s\","
         "\"threads\":%d,\"openblas\":\"%s\",\"openblas_core\":\"%s\",\"openblas_threads\":%d,"
         "\"copy_gbs_warm\":%.3g,\"copy_gbs_fresh\":%.3g,\"copy_bytes\":%zu,\"loadavg\":[%.2f,%.2f,%.2f]%s%s}\n",
         bench, cpu, ncpu, bu_isa_level(), threads, cfg, core, openblas_get_num_threads(), warm, fresh,
         bytes, load[0], load[1], load[2], extra && *extra ? "," : "", extra ? extra : "");
  fflush(stdout);
}

void bu_time_pair(bu_fn fa, void *a, bu_fn fb, void *b, int reps, double *ta, double *tb) {
  fa(a);
  if (fb) fb(b);
  for (int i = 0; i < reps; ++i) {
    double t0 = bu_now();
    fa(a);
    double t1 = bu_now();
    if (fb) fb(b);
    double t2 = bu_now();
    ta[i] = t1 - t0;
    if (fb) tb[i] = t2 - t1;
  }
}

/* 1 if some thread of this process other than the caller is in state R
 * (running or runnable), 0 if none, -1 if /proc/self/task cannot be read.
 * which: 0 = any thread but libeffml's pool workers (named "effml-pool"),
 * 1 = only the pool workers. */
static int other_thread_running(int which) {
  char self[32];
  snprintf(self, sizeof self, "%ld", (long)syscall(SYS_gettid));
  DIR *d = opendir("/proc/self/task");
  if (!d) return -1;
  int running = 0;
  struct dirent *e;
  while (!running && (e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.' || strcmp(e->d_name, self) == 0) continue;
    char path[300], buf[512];
    snprintf(path, sizeof path, "/proc/self/task/%s/stat", e->d_name);
    FILE *f = fopen(path, "r");
    if (!f) continue; /* the thread has exited */
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *q = strrchr(buf, ')'); /* "pid (comm) S ..." */
    const char *o = strchr(buf, '(');
    const int pool = o && q && q - o - 1 == 10 && strncmp(o + 1, "effml-pool", 10) == 0;
    if (pool != which) continue;
    if (q && q[1] == ' ' && q[2] == 'R') running = 1;
  }
  closedir(d);
  return running;
}

static double wait_quiet(int which, double max_s) {
  const double t0 = bu_now();
  for (;;) {
    int r = other_thread_running(which);
    double t = bu_now() - t0;
    if (r <= 0 || t >= max_s) return r < 0 ? 0.0 : t;
    struct timespec ms = {0, which ? 100000 : 1000000};
    nanosleep(&ms, NULL);
  }
}

double bu_quiesce(double max_s) { return wait_quiet(0, max_s); }

double bu_pool_idle(double max_s) { return wait_quiet(1, max_s); }

int bu_pool_setup(effml_context *ctx, int argc, char **argv, char *json, size_t cap) {
  int32_t on = 1, spin = EFFML_CORE_POOL_SPIN_DEFAULT;
  for (int i = 1; i < argc; ++i) {
    if (strcmp(argv[i], "--no-pool") == 0) on = 0;
    else if (strcmp(argv[i], "--pool-spin") == 0 && i + 1 < argc) spin = (int32_t)atoi(argv[i + 1]);
  }
  if (effml_context_set_thread_pool(ctx, on, spin) != EFFML_OK) {
    fprintf(stderr, "bench: %s\n", effml_context_last_error(ctx));
    return -1;
  }
  int32_t used = 0;
  on = effml_context_thread_pool(ctx, &used);
  if (json && cap) snprintf(json, cap, "\"pool\":%d,\"pool_spin_us\":%d", (int)on, (int)used);
  return on;
}
