// Ways of copying files, to find where a disk bounds `ckpt convert` against `cp -r` + `sync`
// (issue #17 item 4, docs/PERFORMANCE.md "Convert: the disk's bound"). Each mode copies every
// SRC to its DST (DST must not exist) and fsyncs it:
//
//   cfr            copy_file_range in 16 MiB calls, as `cp` does in one call
//   cfr-kick       the same, starting writeback every 64 MiB (sync_file_range), as convert does
//   cfr-falloc     the same as cfr-kick, space reserved first with fallocate, as convert does
//   direct         a reader thread pread()s 16 MiB blocks into four aligned buffers, the main
//                  thread writes them with O_DIRECT (no page cache on the write side)
//
// Not part of the build; Linux:
//
//   cc -O2 -pthread scripts/copy_probe.c -o /tmp/copy_probe
//   /tmp/copy_probe direct SRC1 DST1 [SRC2 DST2 ...]
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BLOCK (16L << 20)
#define KICK (64L << 20)
#define NBUF 4

static void die(const char *what, const char *path) {
    perror(what);
    fprintf(stderr, "  (%s)\n", path);
    exit(1);
}

static void copy_cfr(int in, int out, off_t size, int kick) {
    loff_t io = 0, oo = 0, kicked = 0;
    while (io < size) {
        ssize_t n = copy_file_range(in, &io, out, &oo, BLOCK, 0);
        if (n <= 0) die("copy_file_range", "");
        if (kick && oo - kicked >= KICK) {
            sync_file_range(out, kicked, oo - kicked, SYNC_FILE_RANGE_WRITE);
            kicked = oo;
        }
    }
}

// The direct mode's ring of buffers, filled by the reader and drained by the writer.
static struct {
    char *buf[NBUF];
    ssize_t len[NBUF];
    int full[NBUF];
    int in;
    pthread_mutex_t mu;
    pthread_cond_t cv;
} ring = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static void *reader(void *arg) {
    (void)arg;
    off_t off = 0;
    for (int i = 0;; i = (i + 1) % NBUF) {
        pthread_mutex_lock(&ring.mu);
        while (ring.full[i]) pthread_cond_wait(&ring.cv, &ring.mu);
        pthread_mutex_unlock(&ring.mu);
        ssize_t n = 0;
        while (n < BLOCK) {
            ssize_t r = pread(ring.in, ring.buf[i] + n, BLOCK - n, off + n);
            if (r < 0) die("pread", "");
            if (r == 0) break;
            n += r;
        }
        off += n;
        pthread_mutex_lock(&ring.mu);
        ring.len[i] = n;
        ring.full[i] = 1;
        pthread_cond_broadcast(&ring.cv);
        pthread_mutex_unlock(&ring.mu);
        if (n == 0) return NULL;
    }
}

static void copy_direct(int in, int out, off_t size) {
    ring.in = in;
    memset(ring.full, 0, sizeof ring.full);
    pthread_t th;
    pthread_create(&th, NULL, reader, NULL);
    off_t off = 0;
    for (int i = 0;; i = (i + 1) % NBUF) {
        pthread_mutex_lock(&ring.mu);
        while (!ring.full[i]) pthread_cond_wait(&ring.cv, &ring.mu);
        pthread_mutex_unlock(&ring.mu);
        ssize_t n = ring.len[i];
        if (n == 0) break;
        // O_DIRECT writes whole 4 KiB blocks; the padded tail is cut off by ftruncate below.
        ssize_t w = (n + 4095) & ~4095L;
        memset(ring.buf[i] + n, 0, w - n);
        if (pwrite(out, ring.buf[i], w, off) != w) die("pwrite", "");
        off += n;
        pthread_mutex_lock(&ring.mu);
        ring.full[i] = 0;
        pthread_cond_broadcast(&ring.cv);
        pthread_mutex_unlock(&ring.mu);
    }
    pthread_join(th, NULL);
    if (ftruncate(out, size) != 0) die("ftruncate", "");
}

int main(int argc, char **argv) {
    if (argc < 4 || argc % 2 != 0) {
        fprintf(stderr, "usage: %s cfr|cfr-kick|cfr-falloc|direct SRC DST [SRC DST ...]\n", argv[0]);
        return 2;
    }
    const char *mode = argv[1];
    int direct = !strcmp(mode, "direct");
    int kick = !strcmp(mode, "cfr-kick") || !strcmp(mode, "cfr-falloc");
    int falloc = !strcmp(mode, "cfr-falloc") || direct;
    if (!direct && !kick && strcmp(mode, "cfr")) {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    if (direct)
        for (int i = 0; i < NBUF; i++)
            if (!(ring.buf[i] = aligned_alloc(4096, BLOCK))) die("aligned_alloc", "");
    for (int f = 2; f + 1 < argc; f += 2) {
        int in = open(argv[f], O_RDONLY);
        if (in < 0) die("open", argv[f]);
        struct stat st;
        if (fstat(in, &st) != 0) die("fstat", argv[f]);
        posix_fadvise(in, 0, 0, POSIX_FADV_SEQUENTIAL);
        int out = open(argv[f + 1], O_WRONLY | O_CREAT | O_EXCL | (direct ? O_DIRECT : 0), 0644);
        if (out < 0) die("open", argv[f + 1]);
        if (falloc && fallocate(out, 0, 0, st.st_size) != 0) die("fallocate", argv[f + 1]);
        if (direct)
            copy_direct(in, out, st.st_size);
        else
            copy_cfr(in, out, st.st_size, kick);
        if (fsync(out) != 0) die("fsync", argv[f + 1]);
        close(out);
        close(in);
    }
    return 0;
}
