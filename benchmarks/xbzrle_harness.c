/*
 * Times QEMU's own xbzrle_encode_buffer / xbzrle_decode_buffer on page pairs written by
 * benchmarks/bench_xbzrle.py, which builds this file together with migration/xbzrle.c from
 * Debian's qemu source package (downloaded at benchmark time, never committed).
 *
 *   xbzrle_harness PAIRS N PAGE_SIZE REPEATS OUT
 *
 * PAIRS holds N old pages then N new pages. Each page is encoded as QEMU's save_xbzrle_page
 * does (dlen = the page size) into its own PAGE_SIZE slot; then every page with an encoding is
 * decoded onto a copy of its old page. Prints the best of REPEATS wall times of each loop and
 * the number of decoded pages that differ from their new page; writes int32 ret[N] and the N
 * slots to OUT, for the benchmark to compare with ramlab's encoder byte for byte.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "xbzrle.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint8_t *alloc_pages(size_t bytes)
{
    void *p = NULL;
    if (posix_memalign(&p, 4096, bytes ? bytes : 1) != 0) {
        fprintf(stderr, "out of memory (%zu bytes)\n", bytes);
        exit(2);
    }
    return p;
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: %s PAIRS N PAGE_SIZE REPEATS OUT\n", argv[0]);
        return 2;
    }
    size_t n = strtoull(argv[2], NULL, 10), page = strtoull(argv[3], NULL, 10);
    int repeats = atoi(argv[4]);
    size_t bytes = n * page;
    uint8_t *old = alloc_pages(bytes), *new = alloc_pages(bytes);
    uint8_t *enc = alloc_pages(bytes), *target = alloc_pages(bytes);
    int32_t *ret = malloc(n * sizeof(int32_t) + 1);

    FILE *in = fopen(argv[1], "rb");
    if (!in || fread(old, 1, bytes, in) != bytes || fread(new, 1, bytes, in) != bytes) {
        fprintf(stderr, "cannot read %zu page pairs from %s\n", n, argv[1]);
        return 2;
    }
    fclose(in);
    memset(enc, 0, bytes);

    double best_enc = 1e30, best_dec = 1e30;
    for (int r = 0; r < repeats; r++) {
        double t = now();
        for (size_t i = 0; i < n; i++) {
            ret[i] = xbzrle_encode_buffer(old + i * page, new + i * page, (int)page, enc + i * page, (int)page);
        }
        t = now() - t;
        best_enc = t < best_enc ? t : best_enc;
    }
    for (int r = 0; r < repeats; r++) {
        memcpy(target, old, bytes);
        double t = now();
        for (size_t i = 0; i < n; i++) {
            if (ret[i] > 0 && xbzrle_decode_buffer(enc + i * page, ret[i], target + i * page, (int)page) < 0) {
                fprintf(stderr, "xbzrle_decode_buffer rejected page %zu\n", i);
                return 1;
            }
        }
        t = now() - t;
        best_dec = t < best_dec ? t : best_dec;
    }
    size_t mismatches = 0;
    for (size_t i = 0; i < n; i++) {
        if (ret[i] > 0 && memcmp(target + i * page, new + i * page, page) != 0) {
            mismatches++;
        }
    }
    FILE *out = fopen(argv[5], "wb");
    if (!out || fwrite(ret, sizeof(int32_t), n, out) != n || fwrite(enc, 1, bytes, out) != bytes || fclose(out)) {
        fprintf(stderr, "cannot write %s\n", argv[5]);
        return 2;
    }
    printf("encode %.9f\ndecode %.9f\nmismatches %zu\n", best_enc, best_dec, mismatches);
    return 0;
}
