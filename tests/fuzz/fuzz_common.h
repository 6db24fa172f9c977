/*
 * fuzz_common.h - shared by the libFuzzer harnesses in tests/fuzz.
 *
 * Each harness defines LLVMFuzzerTestOneInput() and hands the validator a
 * malloc'd copy of exactly the input's size, so ASan reports a read even
 * one byte past it (mmap'd images would hide it).  Built with
 * -fsanitize=fuzzer (QMEM_FUZZ, clang) libFuzzer supplies main(); otherwise
 * (the ordinary QMEM_TESTS build, any compiler) the main() below replays
 * every file of the harness's corpus directory as a unit test.
 */
#ifndef QM_FUZZ_COMMON_H
#define QM_FUZZ_COMMON_H

#include "internal.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* An oracle the fuzzer must not break: abort (libFuzzer saves the input). */
#define FUZZ_CHECK(cond)                                                          \
    do {                                                                          \
        if (!(cond)) {                                                            \
            fprintf(stderr, "%s:%d: oracle failed: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                              \
        }                                                                         \
    } while (0)

/* A malloc'd copy of data[0, size) of exactly `size` bytes (1 if empty, so
 * malloc(0) cannot return NULL). */
static inline uint8_t *fuzz_copy(const uint8_t *data, size_t size) {
    uint8_t *p = calloc(1, size ? size : 1);   /* calloc: gcc sees it initialised */
    if (!p) abort();
    if (size) memcpy(p, data, size);
    return p;
}

/* `want` bytes: data[0, size) then zeros (free space in every format is
 * zero), or truncated.  Exactly `want` bytes are allocated. */
static inline uint8_t *fuzz_padded(const uint8_t *data, size_t size, size_t want) {
    uint8_t *p = calloc(1, want ? want : 1);
    if (!p) abort();
    memcpy(p, data, size < want ? size : want);
    return p;
}

static inline uint64_t fuzz_u64(const uint8_t *data, size_t size, size_t at) {
    uint64_t v = 0;
    if (at < size) memcpy(&v, data + at, size - at < 8 ? size - at : 8);
    return v;
}

/* Reading the fuzz input as a stream of little-endian fields; past its
 * end every byte reads as zero. */
typedef struct fuzz_reader {
    const uint8_t *d;
    size_t n, at;
} fuzz_reader_t;

static inline uint64_t fuzz_rd(fuzz_reader_t *r, size_t bytes) {
    uint64_t v = 0;
    for (size_t i = 0; i < bytes; i++, r->at++)
        if (r->at < r->n) v |= (uint64_t)r->d[r->at] << (8 * i);
    return v;
}

static inline void fuzz_rd_bytes(fuzz_reader_t *r, uint8_t *out, size_t len) {
    for (size_t i = 0; i < len; i++, r->at++) out[i] = r->at < r->n ? r->d[r->at] : 0;
}

#ifndef QM_LIBFUZZER
#include <dirent.h>

/* Corpus replay: every regular file of the directory (argv[1], else the
 * harness's corpus in the source tree) through the harness. */
int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : QM_FUZZ_CORPUS;
    DIR *d = opendir(dir);
    if (!d) {
        perror(dir);
        return 1;
    }
    int files = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        FILE *f = fopen(path, "rb");
        if (!f) continue;
        uint8_t *buf = NULL;
        size_t len = 0, cap = 0, n;
        do {
            if (len == cap) {
                cap = cap ? cap * 2 : 65536;
                if (!(buf = realloc(buf, cap))) abort();
            }
            n = fread(buf + len, 1, cap - len, f);
            len += n;
        } while (n);
        fclose(f);
        LLVMFuzzerTestOneInput(buf, len);
        free(buf);
        files++;
    }
    closedir(d);
    printf("%s: %d inputs replayed\n", dir, files);
    return files ? 0 : 1;   /* an empty corpus is a broken test */
}
#endif

#endif /* QM_FUZZ_COMMON_H */
