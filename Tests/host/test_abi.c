/* The C ABI from a C host: every entry point with good and bad input, errors per thread,
 * and the plan's numbers checked against cost model v1 recomputed here.
 * Built and run by `make test` against the installed library (pkg-config vpipe). */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <vpipe.h>
#include "request_builder.h"

#include "check.h"

/* Plans `t` and expects `status`; when `field` is given the message must contain it. */
static void expect_plan_status(const char *what, const test_request *t, vp_status status, const char *field) {
    size_t len;
    uint8_t *buf = test_request_pack(t, &len);
    vp_bytes out = {0};
    vp_status got = vp_plan(buf, len, &out);
    const char *msg = vp_last_error();
    CHECK(got == status, "%s: expected status %d, got %d (%s)", what, status, got, msg);
    if (field) CHECK(strstr(msg, field) != NULL, "%s: expected the message to name '%s', got '%s'", what, field, msg);
    if (got != VP_OK) CHECK(out.data == NULL && out.len == 0, "%s: output must stay empty on failure", what);
    vp_bytes_free(&out);
    free(buf);
}

#ifndef VPIPE_EXPECTED_VERSION
#error "build with -DVPIPE_EXPECTED_VERSION='\"x.y.z\"' (make test-hosts passes Sources/VPipeCore/Version.swift's)"
#endif

static void test_version(void) {
    CHECK(vp_abi_version() == VPIPE_ABI_VERSION, "abi %u vs header %d", vp_abi_version(), VPIPE_ABI_VERSION);
    /* Sources/VPipeCore/Version.swift's, passed by make test-hosts (-DVPIPE_EXPECTED_VERSION). */
    CHECK(strcmp(vp_version(), VPIPE_EXPECTED_VERSION) == 0, "version '%s', expected '%s'", vp_version(), VPIPE_EXPECTED_VERSION);
    CHECK(vp_last_error() != NULL, "vp_last_error must never be NULL");
}

static void test_plan_numbers(void) {
    test_request t;
    test_request_init(&t, 12, 4, VPIPE__PLANNER__PLANNER_TIME_BALANCED);
    size_t len;
    uint8_t *buf = test_request_pack(&t, &len);
    vp_bytes out = {0};
    vp_status s = vp_plan(buf, len, &out);
    CHECK(s == VP_OK, "time-balanced plan failed: %s", vp_last_error());
    Vpipe__Plan *plan = vpipe__plan__unpack(NULL, out.len, out.data);
    CHECK(plan != NULL, "the returned bytes must be a vpipe.Plan");
    if (plan) {
        CHECK(plan->n_stages == 4, "expected 4 stages, got %zu", plan->n_stages);
        CHECK(plan->cost_model_version == 1, "cost model %u", plan->cost_model_version);
        CHECK(plan->planner == VPIPE__PLANNER__PLANNER_TIME_BALANCED, "planner %d", plan->planner);
        /* 12 equal layers on 4 equal stages: 3 layers each, every layer KEEP. Recompute the
         * numbers of cost model v1 by hand and compare. */
        double tau = 0, sum = 0;
        for (size_t i = 0; i < plan->n_stages; i++) {
            Vpipe__StagePlan *st = plan->stages[i];
            CHECK(st->first_layer == 3 * i && st->last_layer == 3 * i + 2, "stage %zu owns %u..%u", i, st->first_layer, st->last_layer);
            CHECK(st->n_policy == 3, "stage %zu has %zu policies", i, st->n_policy);
            for (size_t j = 0; j < st->n_policy; j++)
                CHECK(st->policy[j] == VPIPE__MEMORY_POLICY__MEMORY_POLICY_KEEP, "stage %zu policy %zu = %d", i, j, st->policy[j]);
            double compute = 3 * 0.030;
            CHECK(fabs(st->compute_seconds - compute) < 1e-12, "stage %zu compute %g vs %g", i, st->compute_seconds, compute);
            double link = i < 3 ? 2 * (1e-5 + (double)(8u << 20) / 10e9) : 0;
            CHECK(fabs(st->link_seconds - link) < 1e-15, "stage %zu link %g vs %g", i, st->link_seconds, link);
            /* Mem = 3·32 MiB·(4+1-1) + n·3·64 MiB + input 8 MiB + output 8 MiB; n = min(8, 4-i). */
            uint64_t n = 4 - i;
            uint64_t mem = 3 * (32ull << 20) * 4 + n * 3 * (64ull << 20) + (8ull << 20) + (8ull << 20);
            CHECK(st->peak_memory_bytes == mem, "stage %zu memory %llu vs %llu", i, (unsigned long long)st->peak_memory_bytes, (unsigned long long)mem);
            tau = fmax(tau, fmax(st->stage_seconds, st->link_seconds));
            sum += st->stage_seconds + st->link_seconds;
        }
        double iter = 7 * tau + sum;
        CHECK(fabs(plan->bottleneck_seconds - tau) <= 1e-12 * tau, "tau %g vs %g", plan->bottleneck_seconds, tau);
        CHECK(fabs(plan->iteration_seconds - iter) <= 1e-12 * iter, "T_iter %g vs %g", plan->iteration_seconds, iter);
        vpipe__plan__free_unpacked(plan, NULL);
    }
    vp_bytes_free(&out);
    CHECK(out.data == NULL && out.len == 0, "vp_bytes_free must reset the buffer");
    vp_bytes_free(&out); /* harmless after the reset */
    vp_bytes_free(NULL);
    free(buf);
}

static void test_bad_pointers(void) {
    vp_bytes out = {0};
    CHECK(vp_plan(NULL, 10, &out) == VP_ERR_INVALID_ARGUMENT, "NULL request with a length");
    CHECK(strstr(vp_last_error(), "request") != NULL, "message '%s'", vp_last_error());
    uint8_t byte = 0;
    CHECK(vp_plan(&byte, 1, NULL) == VP_ERR_INVALID_ARGUMENT, "NULL plan_out");
    CHECK(strstr(vp_last_error(), "plan_out") != NULL, "message '%s'", vp_last_error());
    CHECK(vp_plan(NULL, 0, &out) == VP_ERR_INVALID_REQUEST, "empty request");
    CHECK(strstr(vp_last_error(), "model") != NULL, "message '%s'", vp_last_error());
    CHECK(vp_evaluate(NULL, 3, &out) == VP_ERR_INVALID_ARGUMENT, "NULL evaluation request");
    CHECK(vp_evaluate(&byte, 1, NULL) == VP_ERR_INVALID_ARGUMENT, "NULL evaluation_out");
    CHECK(vp_plan(&byte, (size_t)-1, &out) == VP_ERR_INVALID_ARGUMENT, "absurd length");
}

static void test_garbage(void) {
    uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff, 0x0f, 0x12, 0x34};
    vp_bytes out = {0};
    CHECK(vp_plan(garbage, sizeof garbage, &out) == VP_ERR_DECODE, "garbage: %s", vp_last_error());
    CHECK(strstr(vp_last_error(), "PlanRequest") != NULL, "message '%s'", vp_last_error());

    test_request t;
    test_request_init(&t, 8, 2, VPIPE__PLANNER__PLANNER_GPIPE);
    size_t len;
    uint8_t *buf = test_request_pack(&t, &len);
    int errors = 0;
    for (size_t n = 0; n < len; n++) { /* every truncation */
        vp_status s = vp_plan(buf, n, &out);
        if (s != VP_OK) errors++;
        CHECK(strlen(vp_last_error()) > 0 || s == VP_OK, "truncation %zu: empty message", n);
        vp_bytes_free(&out);
    }
    CHECK(errors > (int)len / 2, "expected most truncations to fail, %d of %zu did", errors, len);
    unsigned seed = 12345;
    for (int i = 0; i < 2000; i++) { /* random bytes and random corruptions of a valid request */
        uint8_t rnd[256];
        size_t n = (size_t)(rand_r(&seed) % 256);
        for (size_t k = 0; k < n; k++) rnd[k] = (uint8_t)rand_r(&seed);
        vp_plan(rnd, n, &out);
        vp_bytes_free(&out);
        buf[rand_r(&seed) % len] ^= (uint8_t)(1 + rand_r(&seed) % 255);
        vp_plan(buf, len, &out);
        vp_bytes_free(&out);
    }
    free(buf);
}

static void test_bad_fields(void) {
    test_request t;
    test_request_init(&t, 6, 2, VPIPE__PLANNER__PLANNER_UNSPECIFIED);
    expect_plan_status("default planner (VPIPE)", &t, VP_OK, NULL);
    test_request_init(&t, 6, 2, VPIPE__PLANNER__PLANNER_EXACT);
    expect_plan_status("EXACT", &t, VP_OK, NULL);
    test_request_init(&t, 300, 2, VPIPE__PLANNER__PLANNER_EXACT);
    expect_plan_status("EXACT beyond its limits", &t, VP_ERR_INVALID_REQUEST, "PLANNER_EXACT handles at most");

    test_request_init(&t, 0, 2, VPIPE__PLANNER__PLANNER_UNIFORM);
    expect_plan_status("zero layers", &t, VP_ERR_INVALID_REQUEST, "model.layers");
    test_request_init(&t, 6, 0, VPIPE__PLANNER__PLANNER_UNIFORM);
    expect_plan_status("zero devices", &t, VP_ERR_INVALID_REQUEST, "cluster.devices");
    test_request_init(&t, 3, 4, VPIPE__PLANNER__PLANNER_UNIFORM);
    expect_plan_status("more devices than layers", &t, VP_ERR_INVALID_REQUEST, "cluster.devices");
    test_request_init(&t, 6, 2, VPIPE__PLANNER__PLANNER_UNIFORM);
    t.profiles[2].fwd_seconds = -1;
    expect_plan_status("negative time", &t, VP_ERR_INVALID_REQUEST, "model.layers[2].profile.fwd_seconds");
    test_request_init(&t, 6, 2, VPIPE__PLANNER__PLANNER_UNIFORM);
    t.profiles[4].bwd_seconds = NAN;
    expect_plan_status("NaN time", &t, VP_ERR_INVALID_REQUEST, "model.layers[4].profile.bwd_seconds");
    test_request_init(&t, 6, 2, VPIPE__PLANNER__PLANNER_UNIFORM);
    t.links[0].bandwidth = 0;
    expect_plan_status("zero link bandwidth", &t, VP_ERR_INVALID_REQUEST, "cluster.links[0].bandwidth");
    test_request_init(&t, 6, 2, VPIPE__PLANNER__PLANNER_UNIFORM);
    t.devices[1].host_bandwidth = 0;
    expect_plan_status("zero host bandwidth", &t, VP_ERR_INVALID_REQUEST, "cluster.devices[1].host_bandwidth");
    test_request_init(&t, 6, 2, VPIPE__PLANNER__PLANNER_UNIFORM);
    t.devices[0].memory_bytes = 0;
    expect_plan_status("zero memory", &t, VP_ERR_INVALID_REQUEST, "cluster.devices[0].memory_bytes");
    test_request_init(&t, 6, 2, VPIPE__PLANNER__PLANNER_UNIFORM);
    t.options.micro_batches = 0;
    expect_plan_status("zero micro-batches", &t, VP_ERR_INVALID_REQUEST, "options.micro_batches");
    test_request_init(&t, 6, 2, VPIPE__PLANNER__PLANNER_UNIFORM);
    t.request.options = NULL;
    expect_plan_status("no options", &t, VP_ERR_INVALID_REQUEST, "options");
    test_request_init(&t, 6, 2, VPIPE__PLANNER__PLANNER_UNIFORM);
    t.layers[3].profile = NULL;
    expect_plan_status("layer without profile", &t, VP_ERR_INVALID_REQUEST, "model.layers[3].profile");
    test_request_init(&t, 6, 2, VPIPE__PLANNER__PLANNER_UNIFORM);
    t.devices[0].memory_bytes = 1 << 20;
    expect_plan_status("too little memory", &t, VP_ERR_INFEASIBLE, "stage 0");
}

static void test_evaluate(void) {
    test_request t;
    test_request_init(&t, 4, 2, VPIPE__PLANNER__PLANNER_UNIFORM);
    t.devices[1].memory_bytes = 100u << 20; /* stage 1 cannot hold 2 layers */
    Vpipe__StagePlan s0 = VPIPE__STAGE_PLAN__INIT, s1 = VPIPE__STAGE_PLAN__INIT;
    Vpipe__MemoryPolicy keep2[2] = {VPIPE__MEMORY_POLICY__MEMORY_POLICY_KEEP, VPIPE__MEMORY_POLICY__MEMORY_POLICY_KEEP};
    s0.device = 0; s0.first_layer = 0; s0.last_layer = 1; s0.n_policy = 2; s0.policy = keep2;
    s1.device = 1; s1.first_layer = 2; s1.last_layer = 3; s1.n_policy = 2; s1.policy = keep2;
    Vpipe__StagePlan *stages[2] = {&s0, &s1};
    Vpipe__Plan plan = VPIPE__PLAN__INIT;
    plan.n_stages = 2; plan.stages = stages; plan.schedule = VPIPE__SCHEDULE__SCHEDULE_GPIPE; plan.micro_batches = 2;
    Vpipe__EvaluationRequest req = VPIPE__EVALUATION_REQUEST__INIT;
    req.model = &t.model; req.cluster = &t.cluster; req.plan = &plan;
    size_t len = vpipe__evaluation_request__get_packed_size(&req);
    uint8_t *buf = malloc(len);
    vpipe__evaluation_request__pack(&req, buf);
    vp_bytes out = {0};
    CHECK(vp_evaluate(buf, len, &out) == VP_OK, "evaluate: %s", vp_last_error());
    Vpipe__Evaluation *ev = vpipe__evaluation__unpack(NULL, out.len, out.data);
    CHECK(ev && !ev->feasible && ev->n_violations == 1, "expected one violation");
    if (ev && ev->n_violations == 1) CHECK(strstr(ev->violations[0], "stage 1") != NULL, "violation '%s'", ev->violations[0]);
    if (ev) vpipe__evaluation__free_unpacked(ev, NULL);
    vp_bytes_free(&out);
    s1.n_policy = 1; /* one policy for two layers */
    vpipe__evaluation_request__pack(&req, buf);
    len = vpipe__evaluation_request__get_packed_size(&req);
    CHECK(vp_evaluate(buf, len, &out) == VP_ERR_INVALID_REQUEST, "short policy list");
    CHECK(strstr(vp_last_error(), "plan.stages[1].policy") != NULL, "message '%s'", vp_last_error());
    free(buf);
}

/* Errors are per thread: each thread fails differently and must read its own message; and
 * vp_plan, vp_simulate, vp_evaluate and vp_import_pipedream run on four threads at once. */
static void *thread_main(void *arg) {
    long id = (long)arg;
    test_request t;
    char field[64];
    int *bad = malloc(sizeof(int));
    *bad = 0;
    for (int round = 0; round < 50; round++) {
        test_request_init(&t, 8, 2, VPIPE__PLANNER__PLANNER_TIME_BALANCED);
        t.profiles[id].fwd_seconds = -1; /* thread `id` breaks layer `id` */
        snprintf(field, sizeof field, "model.layers[%ld].profile.fwd_seconds", id);
        size_t len;
        uint8_t *buf = test_request_pack(&t, &len);
        vp_bytes out = {0};
        if (vp_plan(buf, len, &out) != VP_ERR_INVALID_REQUEST || strstr(vp_last_error(), field) == NULL) (*bad)++;
        free(buf);
        test_request_init(&t, 8, 2, VPIPE__PLANNER__PLANNER_TIME_BALANCED);
        buf = test_request_pack(&t, &len);
        if (vp_plan(buf, len, &out) != VP_OK) (*bad)++;
        free(buf);
        /* The plan just made, evaluated and simulated on this thread while others plan. */
        Vpipe__Plan *plan = vpipe__plan__unpack(NULL, out.len, out.data);
        vp_bytes_free(&out);
        if (!plan) { (*bad)++; continue; }
        Vpipe__SimulationRequest sim = VPIPE__SIMULATION_REQUEST__INIT;
        sim.model = &t.model, sim.cluster = &t.cluster, sim.plan = plan;
        len = vpipe__simulation_request__get_packed_size(&sim);
        buf = malloc(len);
        vpipe__simulation_request__pack(&sim, buf);
        if (vp_simulate(buf, len, &out) != VP_OK) (*bad)++;
        vp_bytes_free(&out);
        /* An EvaluationRequest has the same fields and numbers as a SimulationRequest. */
        if (vp_evaluate(buf, len, &out) != VP_OK) (*bad)++;
        vp_bytes_free(&out);
        free(buf);
        vpipe__plan__free_unpacked(plan, NULL);
        const char *graph = "node1 -- Input0 -- forward_compute_time=0.0, backward_compute_time=0.0, activation_size=64.0, parameter_size=0.0\n"
                            "node2 -- ReLU() -- forward_compute_time=1.0, backward_compute_time=2.0, activation_size=64.0, parameter_size=0.0\n"
                            "\tnode1 -- node2\n";
        if (vp_import_pipedream((const uint8_t *)graph, strlen(graph), 2, &out) != VP_OK) (*bad)++;
        vp_bytes_free(&out);
    }
    return bad;
}

static void test_threads(void) {
    pthread_t threads[4];
    for (long i = 0; i < 4; i++) pthread_create(&threads[i], NULL, thread_main, (void *)i);
    for (int i = 0; i < 4; i++) {
        void *result;
        pthread_join(threads[i], &result);
        CHECK(*(int *)result == 0, "thread %d saw %d wrong results or messages", i, *(int *)result);
        free(result);
    }
}

/* vp_import_pipedream: a small graph (an input node and a Linear+ReLU pair) becomes a
 * ModelSpec; a broken line is refused naming the line; bad pointers and ranges too. */
static void test_import_pipedream(void) {
    const char *graph =
        "node1 -- Input0 -- forward_compute_time=0.000, backward_compute_time=0.000, activation_size=1024.0, parameter_size=0.000\n"
        "node2 -- Linear(16, 16) -- forward_compute_time=4.0, backward_compute_time=8.0, activation_size=1024.0, parameter_size=1088.000\n"
        "node3 -- ReLU() -- forward_compute_time=2.0, backward_compute_time=2.0, activation_size=1024.0, parameter_size=0.000\n"
        "\tnode1 -- node2\n\tnode2 -- node3\n";
    vp_bytes out = {0};
    vp_status st = vp_import_pipedream((const uint8_t *)graph, strlen(graph), 4, &out);
    CHECK(st == VP_OK, "import: %d (%s)", st, vp_last_error());
    Vpipe__ModelSpec *m = st == VP_OK ? vpipe__model_spec__unpack(NULL, out.len, out.data) : NULL;
    CHECK(m != NULL && m->n_layers >= 1, "import: expected a ModelSpec with layers");
    if (m) {
        double fwd = 0;
        for (size_t l = 0; l < m->n_layers; l++) fwd += m->layers[l]->profile ? m->layers[l]->profile->fwd_seconds : 0;
        CHECK(fabs(fwd - 6e-3 / 4) < 1e-12, "import: forward seconds per micro-batch %g, expected %g", fwd, 6e-3 / 4);
        CHECK(m->input_bytes == 256, "import: input bytes per micro-batch %llu, expected 256", (unsigned long long)m->input_bytes);
        vpipe__model_spec__free_unpacked(m, NULL);
    }
    vp_bytes_free(&out);
    const char *broken = "node1 -- Input0 -- forward_compute_time=oops\n";
    st = vp_import_pipedream((const uint8_t *)broken, strlen(broken), 1, &out);
    CHECK(st == VP_ERR_INVALID_REQUEST && strstr(vp_last_error(), "1") && out.data == NULL, "broken graph: %d (%s)", st, vp_last_error());
    st = vp_import_pipedream((const uint8_t *)graph, strlen(graph), 0, &out);
    CHECK(st == VP_ERR_INVALID_REQUEST && strstr(vp_last_error(), "micro_batches_per_mini_batch"), "0 micro-batches: %d (%s)", st, vp_last_error());
    CHECK(vp_import_pipedream(NULL, 5, 1, &out) == VP_ERR_INVALID_ARGUMENT && strstr(vp_last_error(), "graph"), "NULL graph: %s", vp_last_error());
    CHECK(vp_import_pipedream((const uint8_t *)graph, strlen(graph), 1, NULL) == VP_ERR_INVALID_ARGUMENT && strstr(vp_last_error(), "model_out"),
          "NULL model_out: %s", vp_last_error());
    const uint8_t not_utf8[] = {'n', 0xff, 0xfe, '\n'};
    CHECK(vp_import_pipedream(not_utf8, sizeof not_utf8, 1, &out) == VP_ERR_INVALID_REQUEST && strstr(vp_last_error(), "UTF-8"),
          "not UTF-8: %s", vp_last_error());
}

int main(void) {
    test_version();
    test_plan_numbers();
    test_bad_pointers();
    test_garbage();
    test_bad_fields();
    test_evaluate();
    test_threads();
    test_import_pipedream();
    if (failures) {
        fprintf(stderr, "test_abi (C): %d failure(s)\n", failures);
        return 1;
    }
    printf("test_abi (C): all checks passed\n");
    return 0;
}
