// A C model of the inner loop of src/kernels/amx.rs (issue #17, docs/PERFORMANCE.md): the same
// tile shapes, loads and order (two A tiles of 16 weight rows x 32 k, six B tiles = three parts x
// two token tiles, twelve tdpbf16ps per 32 k), K in blocks of KC, 176 row tasks of 32 rows, with
// and without copying each task's weight block into an L1 buffer first. It prints the tile rate in
// GFLOP/s of bf16 multiply-adds on one core (the three parts counted; ckpt's matmul GFLOP/s are
// a third of it). Not part of the build; Linux on a CPU with AMX-BF16:
//
//   cc -O2 -mamx-tile -mamx-bf16 -mavx512f scripts/amx_loop_model.c -o /tmp/amx_model
//   /tmp/amx_model 8 512 0    # 128 tokens (8 token tiles), KC 512, weight block already in L1
//   /tmp/amx_model 8 512 1    # the same, copying each 32-row weight block from a 23 MB matrix
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    uint8_t palette, start;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tilecfg;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    if (argc < 4 || syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */)) {
        fprintf(stderr, "usage: %s TOKEN_TILES KC COPY (needs AMX and Linux >= 5.16)\n", argv[0]);
        return 2;
    }
    tilecfg c;
    memset(&c, 0, sizeof c);
    c.palette = 1;
    for (int i = 0; i < 8; i++) c.rows[i] = 16, c.colsb[i] = 64;
    _tile_loadconfig(&c);
    const long K = 2048, pairs = K / 2, tasks = 176;
    long tiles = atol(argv[1]);
    int kc = atoi(argv[2]), copy = atoi(argv[3]);
    long panel = 3 * pairs * 16; // 32-bit words per token tile
    uint32_t *xb = aligned_alloc(64, tiles * panel * 4);
    for (long i = 0; i < tiles * panel; i++)
        xb[i] = (0x3f80u + (rand() & 0x7f)) | ((0x3f80u + (rand() & 0x7f)) << 16);
    char *pad = aligned_alloc(64, kc / 32 * 32 * 64);
    for (long i = 0; i < kc / 32 * 32 * 64; i += 2) pad[i] = rand(), pad[i + 1] = 0x3f;
    float *acc = aligned_alloc(64, tiles / 2 * 4 * 256 * 4);
    memset(acc, 0, tiles / 2 * 4 * 256 * 4);
    char *w = aligned_alloc(64, tasks * 32 * K * 2);
    for (long i = 0; i < tasks * 32 * K * 2; i += 2) w[i] = rand(), w[i + 1] = 0x3f;
    double best = 0;
    for (int run = 0; run < 5; run++) {
        double t0 = now();
        long dps = 0;
        for (int kb = 0; kb < K / kc; kb++)
            for (long task = 0; task < tasks; task++) {
                if (copy)
                    for (int r = 0; r < 32; r++)
                        for (int q = 0; q < kc / 32; q++)
                            memcpy(pad + (q * 32 + r) * 64, w + (task * 32 + r) * K * 2 + kb * kc * 2 + q * 64, 64);
                for (long pair = 0; pair < tiles / 2; pair++) {
                    char *ca = (char *)acc + pair * 4096;
                    _tile_loadd(0, ca, 64);
                    _tile_loadd(1, ca + 1024, 64);
                    _tile_loadd(2, ca + 2048, 64);
                    _tile_loadd(3, ca + 3072, 64);
                    char *b0 = (char *)(xb + 2 * pair * panel), *b1 = b0 + 4 * panel;
                    for (int q = 0; q < kc / 32; q++) {
                        char *a0 = pad + q * 32 * 64;
                        _tile_loadd(4, a0, 64);
                        _tile_loadd(5, a0 + 1024, 64);
                        for (int s = 0; s < 3; s++) {
                            long off = 4 * ((s * pairs + kb * kc / 2 + q * 16) * 16);
                            _tile_loadd(6, b0 + off, 64);
                            _tile_dpbf16ps(0, 4, 6);
                            _tile_dpbf16ps(2, 5, 6);
                            _tile_loadd(7, b1 + off, 64);
                            _tile_dpbf16ps(1, 4, 7);
                            _tile_dpbf16ps(3, 5, 7);
                            dps += 4;
                        }
                    }
                    _tile_stored(0, ca, 64);
                    _tile_stored(1, ca + 1024, 64);
                    _tile_stored(2, ca + 2048, 64);
                    _tile_stored(3, ca + 3072, 64);
                }
            }
        double g = dps * 16.0 * 16 * 32 * 2 / (now() - t0) / 1e9;
        if (g > best) best = g;
    }
    printf("token tiles %ld, KC %d, copy %d: %.0f GFLOP/s of tile work, one core (best of 5)\n", tiles, kc, copy, best);
    _tile_release();
    return 0;
}
