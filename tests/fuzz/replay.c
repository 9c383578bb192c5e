/*
 * Plain (non-libFuzzer) driver: feeds every regular file of each directory
 * or file argument to LLVMFuzzerTestOneInput() once.  Linked with one fuzz
 * target and the static library, it replays the committed seed corpus on
 * every CTest run (tests/cmake/fuzz.cmake), so past findings stay fixed.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    fprintf(stderr, "replay: cannot open %s\n", path);
    return 1;
  }
  size_t cap = 4096, len = 0;
  uint8_t *buf = malloc(cap);
  size_t n;
  while (buf && (n = fread(buf + len, 1, cap - len, f)) > 0) {
    len += n;
    if (len == cap) {
      uint8_t *nb = realloc(buf, cap *= 2);
      if (nb == NULL) free(buf);
      buf = nb;
    }
  }
  fclose(f);
  if (buf == NULL) return 1;
  /* An exact-size copy so ASan catches any over-read. */
  uint8_t *exact = malloc(len ? len : 1);
  if (exact == NULL) {
    free(buf);
    return 1;
  }
  memcpy(exact, buf, len);
  free(buf);
  LLVMFuzzerTestOneInput(exact, len);
  free(exact);
  return 0;
}

int main(int argc, char **argv) {
  int failed = 0, count = 0;
  for (int a = 1; a < argc; ++a) {
    struct stat sb;
    if (stat(argv[a], &sb) != 0) {
      fprintf(stderr, "replay: %s does not exist\n", argv[a]);
      return 1;
    }
    if (!S_ISDIR(sb.st_mode)) {
      failed |= run_file(argv[a]);
      count++;
      continue;
    }
    DIR *d = opendir(argv[a]);
    if (d == NULL) return 1;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
      if (e->d_name[0] == '.') continue;
      char path[4096];
      snprintf(path, sizeof path, "%s/%s", argv[a], e->d_name);
      if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) continue;
      failed |= run_file(path);
      count++;
    }
    closedir(d);
  }
  printf("replay: %d inputs\n", count);
  if (count == 0) {
    fprintf(stderr, "replay: no inputs found\n");
    return 1;
  }
  return failed;
}
