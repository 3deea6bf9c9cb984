/* libFuzzer target for the checkpoint loader (vp_session_load), docs/checkpoint.md.
 *
 * A checkpoint's checksums would stop almost every random mutation at the first CRC, so the
 * harness keeps them valid: the fuzzer's bytes become the metadata section (protobuf
 * vpipe.Checkpoint) behind the blob section of a real checkpoint of the host tests' MLP,
 * and the trailer (offset, length, CRC-32 of the metadata, "VPCK") is recomputed. With the
 * first input byte odd, the input is instead the whole file, as is (header, trailer and
 * CRCs under the fuzzer's control). Every load must return VP_OK or VP_ERR_CHECKPOINT;
 * anything else, a trap or a sanitizer report is a finding.
 *
 *   make fuzz-checkpoint            (FUZZ_SECONDS=60 by default; corpus in build/fuzz)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>
#include <vpipe.h>
#include "../host/session_builder.h"

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

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    snprintf(path, sizeof path, "/tmp/vpipe-checkpoint-fuzz-%d.vpck", (int)getpid());
    session = open_session();
    float x[16 * MLP_FEATURES];
    int32_t y[16];
    test_session_batch(x, y, 16);
    float loss;
    if (vp_session_step(session, x, 16 * MLP_FEATURES, y, 16, &loss) != VP_OK) abort();
    if (vp_session_save(session, path) != VP_OK) { fprintf(stderr, "save: %s\n", vp_last_error()); abort(); }
    size_t n = 0;
    uint8_t *good = read_file(path, &n);
    if (!good || n < 40) abort();
    uint64_t meta_offset = 0;
    memcpy(&meta_offset, good + n - 24, 8);  /* little-endian host */
    blobs_len = (size_t)meta_offset;
    blobs = good;
    /* Seeds: the real metadata (mode 0) and the real file (mode 1). */
    const char *dir = getenv("VPIPE_FUZZ_SEED_DIR");
    if (dir && blobs_len < n - 24) {
        char name[512];
        snprintf(name, sizeof name, "%s/seed-metadata", dir);
        FILE *f = fopen(name, "wb");
        if (f) { fputc(0, f); fwrite(good + blobs_len, 1, n - 24 - blobs_len, f); fclose(f); }
        snprintf(name, sizeof name, "%s/seed-file", dir);
        f = fopen(name, "wb");
        if (f) { fputc(1, f); fwrite(good, 1, n, f); fclose(f); }
    }
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
        uint32_t crc = (uint32_t)crc32(0L, meta, (uInt)meta_len);
        fwrite(blobs, 1, blobs_len, f);
        fwrite(meta, 1, meta_len, f);
        fwrite(&offset, 8, 1, f);
        fwrite(&length, 8, 1, f);
        fwrite(&crc, 4, 1, f);
        fwrite("VPCK", 1, 4, f);
    }
    fclose(f);
    vp_status status = vp_session_load(session, path);
    if (status != VP_OK && status != VP_ERR_CHECKPOINT) {
        fprintf(stderr, "vp_session_load returned %d: %s\n", status, vp_last_error());
        abort();
    }
    return 0;
}
