#include "benchutil.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

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
