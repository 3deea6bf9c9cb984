/* libFuzzer target for the checkpoint loader (vp_session_load), docs/checkpoint.md.
 *
 * A checkpoint's checksums would stop almost every random mutation at the first CRC, so the
 * harness keeps them valid: with the first input byte even, the rest becomes the metadata
 * section (protobuf vpipe.Checkpoint) behind the blob section of a real checkpoint of the
 * host tests' MLP, and the trailer (offset, length, CRC-32 of the metadata, "VPCK") is
 * recomputed. With the first byte odd, the rest is the whole file, as is (header, trailer
 * and CRCs under the fuzzer's control). Every load must return VP_OK or VP_ERR_CHECKPOINT
 * and keep the ABI's contract (fuzz_contract.h); a trap or a sanitizer report is a finding.
 *
 * Seeds (Tests/fuzz/corpus/checkpoint/, `make fuzz-corpus`): with VPIPE_FUZZ_SEED_DIR set,
 * the harness writes both forms of the checkpoints it makes at start-up (after one and after
 * three training steps) into that directory.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_contract.h"
#include "../host/session_builder.h"

/* CRC-32 (zlib's values), bit by bit: the metadata is a few hundred bytes. */
static uint32_t crc32_of(const uint8_t *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    while (n--) {
        c ^= *p++;
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1)));
    }
    return ~c;
}

static vp_session *session;
static uint8_t *blobs;          /* header + blob section of the seed checkpoint */
static size_t blobs_len;
static char path[256];

static uint8_t *read_file(const char *name, size_t *len) {
    FILE *f = fopen(name, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)n + 1);
    if (fread(b, 1, (size_t)n, f) != (size_t)n) { free(b); b = NULL; }
    fclose(f);
    *len = (size_t)n;
    return b;
}

static vp_session *open_session(void) {
    test_session_config t;
    test_session_config_init(&t, 2);
    size_t len = 0;
    uint8_t *config = test_session_config_pack(&t, &len);
    vp_session *s = NULL;
    if (vp_session_open(config, len, &s) != VP_OK) { fprintf(stderr, "open: %s\n", vp_last_error()); abort(); }
    free(config);
    return s;
}

/* Writes the checkpoint at `path` as the two seed forms: 0 + its metadata, 1 + the file. */
static void write_seeds(const char *dir, const char *name, const uint8_t *file, size_t n, size_t meta_offset) {
    char seed[512];
    snprintf(seed, sizeof seed, "%s/%s-metadata", dir, name);
    FILE *f = fopen(seed, "wb");
    if (f) { fputc(0, f); fwrite(file + meta_offset, 1, n - 24 - meta_offset, f); fclose(f); }
    snprintf(seed, sizeof seed, "%s/%s-file", dir, name);
    f = fopen(seed, "wb");
    if (f) { fputc(1, f); fwrite(file, 1, n, f); fclose(f); }
}

/* Steps the session `steps` times, saves it and returns the file (its length in *n and
 * the metadata's offset, from the trailer, in *meta_offset). */
static uint8_t *checkpoint_after(int steps, size_t *n, size_t *meta_offset) {
    float x[16 * MLP_FEATURES];
    int32_t y[16];
    test_session_batch(x, y, 16);
    float loss;
    for (int i = 0; i < steps; i++)
        if (vp_session_step(session, x, 16 * MLP_FEATURES, y, 16, &loss) != VP_OK) { fprintf(stderr, "step: %s\n", vp_last_error()); abort(); }
    if (vp_session_save(session, path) != VP_OK) { fprintf(stderr, "save: %s\n", vp_last_error()); abort(); }
    uint8_t *file = read_file(path, n);
    if (!file || *n < 40) abort();
    uint64_t offset = 0;
    memcpy(&offset, file + *n - 24, 8); /* little-endian host */
    if (offset > *n - 24) abort();
    *meta_offset = (size_t)offset;
    return file;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    snprintf(path, sizeof path, "/tmp/vpipe-checkpoint-fuzz-%d.vpck", (int)getpid());
    session = open_session();
    const char *dir = getenv("VPIPE_FUZZ_SEED_DIR");
    size_t n = 0, meta_offset = 0;
    uint8_t *first = checkpoint_after(1, &n, &meta_offset);
    if (dir) write_seeds(dir, "after-1-step", first, n, meta_offset);
    free(first);
    /* The blob section the metadata-only inputs sit behind: after three steps. */
    blobs = checkpoint_after(2, &n, &meta_offset);
    blobs_len = meta_offset;
    if (dir) write_seeds(dir, "after-3-steps", blobs, n, meta_offset);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    if (size > 0 && (data[0] & 1)) {
        fwrite(data + 1, 1, size - 1, f);
    } else {
        const uint8_t *meta = size > 0 ? data + 1 : data;
        size_t meta_len = size > 0 ? size - 1 : 0;
        uint64_t offset = blobs_len, length = meta_len;
        uint32_t crc = crc32_of(meta, meta_len);
        fwrite(blobs, 1, blobs_len, f);
        fwrite(meta, 1, meta_len, f);
        fwrite(&offset, 8, 1, f);
        fwrite(&length, 8, 1, f);
        fwrite(&crc, 4, 1, f);
        fwrite("VPCK", 1, 4, f);
    }
    fclose(f);
    vp_status status = vp_session_load(session, path);
    fuzz_check(status, NULL);
    if (status != VP_OK && status != VP_ERR_CHECKPOINT) fuzz_violation("vp_session_load failed other than VP_ERR_CHECKPOINT", status);
    return 0;
}
