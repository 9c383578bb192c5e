/* probe_thread_start: how long a freshly created thread takes to start
 * running on this machine, after the process has been busy and after it has
 * been idle for a while.  The library starts its worker threads per call (no
 * thread outlives a call, docs/threading.md), so this latency is paid by
 * every multi-threaded kernel call; OpenBLAS keeps its workers spinning
 * between calls and does not pay it.  Prints one JSON line per idle time:
 * start latency (pthread_create to the thread's first instruction) min /
 * median / max over 15 tries, in microseconds.
 * Build: cmake --build build-bench --target probe_thread_start. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void *mark_start(void *arg) {
  *(double *)arg = now();
  return NULL;
}

static void spin(double s) {
  const double t = now();
  volatile double x = 0;
  while (now() - t < s) x += 1;
}

static int cmp(const void *a, const void *b) {
  const double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(void) {
  const double idle[] = {0.0, 0.0005, 0.002, 0.01, 0.1};
  enum { TRIES = 15 };
  for (size_t k = 0; k < sizeof idle / sizeof idle[0]; ++k) {
    double lat[TRIES];
    for (int r = 0; r < TRIES; ++r) {
      if (idle[k] > 0) {
        struct timespec ts = {(time_t)idle[k], (long)((idle[k] - (double)(time_t)idle[k]) * 1e9)};
        nanosleep(&ts, NULL);
      }
      spin(0.003); /* the calling thread busy, as in a kernel call */
      double started = 0;
      pthread_t th;
      const double t0 = now();
      if (pthread_create(&th, NULL, mark_start, &started) != 0) return 1;
      spin(0.004);
      pthread_join(th, NULL);
      lat[r] = (started - t0) * 1e6;
    }
    qsort(lat, TRIES, sizeof lat[0], cmp);
    printf("{\"bench\":\"probe\",\"case\":\"thread_start_latency\",\"idle_before_s\":%g,"
           "\"min_us\":%.0f,\"median_us\":%.0f,\"max_us\":%.0f,\"tries\":%d}\n",
           idle[k], lat[0], lat[TRIES / 2], lat[TRIES - 1], TRIES);
  }
  return 0;
}
