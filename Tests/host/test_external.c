/* Host-defined layers from C: a tanh written here runs as layer 1 of a 2-stage pipeline;
 * a callback that fails ends the step with its message; bad registrations are refused. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <vpipe.h>
#include "session_builder.h"

#include "check.h"

static int forward_calls = 0;

static int32_t tanh_forward(void *user, const float *x, float *y, int64_t rows, int64_t in, int64_t out, char *error, size_t error_len) {
    (void)user; (void)in; (void)error; (void)error_len;
    __atomic_add_fetch(&forward_calls, 1, __ATOMIC_RELAXED);
    for (int64_t k = 0; k < rows * out; k++) y[k] = tanhf(x[k]);
    return 0;
}

static int32_t tanh_backward(void *user, const float *x, const float *y, const float *dy, float *dx, int64_t rows, int64_t in,
                             int64_t out, char *error, size_t error_len) {
    (void)x; (void)out;
    if (user) { /* the failing variant */
        snprintf(error, error_len, "host ran out of patience at row %lld", (long long)rows);
        return 7;
    }
    for (int64_t k = 0; k < rows * in; k++) dx[k] = dy[k] * (1 - y[k] * y[k]);
    return 0;
}

/* A layer that produces a NaN in row 2, column 3 of every output. */
static int32_t nan_forward(void *user, const float *x, float *y, int64_t rows, int64_t in, int64_t out, char *error, size_t error_len) {
    (void)user; (void)in; (void)error; (void)error_len;
    for (int64_t k = 0; k < rows * out; k++) y[k] = x[k];
    y[2 * out + 3] = nanf("");
    return 0;
}

/* The 2-stage MLP with layer 1 an external layer calling `callback`, packed (free it). */
static uint8_t *pack_external_config(const char *callback, size_t *len) {
    test_session_config t;
    test_session_config_init(&t, 2);
    Vpipe__External ext = VPIPE__EXTERNAL__INIT;
    ext.callback = (char *)callback;
    ext.in_features = 16;
    ext.out_features = 16;
    t.layers[1].kind_case = VPIPE__LAYER_SPEC__KIND_EXTERNAL;
    t.layers[1].external = &ext;
    return test_session_config_pack(&t, len);
}

static vp_status run(const char *callback, float *losses, int steps) {
    size_t len;
    uint8_t *buf = pack_external_config(callback, &len);
    vp_session *s = NULL;
    vp_status status = vp_session_open(buf, len, &s);
    free(buf);
    if (status != VP_OK) return status;
    float inputs[32 * MLP_FEATURES];
    int32_t targets[32];
    test_session_batch(inputs, targets, 32);
    for (int k = 0; k < steps && status == VP_OK; k++) status = vp_session_step(s, inputs, 32 * MLP_FEATURES, targets, 32, &losses[k]);
    vp_session_close(s);
    return status;
}

/* protobuf-c hands a string field to the library as a C string, so a callback name sent as
 * "c.tanh\0x" on the wire would silently become the registered "c.tanh". The config is packed
 * with "c.tanh#x" and the '#' patched to a NUL on the wire: the open must be refused, naming
 * the field. */
static vp_status open_with_nul_in_callback(void) {
    size_t len;
    uint8_t *buf = pack_external_config("c.tanh#x", &len);
    uint8_t *hash = memchr(buf, '#', len);
    CHECK(hash != NULL, "the packed config holds the callback name");
    if (hash) *hash = 0;
    vp_session *s = NULL;
    vp_status status = vp_session_open(buf, len, &s);
    free(buf);
    if (status == VP_OK) vp_session_close(s);
    return status;
}

int main(void) {
    CHECK(vp_register_external_layer(NULL, tanh_forward, tanh_backward, NULL) == VP_ERR_INVALID_ARGUMENT, "NULL name");
    CHECK(vp_register_external_layer("c.tanh", NULL, tanh_backward, NULL) == VP_ERR_INVALID_ARGUMENT, "NULL forward");
    CHECK(vp_register_external_layer("c.tanh", tanh_forward, tanh_backward, NULL) == VP_OK, "register: %s", vp_last_error());
    int marker = 1;
    CHECK(vp_register_external_layer("c.failing", tanh_forward, tanh_backward, &marker) == VP_OK, "register: %s", vp_last_error());

    float losses[6];
    vp_status s = run("c.tanh", losses, 6);
    CHECK(s == VP_OK, "training with a C layer: %s", vp_last_error());
    CHECK(losses[5] < losses[0], "loss did not fall: %f -> %f", losses[0], losses[5]);
    CHECK(forward_calls > 0, "the host forward never ran");

    s = run("c.failing", losses, 1);
    CHECK(s == VP_ERR_RUNTIME, "failing callback: expected VP_ERR_RUNTIME, got %d", s);
    CHECK(strstr(vp_last_error(), "host ran out of patience") && strstr(vp_last_error(), "stage"), "message '%s'", vp_last_error());

    s = run("c.unregistered", losses, 1);
    CHECK(s != VP_OK && strstr(vp_last_error(), "c.unregistered"), "unregistered callback: %d '%s'", s, vp_last_error());

    CHECK(vp_register_external_layer("c.nan", nan_forward, tanh_backward, NULL) == VP_OK, "register: %s", vp_last_error());
    s = run("c.nan", losses, 1);
    CHECK(s == VP_ERR_RUNTIME, "a layer producing NaN: expected VP_ERR_RUNTIME, got %d", s);
    CHECK(strstr(vp_last_error(), "stage 0 layer 1") && strstr(vp_last_error(), "micro-batch 0: output row 2 column 3 is nan"),
          "message '%s'", vp_last_error());

    s = open_with_nul_in_callback();
    CHECK(s == VP_ERR_INVALID_REQUEST && strstr(vp_last_error(), "model.layers[1].external.callback") && strstr(vp_last_error(), "NUL"),
          "a NUL inside the callback name on the wire: expected VP_ERR_INVALID_REQUEST naming the field, got %d '%s'", s,
          s == VP_OK ? "" : vp_last_error());

    /* A name is UTF-8 text: bytes that are not would be decoded into another name. */
    CHECK(vp_register_external_layer("c.\xff\xfe", tanh_forward, tanh_backward, NULL) == VP_ERR_INVALID_ARGUMENT
              && strstr(vp_last_error(), "UTF-8"), "invalid UTF-8 name: '%s'", vp_last_error());

    if (failures) {
        fprintf(stderr, "test_external (C): %d failure(s)\n", failures);
        return 1;
    }
    printf("test_external (C): all passed (C tanh layer trained, loss %.4f -> %.4f)\n", losses[0], losses[5]);
    return 0;
}
