/* libFuzzer target for vp_session_open with a short step: the input is a serialised
 * vpipe.SessionConfig. Inputs that decode are first bounded so that one run stays short and
 * small (at most 64 MiB per device, 8 devices, 256 layers, 16 micro-batches, in-process, no
 * throttled copies, slowdowns of at most 2x): what the fuzzer explores is the validation and
 * the first step, not how long a huge model takes. Then the session opens, steps once on a
 * one-row-per-micro-batch batch (inputs 0.5, targets 0), reports stats, and closes. */
#include <stddef.h>
#include <stdint.h>

#include "fuzz_contract.h"
#include "vpipe.pb-c.h"

#define MAX_DEVICE_BYTES (64u << 20)

/* Clamps the config in place; 0 when it is not worth running (too big to stay short). */
static int bound(Vpipe__SessionConfig *c) {
    if (c->cluster) {
        if (c->cluster->n_devices > 8) return 0;
        for (size_t i = 0; i < c->cluster->n_devices; i++)
            if (c->cluster->devices[i]->memory_bytes > MAX_DEVICE_BYTES) c->cluster->devices[i]->memory_bytes = MAX_DEVICE_BYTES;
    }
    if (c->model && c->model->n_layers > 256) return 0;
    if (c->training) {
        if (c->training->micro_batches > 16) return 0;
        c->training->transport = VPIPE__TRANSPORT__TRANSPORT_IN_PROCESS; /* MPI needs mpirun */
        c->training->throttle_copies = 0;
        if (c->training->slowdown_factor > 2) c->training->slowdown_factor = 2;
    }
    return 1;
}

/* Values per row of the first layer's input and rows per micro-batch; 0 when unknown. */
static void first_layer(const Vpipe__SessionConfig *c, uint32_t *features, uint32_t *rows, int *tokens) {
    *features = 0, *rows = 1, *tokens = 0;
    if (!c->model || c->model->n_layers == 0) return;
    const Vpipe__LayerSpec *l = c->model->layers[0];
    switch (l->kind_case) {
    case VPIPE__LAYER_SPEC__KIND_LINEAR: *features = l->linear->in_features; break;
    case VPIPE__LAYER_SPEC__KIND_LAYER_NORM: *features = l->layer_norm->features; break;
    case VPIPE__LAYER_SPEC__KIND_CHOICE_BLOCK: *features = l->choice_block->features; break;
    case VPIPE__LAYER_SPEC__KIND_TRANSFORMER_BLOCK:
        *features = l->transformer_block->features, *rows = l->transformer_block->sequence_length; break;
    case VPIPE__LAYER_SPEC__KIND_EMBEDDING: *features = 1, *rows = l->embedding->sequence_length, *tokens = 1; break;
    default: break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    vp_session *session = NULL;
    Vpipe__SessionConfig *c = vpipe__session_config__unpack(NULL, size, data);
    if (!c) {
        /* Not a SessionConfig: the library must refuse it too, cleanly. */
        vp_status status = vp_session_open(data, size, &session);
        if (status == VP_OK) { vp_session_close(session); return 0; } /* protobuf-c is stricter than the library's reader */
        fuzz_check(status, NULL);
        return 0;
    }
    if (!bound(c)) { vpipe__session_config__free_unpacked(c, NULL); return 0; }
    size_t len = vpipe__session_config__get_packed_size(c);
    uint8_t *bytes = malloc(len ? len : 1);
    vpipe__session_config__pack(c, bytes);
    uint32_t features, rows_per_part, micro_batches = c->training ? c->training->micro_batches : 0;
    int tokens;
    first_layer(c, &features, &rows_per_part, &tokens);
    vpipe__session_config__free_unpacked(c, NULL);

    vp_status status = vp_session_open(bytes, len, &session);
    free(bytes);
    fuzz_check(status, NULL);
    if (status != VP_OK) return 0;
    uint64_t rows = (uint64_t)(micro_batches ? micro_batches : 1) * (rows_per_part ? rows_per_part : 1);
    if (features > 0 && rows * features <= (1u << 20)) {
        float loss = 0;
        int32_t *targets = calloc(rows, sizeof *targets);
        if (tokens) {
            int32_t *ids = calloc(rows, sizeof *ids);
            status = vp_session_step_tokens(session, ids, rows, targets, rows, &loss);
            free(ids);
        } else {
            float *inputs = malloc(rows * features * sizeof *inputs);
            for (uint64_t k = 0; k < rows * features; k++) inputs[k] = 0.5f;
            status = vp_session_step(session, inputs, rows * features, targets, rows, &loss);
            free(inputs);
        }
        free(targets);
        fuzz_check(status, NULL);
    }
    vp_bytes stats = {0};
    fuzz_check(vp_session_stats(session, &stats), &stats);
    vp_bytes_free(&stats);
    status = vp_session_close(session);
    if (status != VP_OK) fuzz_violation("vp_session_close of an open session failed", status);
    return 0;
}
