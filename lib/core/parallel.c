/* effml__parallel_for: split a range over the context's threads with plain
 * pthreads (no OpenMP runtime, so ThreadSanitizer sees every edge). */
#include <pthread.h>

#include "internal.h"

typedef struct {
  effml__range_fn fn;
  void *arg;
  int64_t begin, end;
  int32_t worker;
} effml__chunk;

static void *effml__chunk_main(void *p) {
  effml__chunk *c = (effml__chunk *)p;
  c->fn(c->arg, c->begin, c->end, c->worker);
  return NULL;
}

effml_status effml__parallel_for(effml_context *ctx, int64_t n, int64_t min_chunk,
                                 effml__range_fn fn, void *arg) {
  if (n <= 0) return EFFML_OK;
  if (min_chunk < 1) min_chunk = 1;
  int64_t nt = effml__ctx_threads(ctx);
  if (nt > n / min_chunk) nt = n / min_chunk;
  if (nt > 64) nt = 64;
  if (nt <= 1) {
    fn(arg, 0, n, 0);
    return EFFML_OK;
  }
  effml__chunk chunks[64];
  pthread_t tids[64];
  int started[64] = {0};
  for (int64_t t = 0; t < nt; ++t) {
    chunks[t].fn = fn;
    chunks[t].arg = arg;
    chunks[t].begin = n * t / nt;
    chunks[t].end = n * (t + 1) / nt;
    chunks[t].worker = (int32_t)t;
  }
  for (int64_t t = 1; t < nt; ++t)
    started[t] = pthread_create(&tids[t], NULL, effml__chunk_main, &chunks[t]) == 0;
  fn(arg, chunks[0].begin, chunks[0].end, 0);
  for (int64_t t = 1; t < nt; ++t) {
    if (started[t])
      pthread_join(tids[t], NULL);
    else /* could not start a thread: do its share here */
      fn(arg, chunks[t].begin, chunks[t].end, (int32_t)t);
  }
  return EFFML_OK;
}
