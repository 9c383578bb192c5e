/*
 * Helper of the file-based fuzz targets (IDX, PEFT config, layer load): the
 * readers take paths, so each input is written to a private scratch folder
 * (made once per process under $TMPDIR, removed at exit) and read back from
 * there.  Not thread-safe: one fuzzing thread per process, as libFuzzer runs.
 */
#ifndef EFFML_FUZZ_TMPFILE_H
#define EFFML_FUZZ_TMPFILE_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char fuzz_dir[4096];
static char fuzz_files[8][4200];
static int fuzz_nfiles;

static void fuzz_cleanup(void) {
  for (int i = 0; i < fuzz_nfiles; ++i) unlink(fuzz_files[i]);
  if (fuzz_dir[0]) rmdir(fuzz_dir);
}

/* The scratch folder (created on first use; aborts if it cannot be). */
static const char *fuzz_scratch_dir(void) {
  if (!fuzz_dir[0]) {
    const char *tmp = getenv("TMPDIR");
    snprintf(fuzz_dir, sizeof fuzz_dir, "%s/effml-fuzz-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (mkdtemp(fuzz_dir) == NULL) abort();
    atexit(fuzz_cleanup);
  }
  return fuzz_dir;
}

/* Write `size` bytes to scratch/name and return the path (static storage per name). */
static const char *fuzz_write(const char *name, const void *data, size_t size) {
  char path[4200];
  snprintf(path, sizeof path, "%s/%s", fuzz_scratch_dir(), name);
  int slot = -1;
  for (int i = 0; i < fuzz_nfiles; ++i)
    if (strcmp(fuzz_files[i], path) == 0) slot = i;
  if (slot < 0) {
    if (fuzz_nfiles == 8) abort();
    slot = fuzz_nfiles++;
    memcpy(fuzz_files[slot], path, sizeof path);
  }
  FILE *f = fopen(path, "wb");
  if (f == NULL) abort();
  if (size && fwrite(data, 1, size, f) != size) abort();
  if (fclose(f) != 0) abort();
  return fuzz_files[slot];
}

#endif /* EFFML_FUZZ_TMPFILE_H */
