/* bench_adapter_merge: `effml-adapter merge` of a ~1 GiB synthetic base against a plain
 * read/write copy of the same file.
 *
 * Base: 16 f32 tensors "layers.<i>.proj.weight" [4096, 4096] (64 MiB each, 1 GiB) plus a small
 * bias per layer; adapter: PEFT LoRA r 16, alpha 32 on every 2-D tensor.  Both are written to
 * $EFFML_BENCH_TMP (default /tmp) and removed at the end.
 *
 * Timed, interleaved run by run (same page-cache state: the base is read by both):
 *   ours      the effml-adapter program (fork + exec), wall time and the child's peak RSS
 *             (wait4 ru_maxrss)
 *   baseline  this process copying the base to another file with pread/write in 16 MiB chunks,
 *             overwriting it in place (the baseline) and, reported beside it, to a fresh
 *             temporary file renamed over the target (the tool's discipline)
 * The floor: the tool moves the same bytes as the copy (read the file, write it once), so the
 * fastest copy of the run is the floor (floor_s).  The tool's own CPU time (user, sys; wait4)
 * is reported too: on this shared VM wall time is mostly waiting for a CPU; and the copies' system
 * time (RUSAGE_THREAD around each), so that the kernel's share of each side can be compared: a new
 * file written beside an old one (the atomic copy without drop-behind) costs several times the
 * kernel time of one overwritten in place on a VM that hands free memory back to its host (see
 * tools/effml_adapter.c, "Drop-behind").
 * Goals (issue): ours <= 2x the copy (speedup >= 0.5), peak RSS <= 3x the largest tensor.
 * One JSON line (bu_report) with min/median/max of both. */
#define _GNU_SOURCE /* RUSAGE_THREAD */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "benchutil.h"
#include "effml.h"

#define NL 16
#define DIM 4096
#define RANK 16

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static void fill(float *p, int64_t n, uint64_t seed, float scale) {
  uint64_t s = seed * 0x9e3779b97f4a7c15ULL + 1;
  for (int64_t i = 0; i < n; ++i) {
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    p[i] = scale * (float)((double)(s >> 11) * 0x1.0p-53 * 2.0 - 1.0);
  }
}

/* The base, written as safetensors by hand (one tensor in memory at a time). */
static int write_base(const char *path) {
  char hdr[8192];
  size_t h = 0;
  uint64_t off = 0;
  h += (size_t)snprintf(hdr + h, sizeof hdr - h, "{\"__metadata__\":{\"format\":\"pt\"}");
  for (int i = 0; i < NL; ++i) {
    uint64_t wb = (uint64_t)DIM * DIM * 4, bb = (uint64_t)DIM * 4;
    h += (size_t)snprintf(hdr + h, sizeof hdr - h,
                          ",\"layers.%02d.proj.weight\":{\"dtype\":\"F32\",\"shape\":[%d,%d],\"data_offsets\":[%llu,%llu]}"
                          ",\"layers.%02d.proj.bias\":{\"dtype\":\"F32\",\"shape\":[%d],\"data_offsets\":[%llu,%llu]}",
                          i, DIM, DIM, (unsigned long long)off, (unsigned long long)(off + wb), i, DIM,
                          (unsigned long long)(off + wb), (unsigned long long)(off + wb + bb));
    off += wb + bb;
  }
  h += (size_t)snprintf(hdr + h, sizeof hdr - h, "}");
  while (h % 8) hdr[h++] = ' ';
  FILE *f = fopen(path, "wb");
  if (f == NULL) return -1;
  unsigned char len8[8];
  for (int k = 0; k < 8; ++k) len8[k] = (unsigned char)((uint64_t)h >> (8 * k));
  fwrite(len8, 1, 8, f);
  fwrite(hdr, 1, h, f);
  float *w = (float *)malloc((size_t)DIM * DIM * sizeof(float));
  for (int i = 0; i < NL; ++i) {
    fill(w, (int64_t)DIM * DIM, (uint64_t)i + 1, 0.02f);
    fwrite(w, sizeof(float), (size_t)DIM * DIM, f);
    fill(w, DIM, (uint64_t)i + 100, 0.01f);
    fwrite(w, sizeof(float), DIM, f);
  }
  free(w);
  return fclose(f);
}

static int write_adapter(effml_context *ctx, const char *dir) {
  mkdir(dir, 0755);
  char p[600];
  snprintf(p, sizeof p, "%s/adapter_config.json", dir);
  FILE *f = fopen(p, "w");
  if (f == NULL) return -1;
  fprintf(f, "{\"peft_type\": \"LORA\", \"r\": %d, \"lora_alpha\": 32, \"target_modules\": [\"proj\"], "
             "\"use_rslora\": false, \"use_dora\": false, \"bias\": \"none\"}\n", RANK);
  fclose(f);
  char *names[2 * NL];
  effml_tensor *ts[2 * NL];
  for (int i = 0; i < NL; ++i) {
    int64_t sa[2] = {RANK, DIM}, sb[2] = {DIM, RANK};
    names[2 * i] = (char *)malloc(96);
    names[2 * i + 1] = (char *)malloc(96);
    snprintf(names[2 * i], 96, "base_model.model.layers.%02d.proj.lora_A.weight", i);
    snprintf(names[2 * i + 1], 96, "base_model.model.layers.%02d.proj.lora_B.weight", i);
    effml_tensor_create(ctx, EFFML_F32, 2, sa, &ts[2 * i]);
    effml_tensor_create(ctx, EFFML_F32, 2, sb, &ts[2 * i + 1]);
    fill(effml_tensor_data(ts[2 * i]), RANK * DIM, (uint64_t)i + 7, 0.01f);
    fill(effml_tensor_data(ts[2 * i + 1]), RANK * DIM, (uint64_t)i + 9, 0.01f);
  }
  snprintf(p, sizeof p, "%s/adapter_model.safetensors", dir);
  const char *mk[1] = {"format"}, *mv[1] = {"pt"};
  effml_status s = effml_safetensors_save(ctx, p, 2 * NL, (const char *const *)names, (const effml_tensor *const *)ts, 1,
                                          mk, mv);
  for (int i = 0; i < 2 * NL; ++i) {
    free(names[i]);
    effml_tensor_free(ts[i]);
  }
  return s == EFFML_OK ? 0 : -1;
}

/* atomic = 0: overwrite `to` in place (O_TRUNC); 1: write a fresh "<to>.tmp" and rename it over
 * `to`, the discipline the tool follows (never a half-written output).  On this VM's ext4 the
 * second costs the kernel more: the renamed-over file's page cache and blocks are released. */
/* System CPU seconds of the calling thread so far (the copies run on it). */
static double thread_sys_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_THREAD, &ru);
  return (double)ru.ru_stime.tv_sec + 1e-6 * (double)ru.ru_stime.tv_usec;
}

static double plain_copy(const char *from, const char *to, int atomic, double *sys_s) {
  double t0 = bu_now(), s0 = thread_sys_s();
  char tmpname[600];
  snprintf(tmpname, sizeof tmpname, "%s.tmp", to);
  int in = open(from, O_RDONLY), out = open(atomic ? tmpname : to, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  size_t chunk = 1u << 24;
  char *buf = (char *)malloc(chunk);
  off_t off = 0;
  ssize_t n;
  while ((n = pread(in, buf, chunk, off)) > 0) {
    if (write(out, buf, (size_t)n) != n) break;
    off += n;
  }
  fsync(out); /* the tool fsyncs its output too */
  close(in);
  close(out);
  free(buf);
  if (atomic) rename(tmpname, to);
  *sys_s = thread_sys_s() - s0;
  return bu_now() - t0;
}

static double run_tool(const char *base, const char *dir, const char *out, long *maxrss_kb, double *user_s,
                       double *sys_s) {
  double t0 = bu_now();
  pid_t pid = fork();
  if (pid == 0) {
    int devnull = open("/dev/null", O_WRONLY);
    dup2(devnull, 2);
    execl(EFFML_ADAPTER_TOOL, "effml-adapter", "merge", "--base", base, "--adapter", dir, "--out", out, (char *)NULL);
    _exit(127);
  }
  int status = 0;
  struct rusage ru;
  wait4(pid, &status, 0, &ru);
  double t = bu_now() - t0;
  *maxrss_kb = ru.ru_maxrss;
  *user_s = (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec;
  *sys_s = (double)ru.ru_stime.tv_sec + 1e-6 * (double)ru.ru_stime.tv_usec;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    fprintf(stderr, "bench_adapter_merge: effml-adapter failed (status %d)\n", status);
    exit(1);
  }
  return t;
}

int main(int argc, char **argv) {
  int reps = 5;
  for (int i = 1; i + 1 < argc; ++i)
    if (strcmp(argv[i], "--reps") == 0) reps = atoi(argv[++i]);
  if (reps < 1 || reps > 31) reps = 5;
  const char *tmp = getenv("EFFML_BENCH_TMP");
  if (tmp == NULL) tmp = "/tmp";
  char base[512], dir[512], out[512], copy[512];
  snprintf(base, sizeof base, "%s/effml_merge_bench_base.safetensors", tmp);
  snprintf(dir, sizeof dir, "%s/effml_merge_bench_adapter", tmp);
  snprintf(out, sizeof out, "%s/effml_merge_bench_out.safetensors", tmp);
  snprintf(copy, sizeof copy, "%s/effml_merge_bench_copy.safetensors", tmp);
  effml_context *ctx = NULL;
  if (effml_context_create(NULL, &ctx) != EFFML_OK) return 1;
  if (write_base(base) != 0 || write_adapter(ctx, dir) != 0) {
    fprintf(stderr, "bench_adapter_merge: cannot write the inputs under %s\n", tmp);
    return 1;
  }
  char copy2[512];
  snprintf(copy2, sizeof copy2, "%s/effml_merge_bench_copy_atomic.safetensors", tmp);
  double to[32], tc[32], ta[32], tu[32], tsys[32], csys[32], asys[32], u = 0, sy = 0, cs = 0, as = 0;
  long rss = 0, rss_max = 0;
  for (int k = -1; k < reps; ++k) {
    double a = run_tool(base, dir, out, &rss, &u, &sy);
    double b = plain_copy(base, copy, 0, &cs);
    double c = plain_copy(base, copy2, 1, &as);
    if (k >= 0) {
      to[k] = a;
      tc[k] = b;
      ta[k] = c;
      tu[k] = u;
      tsys[k] = sy;
      csys[k] = cs;
      asys[k] = as;
      if (rss > rss_max) rss_max = rss;
    }
  }
  qsort(to, (size_t)reps, sizeof to[0], cmp_double);
  qsort(tc, (size_t)reps, sizeof tc[0], cmp_double);
  qsort(ta, (size_t)reps, sizeof ta[0], cmp_double);
  qsort(tu, (size_t)reps, sizeof tu[0], cmp_double);
  qsort(tsys, (size_t)reps, sizeof tsys[0], cmp_double);
  qsort(csys, (size_t)reps, sizeof csys[0], cmp_double);
  qsort(asys, (size_t)reps, sizeof asys[0], cmp_double);
  struct stat sb;
  stat(base, &sb);
  double largest = (double)DIM * DIM * 4;
  char extra[1400];
  snprintf(extra, sizeof extra,
           "\"file_bytes\":%lld,\"tensors\":%d,\"largest_tensor_bytes\":%.0f,\"rank\":%d,\"reps\":%d,"
           "\"ours_min_s\":%.4g,\"ours_max_s\":%.4g,\"baseline_min_s\":%.4g,\"baseline_max_s\":%.4g,"
           "\"peak_rss_bytes\":%.0f,\"peak_rss_over_largest_tensor\":%.3g,\"interleaved\":true,"
           "\"goal_speedup\":0.5,\"goal_rss_ratio\":3,\"atomic_copy_median_s\":%.4g,\"atomic_copy_min_s\":%.4g,"
           "\"atomic_copy_max_s\":%.4g,\"ours_over_atomic_copy\":%.3g,\"floor_s\":%.4g,"
           "\"ours_cpu_user_median_s\":%.3g,\"ours_cpu_sys_median_s\":%.3g,"
           "\"baseline_cpu_sys_median_s\":%.3g,\"atomic_copy_cpu_sys_median_s\":%.3g",
           (long long)sb.st_size, 2 * NL, largest, RANK, reps, to[0], to[reps - 1], tc[0], tc[reps - 1],
           (double)rss_max * 1024.0, (double)rss_max * 1024.0 / largest, ta[reps / 2], ta[0], ta[reps - 1],
           to[reps / 2] / ta[reps / 2], tc[0] < ta[0] ? tc[0] : ta[0], tu[reps / 2], tsys[reps / 2], csys[reps / 2],
           asys[reps / 2]);
  bu_report("adapter_merge", "effml_adapter_merge_1gib_lora_r16", to[reps / 2], "plain_read_write_copy", tc[reps / 2],
            extra);
  if (getenv("EFFML_BENCH_KEEP") != NULL) { /* keep the inputs for profiling the tool by hand */
    effml_context_free(ctx);
    return 0;
  }
  unlink(base);
  unlink(out);
  unlink(copy);
  unlink(copy2);
  char p[700];
  snprintf(p, sizeof p, "%s/adapter_config.json", dir);
  unlink(p);
  snprintf(p, sizeof p, "%s/adapter_model.safetensors", dir);
  unlink(p);
  rmdir(dir);
  effml_context_free(ctx);
  return 0;
}
