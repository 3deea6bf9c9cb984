/* The session C ABI from a C host: open an MLP on 2 stages with a hand-made plan, train it,
 * read statistics and parameters back, write traces, misuse every handle, and inject a
 * stage failure. Built and run by `make test-hosts` against the installed library. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <vpipe.h>
#include "session_builder.h"

#include "check.h"

#define ROWS 16
#define STEPS 5

static vp_session *open_config(const test_session_config *t) {
    size_t len;
    uint8_t *buf = test_session_config_pack(t, &len);
    vp_session *s = NULL;
    vp_status st = vp_session_open(buf, len, &s);
    free(buf);
    CHECK(st == VP_OK && s != NULL, "vp_session_open: expected VP_OK, got %d (%s)", st, vp_last_error());
    return st == VP_OK ? s : NULL;
}

/* The losses of `steps` steps on the fixed batch with a fresh session on `n_devices`. */
static void clean_losses(size_t n_devices, float *losses, int steps) {
    test_session_config t;
    test_session_config_init(&t, n_devices);
    vp_session *s = open_config(&t);
    float x[ROWS * MLP_FEATURES];
    int32_t y[ROWS];
    test_session_batch(x, y, ROWS);
    for (int i = 0; i < steps; i++) {
        vp_status st = vp_session_step(s, x, ROWS * MLP_FEATURES, y, ROWS, &losses[i]);
        CHECK(st == VP_OK, "step %d: %s", i, vp_last_error());
    }
    CHECK(vp_session_close(s) == VP_OK, "close: %s", vp_last_error());
}

/* Layer `layer`'s parameters, decoded; free with vpipe__layer_parameters__free_unpacked. */
static Vpipe__LayerParameters *get_parameters(vp_session *s, uint32_t layer) {
    vp_bytes out = {0};
    vp_status st = vp_session_get_parameters(s, layer, &out);
    CHECK(st == VP_OK, "get_parameters(%u): %s", layer, vp_last_error());
    Vpipe__LayerParameters *p = vpipe__layer_parameters__unpack(NULL, out.len, out.data);
    CHECK(p != NULL, "get_parameters(%u): the bytes are not a vpipe.LayerParameters", layer);
    vp_bytes_free(&out);
    return p;
}

static vp_status set_parameters(vp_session *s, uint32_t layer, const Vpipe__LayerParameters *p) {
    size_t len = vpipe__layer_parameters__get_packed_size(p);
    uint8_t *buf = malloc(len ? len : 1);
    vpipe__layer_parameters__pack(p, buf);
    vp_status st = vp_session_set_parameters(s, layer, buf, len);
    free(buf);
    return st;
}

static int same_parameters(const Vpipe__LayerParameters *a, const Vpipe__LayerParameters *b) {
    if (a->n_tensors != b->n_tensors) return 0;
    for (size_t k = 0; k < a->n_tensors; k++) {
        const Vpipe__TensorData *x = a->tensors[k], *y = b->tensors[k];
        if (x->n_shape != y->n_shape || x->n_values != y->n_values) return 0;
        if (memcmp(x->shape, y->shape, x->n_shape * sizeof *x->shape) != 0) return 0;
        if (memcmp(x->values, y->values, x->n_values * sizeof *x->values) != 0) return 0;
    }
    return 1;
}

static int file_starts_with(const char *path, const char *prefix, const char *contains) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    static char text[1 << 16];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = 0;
    return n > 0 && strncmp(text, prefix, strlen(prefix)) == 0 && strstr(text, contains) != NULL;
}

static void test_train_two_stages(void) {
    test_session_config t;
    test_session_config_init(&t, 2);
    vp_session *s = open_config(&t);
    if (!s) return;
    float x[ROWS * MLP_FEATURES];
    int32_t y[ROWS];
    test_session_batch(x, y, ROWS);
    float losses[STEPS];
    for (int i = 0; i < STEPS; i++) {
        vp_status st = vp_session_step(s, x, ROWS * MLP_FEATURES, y, ROWS, &losses[i]);
        CHECK(st == VP_OK, "step %d: %s", i, vp_last_error());
        if (i > 0) CHECK(losses[i] < losses[i - 1], "step %d: expected the loss to fall, got %g after %g", i, losses[i], losses[i - 1]);
    }
    printf("C session host: losses");
    for (int i = 0; i < STEPS; i++) printf(" %.4f", losses[i]);
    printf("\n");
    /* A pipeline is transparent: one stage gives exactly the same losses. */
    float one[STEPS];
    clean_losses(1, one, STEPS);
    CHECK(memcmp(one, losses, sizeof one) == 0, "expected the same losses on 1 stage, got %g..%g vs %g..%g", one[0], one[STEPS - 1], losses[0], losses[STEPS - 1]);

    /* Statistics. */
    vp_bytes out = {0};
    CHECK(vp_session_stats(s, &out) == VP_OK, "stats: %s", vp_last_error());
    Vpipe__SessionStats *stats = vpipe__session_stats__unpack(NULL, out.len, out.data);
    vp_bytes_free(&out);
    CHECK(stats != NULL, "stats: the bytes are not a vpipe.SessionStats");
    if (stats) {
        CHECK(stats->iterations == STEPS, "expected %d iterations, got %llu", STEPS, (unsigned long long)stats->iterations);
        CHECK(stats->last_loss == losses[STEPS - 1], "last_loss %g vs %g", stats->last_loss, losses[STEPS - 1]);
        CHECK(stats->n_stages == 2, "expected 2 stages, got %zu", stats->n_stages);
        for (size_t i = 0; i < stats->n_stages; i++) {
            Vpipe__StageStats *st = stats->stages[i];
            CHECK(st->peak_device_bytes > 0 && st->peak_device_bytes <= st->capacity_bytes, "stage %zu: peak %llu of %llu", i,
                  (unsigned long long)st->peak_device_bytes, (unsigned long long)st->capacity_bytes);
            CHECK(st->first_layer == 2 * i && st->last_layer == 2 * i + 1, "stage %zu owns %u-%u", i, st->first_layer, st->last_layer);
        }
        CHECK(stats->n_measured_profiles == MLP_LAYERS, "expected %d profiles, got %zu", MLP_LAYERS, stats->n_measured_profiles);
        CHECK(stats->plan != NULL && stats->plan->n_stages == 2, "expected the 2-stage plan in the stats");
        vpipe__session_stats__free_unpacked(stats, NULL);
    }

    /* Parameters: get, change, set, get again; then restore. A wrong shape changes nothing. */
    Vpipe__LayerParameters *before = get_parameters(s, 0);
    if (before) {
        CHECK(before->n_tensors == 2, "Linear: expected W and b, got %zu tensors", before->n_tensors);
        if (before->n_tensors == 2) {
            const Vpipe__TensorData *w = before->tensors[0];
            CHECK(w->n_shape == 2 && w->shape[0] == 16 && w->shape[1] == MLP_FEATURES, "W shape %zu dims", w->n_shape);
            Vpipe__LayerParameters *changed = get_parameters(s, 0);
            for (size_t i = 0; i < changed->tensors[0]->n_values; i++) changed->tensors[0]->values[i] += 1.0f;
            CHECK(set_parameters(s, 0, changed) == VP_OK, "set_parameters: %s", vp_last_error());
            Vpipe__LayerParameters *after = get_parameters(s, 0);
            CHECK(after && same_parameters(after, changed), "set then get must round-trip");
            if (after) vpipe__layer_parameters__free_unpacked(after, NULL);

            changed->tensors[0]->shape[0] = 8; /* [8, 8]: wrong */
            vp_status st = set_parameters(s, 0, changed);
            CHECK(st == VP_ERR_INVALID_REQUEST && strstr(vp_last_error(), "tensors[0]"),
                  "wrong shape: expected VP_ERR_INVALID_REQUEST naming tensors[0], got %d (%s)", st, vp_last_error());
            changed->tensors[0]->shape[0] = 16;
            after = get_parameters(s, 0);
            CHECK(after && same_parameters(after, changed), "a rejected set_parameters changed the weights");
            if (after) vpipe__layer_parameters__free_unpacked(after, NULL);
            vpipe__layer_parameters__free_unpacked(changed, NULL);
            CHECK(set_parameters(s, 0, before) == VP_OK, "restore: %s", vp_last_error());
        }
        vpipe__layer_parameters__free_unpacked(before, NULL);
    }
    vp_bytes none = {0};
    CHECK(vp_session_get_parameters(s, 4, &none) == VP_ERR_INVALID_REQUEST && strstr(vp_last_error(), "layer"),
          "layer 4 of 4: %s", vp_last_error());

    /* Traces. */
    char json[64], svg[64];
    snprintf(json, sizeof json, "/tmp/vpipe_test_session_%d.json", (int)getpid());
    snprintf(svg, sizeof svg, "/tmp/vpipe_test_session_%d.svg", (int)getpid());
    CHECK(vp_session_write_trace(s, json) == VP_OK, "write_trace json: %s", vp_last_error());
    CHECK(vp_session_write_trace(s, svg) == VP_OK, "write_trace svg: %s", vp_last_error());
    CHECK(file_starts_with(json, "{", "traceEvents"), "%s is not a Chrome trace", json);
    CHECK(file_starts_with(svg, "<", "<svg"), "%s is not an SVG", svg);
    remove(json);
    remove(svg);
    CHECK(vp_session_write_trace(s, "/nonexistent-dir/t.json") == VP_ERR_INVALID_REQUEST && strstr(vp_last_error(), "path"),
          "unwritable path: %s", vp_last_error());

    CHECK(vp_session_close(s) == VP_OK, "close: %s", vp_last_error());
}

static void test_bad_handles(void) {
    float x[ROWS * MLP_FEATURES], loss = 0;
    int32_t y[ROWS];
    test_session_batch(x, y, ROWS);
    vp_bytes out = {0};
    CHECK(vp_session_step(NULL, x, ROWS * MLP_FEATURES, y, ROWS, &loss) == VP_ERR_INVALID_ARGUMENT, "step(NULL)");
    CHECK(strstr(vp_last_error(), "session") != NULL, "step(NULL) should name session: %s", vp_last_error());
    CHECK(vp_session_stats(NULL, &out) == VP_ERR_INVALID_ARGUMENT, "stats(NULL)");
    CHECK(vp_session_close(NULL) == VP_OK, "close(NULL) is a no-op");
    CHECK(vp_session_open(NULL, 0, NULL) == VP_ERR_INVALID_ARGUMENT && strstr(vp_last_error(), "session_out"),
          "open with NULL session_out: %s", vp_last_error());
    vp_session *s = (vp_session *)0x1;
    const uint8_t junk[] = {0xff, 0x01, 0x02};
    CHECK(vp_session_open(junk, sizeof junk, &s) == VP_ERR_DECODE && s == NULL, "open(junk): %s", vp_last_error());

    test_session_config t;
    test_session_config_init(&t, 2);
    t.training.optimizer_case = VPIPE__TRAINING_CONFIG__OPTIMIZER__NOT_SET;
    size_t len;
    uint8_t *buf = test_session_config_pack(&t, &len);
    vp_status st = vp_session_open(buf, len, &s);
    CHECK(st == VP_ERR_INVALID_REQUEST && strstr(vp_last_error(), "training.optimizer"), "no optimizer: %d %s", st, vp_last_error());
    free(buf);

    test_session_config_init(&t, 2);
    s = open_config(&t);
    if (!s) return;
    CHECK(vp_session_step(s, x, ROWS * MLP_FEATURES, y, ROWS, NULL) == VP_ERR_INVALID_ARGUMENT && strstr(vp_last_error(), "loss_out"),
          "NULL loss_out: %s", vp_last_error());
    CHECK(vp_session_step(s, NULL, 5, y, ROWS, &loss) == VP_ERR_INVALID_ARGUMENT, "NULL inputs: %s", vp_last_error());
    CHECK(vp_session_stats(s, NULL) == VP_ERR_INVALID_ARGUMENT && strstr(vp_last_error(), "stats_out"), "NULL stats_out: %s", vp_last_error());
    CHECK(vp_session_write_trace(s, NULL) == VP_ERR_INVALID_ARGUMENT && strstr(vp_last_error(), "path"), "NULL path: %s", vp_last_error());
    st = vp_session_step(s, x, ROWS * MLP_FEATURES - 1, y, ROWS, &loss);
    CHECK(st == VP_ERR_INVALID_REQUEST && strstr(vp_last_error(), "inputs"), "ragged inputs: %d %s", st, vp_last_error());
    CHECK(vp_session_close(s) == VP_OK, "close: %s", vp_last_error());
    CHECK(vp_session_close(s) == VP_ERR_INVALID_ARGUMENT, "double close must be VP_ERR_INVALID_ARGUMENT");
    CHECK(strstr(vp_last_error(), "not an open session") != NULL, "double close message: %s", vp_last_error());
    CHECK(vp_session_step(s, x, ROWS * MLP_FEATURES, y, ROWS, &loss) == VP_ERR_INVALID_ARGUMENT, "step after close");
    CHECK(vp_session_stats(s, &out) == VP_ERR_INVALID_ARGUMENT && out.data == NULL, "stats after close");
    CHECK(vp_session_get_parameters(s, 0, &out) == VP_ERR_INVALID_ARGUMENT, "get_parameters after close");
    CHECK(vp_session_write_trace(s, "/tmp/never.json") == VP_ERR_INVALID_ARGUMENT, "write_trace after close");
}

static void test_injected_failure(void) {
    float clean[3];
    clean_losses(2, clean, 3);
    test_session_config t;
    test_session_config_init(&t, 2);
    t.training.fail_iteration = 2;
    t.training.fail_stage = 1;
    t.training.fail_micro_batch = 1;
    vp_session *s = open_config(&t);
    if (!s) return;
    float x[ROWS * MLP_FEATURES], loss = 0;
    int32_t y[ROWS];
    test_session_batch(x, y, ROWS);
    CHECK(vp_session_step(s, x, ROWS * MLP_FEATURES, y, ROWS, &loss) == VP_OK && loss == clean[0], "step 1: %s", vp_last_error());
    vp_status st = vp_session_step(s, x, ROWS * MLP_FEATURES, y, ROWS, &loss);
    CHECK(st == VP_ERR_RUNTIME, "injected failure: expected VP_ERR_RUNTIME, got %d (%s)", st, vp_last_error());
    CHECK(strstr(vp_last_error(), "stage 1") != NULL, "the message must name the stage: %s", vp_last_error());
    /* The session survives, and the failed step changed no weight. */
    st = vp_session_step(s, x, ROWS * MLP_FEATURES, y, ROWS, &loss);
    CHECK(st == VP_OK, "after a failure the session must still step: %s", vp_last_error());
    CHECK(loss == clean[1], "after a failed step expected the clean second loss %g, got %g", clean[1], loss);
    CHECK(vp_session_close(s) == VP_OK, "close after a failure: %s", vp_last_error());
}

/* vp_session_apply_plan from a second thread while the first steps (vpipe.h allows it):
 * thousands of requests, each re-applying the running plan, during hundreds of steps. The
 * decision list is trimmed past 1,000 entries while steps hold a pending decision; nothing
 * may crash, every request must succeed, and the losses must equal a run without requests
 * (re-applying the running plan moves no layer). */
#define CONCURRENT_APPLIES 4000
#define CONCURRENT_MIN_STEPS 200
#define CONCURRENT_MAX_STEPS 100000

#define CONCURRENT_BURST 20

typedef struct {
    vp_session *session;
    const uint8_t *plan;
    size_t plan_len;
    atomic_int steps_started; /* by the stepping thread */
    atomic_int stepping_over;
    atomic_int done;
    int refused;
    char first_error[256];
} plan_applier;

/* Requests come in bursts, one burst per step once that step has started, so that they
 * land while steps run (an apply is much faster than a step: a plain loop would be over
 * within the first few steps). */
static void *apply_plans(void *arg) {
    plan_applier *a = arg;
    int seen = -1;
    for (int i = 0; i < CONCURRENT_APPLIES; i++) {
        if (i % CONCURRENT_BURST == 0) {
            while (atomic_load(&a->steps_started) == seen && !atomic_load(&a->stepping_over)) sched_yield();
            seen = atomic_load(&a->steps_started);
        }
        if (vp_session_apply_plan(a->session, a->plan, a->plan_len) != VP_OK && a->refused++ == 0)
            snprintf(a->first_error, sizeof a->first_error, "%s", vp_last_error());
    }
    atomic_store(&a->done, 1);
    return NULL;
}

static void test_apply_plan_while_stepping(void) {
    test_session_config t;
    test_session_config_init(&t, 2);
    vp_session *s = open_config(&t);
    if (!s) return;
    float x[ROWS * MLP_FEATURES];
    int32_t y[ROWS];
    test_session_batch(x, y, ROWS);
    float *losses = malloc(sizeof(float) * CONCURRENT_MAX_STEPS);
    int steps = 0;
    for (; steps < 3; steps++) CHECK(vp_session_step(s, x, ROWS * MLP_FEATURES, y, ROWS, &losses[steps]) == VP_OK, "step: %s", vp_last_error());
    size_t len = vpipe__plan__get_packed_size(&t.plan);
    uint8_t *plan = malloc(len);
    vpipe__plan__pack(&t.plan, plan);
    plan_applier a = {.session = s, .plan = plan, .plan_len = len};
    atomic_init(&a.done, 0);
    atomic_init(&a.steps_started, 0);
    atomic_init(&a.stepping_over, 0);
    pthread_t thread;
    CHECK(pthread_create(&thread, NULL, apply_plans, &a) == 0, "pthread_create");
    while ((steps < CONCURRENT_MIN_STEPS || !atomic_load(&a.done)) && steps < CONCURRENT_MAX_STEPS) {
        atomic_fetch_add(&a.steps_started, 1);
        vp_status st = vp_session_step(s, x, ROWS * MLP_FEATURES, y, ROWS, &losses[steps]);
        CHECK(st == VP_OK, "step %d during apply_plan: expected VP_OK, got %d (%s)", steps, st, vp_last_error());
        if (st != VP_OK) break;
        steps++;
    }
    atomic_store(&a.stepping_over, 1);
    pthread_join(thread, NULL);
    CHECK(a.refused == 0, "expected every apply_plan of the running plan to succeed; %d of %d refused, the first: %s",
          a.refused, CONCURRENT_APPLIES, a.first_error);
    vp_bytes out = {0};
    CHECK(vp_session_stats(s, &out) == VP_OK, "stats: %s", vp_last_error());
    Vpipe__SessionStats *stats = vpipe__session_stats__unpack(NULL, out.len, out.data);
    vp_bytes_free(&out);
    CHECK(stats && stats->n_decisions > 0 && stats->n_decisions <= 1000,
          "expected the stats to keep at most 1000 of the %d decisions, got %zu", CONCURRENT_APPLIES, stats ? stats->n_decisions : 0);
    if (stats) vpipe__session_stats__free_unpacked(stats, NULL);
    CHECK(vp_session_close(s) == VP_OK, "close: %s", vp_last_error());

    float *clean = malloc(sizeof(float) * (size_t)steps);
    clean_losses(2, clean, steps);
    int first_diff = -1;
    for (int i = 0; i < steps && first_diff < 0; i++) if (memcmp(&clean[i], &losses[i], sizeof(float)) != 0) first_diff = i;
    CHECK(first_diff < 0, "expected the losses of a run without apply_plan; step %d: %.9g vs %.9g",
          first_diff, first_diff < 0 ? 0.0 : clean[first_diff], first_diff < 0 ? 0.0 : losses[first_diff]);
    printf("C session host: %d apply_plan calls during %d steps\n", CONCURRENT_APPLIES, steps);
    free(clean);
    free(plan);
    free(losses);
}

/* vp_session_save and vp_session_load from a second thread while a thread steps the same
 * session (docs/abi.md, Threads: both wait for a running step). A checkpoint is therefore
 * always the state between two steps: resumed in a fresh session, its next two losses are
 * two consecutive losses of a run that was never checkpointed. A load lands between two
 * steps too: every loss the stepping thread sees is a loss of that clean run. */
#define SAVE_MAX_STEPS 3000
#define SAVE_FILES 16 /* saves, and loads, per run: the stepping thread runs until they are done */
typedef struct {
    vp_session *session;
    char dir[64];
    atomic_int steps_started;
    atomic_int stepping_over;
    atomic_int done;
    /* Set while a save or load is in its call: the stepping thread does not start another
     * step until it returns (mutexes are not fair, so without this a fast stepping thread
     * can re-take the session's lock for hundreds of steps while the saver waits). The
     * save still overlaps the step that was running when it was called. */
    atomic_int pending;
    int saved, loads, failed;
    char first_error[256];
} checkpointer;

static void checkpoint_path(const checkpointer *c, int i, char *out, size_t len) { snprintf(out, len, "%s/c%d.vpck", c->dir, i); }

/* One save (or, with `load`, one load of file 0) per step the stepping thread starts. */
static void *checkpoint_while_stepping(checkpointer *c, int load) {
    int seen = -1;
    while (!atomic_load(&c->stepping_over) && (load ? c->loads : c->saved) < SAVE_FILES) {
        while (atomic_load(&c->steps_started) == seen && !atomic_load(&c->stepping_over)) sched_yield();
        seen = atomic_load(&c->steps_started);
        char path[96];
        checkpoint_path(c, load ? 0 : c->saved + 1, path, sizeof path);
        atomic_store(&c->pending, 1);
        vp_status st = load ? vp_session_load(c->session, path) : vp_session_save(c->session, path);
        atomic_store(&c->pending, 0);
        if (st != VP_OK) {
            if (c->failed++ == 0) snprintf(c->first_error, sizeof c->first_error, "%s", vp_last_error());
        } else if (load) {
            c->loads++;
        } else {
            c->saved++;
        }
    }
    atomic_store(&c->done, 1);
    return NULL;
}
static void *save_while_stepping(void *arg) { return checkpoint_while_stepping(arg, 0); }
static void *load_while_stepping(void *arg) { return checkpoint_while_stepping(arg, 1); }

/* The index j with clean[j], clean[j+1] == a, b (bit for bit), or -1. */
static int consecutive_clean(const float *clean, int n, float a, float b) {
    for (int j = 0; j + 1 < n; j++)
        if (memcmp(&clean[j], &a, sizeof a) == 0 && memcmp(&clean[j + 1], &b, sizeof b) == 0) return j;
    return -1;
}

static void test_checkpoint_while_stepping(void) {
    float *clean = malloc(sizeof(float) * (SAVE_MAX_STEPS + 2));
    clean_losses(2, clean, SAVE_MAX_STEPS + 2);
    test_session_config t;
    test_session_config_init(&t, 2);
    float x[ROWS * MLP_FEATURES];
    int32_t y[ROWS];
    test_session_batch(x, y, ROWS);
    checkpointer c = {0};
    snprintf(c.dir, sizeof c.dir, "/tmp/vpipe-test-session-XXXXXX");
    CHECK(mkdtemp(c.dir) != NULL, "mkdtemp");
    char path[96];

    for (int load = 0; load <= 1; load++) {
        vp_session *s = open_config(&t);
        if (!s) break;
        c.session = s;
        atomic_init(&c.steps_started, 0);
        atomic_init(&c.stepping_over, 0);
        atomic_init(&c.done, 0);
        atomic_init(&c.pending, 0);
        float loss;
        int steps = 0;
        for (; steps < 3; steps++) CHECK(vp_session_step(s, x, ROWS * MLP_FEATURES, y, ROWS, &loss) == VP_OK, "step: %s", vp_last_error());
        checkpoint_path(&c, 0, path, sizeof path);
        if (!load) CHECK(vp_session_save(s, path) == VP_OK, "save after 3 steps: %s", vp_last_error());
        pthread_t thread;
        CHECK(pthread_create(&thread, NULL, load ? load_while_stepping : save_while_stepping, &c) == 0, "pthread_create");
        int unexplained = -1;
        float unexplained_loss = 0;
        for (; !atomic_load(&c.done) && steps < SAVE_MAX_STEPS; steps++) {
            while (atomic_load(&c.pending) && !atomic_load(&c.done)) sched_yield();
            atomic_fetch_add(&c.steps_started, 1);
            vp_status st = vp_session_step(s, x, ROWS * MLP_FEATURES, y, ROWS, &loss);
            CHECK(st == VP_OK, "step %d during %s: expected VP_OK, got %d (%s)", steps, load ? "loads" : "saves", st, vp_last_error());
            if (st != VP_OK) break;
            int known = 0;
            for (int j = 3; j < SAVE_MAX_STEPS && !known; j++) known = memcmp(&clean[j], &loss, sizeof loss) == 0;
            if (!known && unexplained < 0) { unexplained = steps; unexplained_loss = loss; }
        }
        atomic_store(&c.stepping_over, 1);
        pthread_join(thread, NULL);
        CHECK(vp_session_close(s) == VP_OK, "close: %s", vp_last_error());
        CHECK(c.failed == 0, "expected every %s during the steps to succeed; %d failed, the first: %s", load ? "load" : "save", c.failed, c.first_error);
        CHECK(unexplained < 0, "step %d during %s gave %.9g, a loss of no step of the clean run (a half-step state?)",
              unexplained, load ? "loads" : "saves", unexplained_loss);
        if (load) {
            CHECK(c.loads == SAVE_FILES, "expected %d loads during at most %d steps, got %d", SAVE_FILES, SAVE_MAX_STEPS, c.loads);
            continue;
        }
        CHECK(c.saved == SAVE_FILES, "expected %d saves during at most %d steps, got %d", SAVE_FILES, SAVE_MAX_STEPS, c.saved);
        /* Every checkpoint, resumed in a fresh session: two steps continue the clean run. */
        for (int i = 1; i <= c.saved; i++) {
            vp_session *r = open_config(&t);
            if (!r) break;
            checkpoint_path(&c, i, path, sizeof path);
            float a = 0, b = 0;
            vp_status st = vp_session_load(r, path);
            CHECK(st == VP_OK, "load of checkpoint %d: %s", i, vp_last_error());
            if (st == VP_OK) {
                CHECK(vp_session_step(r, x, ROWS * MLP_FEATURES, y, ROWS, &a) == VP_OK, "step after load: %s", vp_last_error());
                CHECK(vp_session_step(r, x, ROWS * MLP_FEATURES, y, ROWS, &b) == VP_OK, "step after load: %s", vp_last_error());
                CHECK(consecutive_clean(clean, SAVE_MAX_STEPS + 2, a, b) >= 3,
                      "checkpoint %d saved during the steps resumes with losses %.9g, %.9g: not two consecutive losses of the clean run "
                      "after step 3 (a half-step state?)", i, a, b);
            }
            vp_session_close(r);
        }
    }
    for (int i = 0; i <= SAVE_FILES; i++) {
        checkpoint_path(&c, i, path, sizeof path);
        unlink(path);
    }
    rmdir(c.dir);
    free(clean);
    printf("C session host: %d saves, then %d loads, each while steps ran\n", c.saved, c.loads);
}

/* An infinity in one input value: VP_ERR_RUNTIME naming the stage, layer and micro-batch, and
 * no weight of any layer changes (the next step gives the clean second loss). */
static void test_non_finite_input(void) {
    float clean[2];
    clean_losses(2, clean, 2);
    test_session_config t;
    test_session_config_init(&t, 2);
    vp_session *s = open_config(&t);
    if (!s) return;
    float x[ROWS * MLP_FEATURES], loss = 0;
    int32_t y[ROWS];
    test_session_batch(x, y, ROWS);
    CHECK(vp_session_step(s, x, ROWS * MLP_FEATURES, y, ROWS, &loss) == VP_OK && loss == clean[0], "step 1: %s", vp_last_error());
    Vpipe__LayerParameters *before[MLP_LAYERS];
    for (uint32_t l = 0; l < MLP_LAYERS; l++) before[l] = get_parameters(s, l);
    float saved = x[13 * MLP_FEATURES + 2];
    x[13 * MLP_FEATURES + 2] = 1.0f / 0.0f; /* row 13: micro-batch 1 (of 2), its row 5 */
    vp_status st = vp_session_step(s, x, ROWS * MLP_FEATURES, y, ROWS, &loss);
    CHECK(st == VP_ERR_RUNTIME, "Inf input: expected VP_ERR_RUNTIME, got %d (%s)", st, vp_last_error());
    CHECK(strstr(vp_last_error(), "stage 0 layer 0 (\"fc1\") micro-batch 1: input row 5 column 2 is inf") != NULL,
          "the message must name stage, layer, micro-batch and the element: %s", vp_last_error());
    for (uint32_t l = 0; l < MLP_LAYERS; l++) {
        Vpipe__LayerParameters *after = get_parameters(s, l);
        CHECK(before[l] && after && same_parameters(before[l], after), "layer %u: a refused step changed weights", l);
        if (after) vpipe__layer_parameters__free_unpacked(after, NULL);
        if (before[l]) vpipe__layer_parameters__free_unpacked(before[l], NULL);
    }
    x[13 * MLP_FEATURES + 2] = saved;
    st = vp_session_step(s, x, ROWS * MLP_FEATURES, y, ROWS, &loss);
    CHECK(st == VP_OK && loss == clean[1], "after the refused step expected the clean second loss %g, got %g (%s)", clean[1], loss,
          st == VP_OK ? "" : vp_last_error());
    CHECK(vp_session_close(s) == VP_OK, "close: %s", vp_last_error());
}

int main(void) {
    CHECK(vp_abi_version() == VPIPE_ABI_VERSION, "abi %u vs header %d", vp_abi_version(), VPIPE_ABI_VERSION);
    test_train_two_stages();
    test_bad_handles();
    test_injected_failure();
    test_apply_plan_while_stepping();
    test_non_finite_input();
    test_checkpoint_while_stepping();
    if (failures) {
        fprintf(stderr, "test_session: %d failure(s)\n", failures);
        return 1;
    }
    printf("test_session (C): all passed\n");
    return 0;
}
