/* Builds the vpipe.SessionConfig of the session host tests with protobuf-c: the MLP
 * Linear 8->16, ReLU, Linear 16->4, softmax cross-entropy, on 1 or 2 devices of 64 MiB,
 * with a hand-made plan (2 stages: layers 0-1 and 2-3; 1 stage: all), SGD lr 0.1,
 * 2 micro-batches, 1F1B. */
#ifndef VPIPE_TEST_SESSION_BUILDER_H
#define VPIPE_TEST_SESSION_BUILDER_H

#include <stdint.h>
#include <stdlib.h>
#include "vpipe.pb-c.h"

#define MLP_LAYERS 4
#define MLP_FEATURES 8
#define MLP_CLASSES 4

/* Owns every sub-message of one config; fields are public so tests can change them. */
typedef struct {
    Vpipe__SessionConfig config;
    Vpipe__ModelSpec model;
    Vpipe__LayerSpec layers[MLP_LAYERS];
    Vpipe__LayerSpec *layer_ptrs[MLP_LAYERS];
    Vpipe__Linear fc1, fc2;
    Vpipe__Activation relu;
    Vpipe__SoftmaxCrossEntropy loss;
    Vpipe__ClusterSpec cluster;
    Vpipe__DeviceSpec devices[2];
    Vpipe__DeviceSpec *device_ptrs[2];
    Vpipe__LinkSpec link;
    Vpipe__LinkSpec *link_ptr;
    Vpipe__Plan plan;
    Vpipe__StagePlan stages[2];
    Vpipe__StagePlan *stage_ptrs[2];
    Vpipe__MemoryPolicy policies[MLP_LAYERS];
    Vpipe__TrainingConfig training;
    Vpipe__SgdConfig sgd;
} test_session_config;

static inline void test_session_config_init(test_session_config *t, size_t n_devices) {
    static const char *names[MLP_LAYERS] = {"fc1", "relu", "fc2", "loss"};
    vpipe__session_config__init(&t->config);
    vpipe__model_spec__init(&t->model);
    vpipe__linear__init(&t->fc1);
    t->fc1.in_features = MLP_FEATURES;
    t->fc1.out_features = 16;
    vpipe__activation__init(&t->relu);
    t->relu.kind = VPIPE__ACTIVATION_KIND__ACTIVATION_RELU;
    vpipe__linear__init(&t->fc2);
    t->fc2.in_features = 16;
    t->fc2.out_features = MLP_CLASSES;
    vpipe__softmax_cross_entropy__init(&t->loss);
    for (size_t l = 0; l < MLP_LAYERS; l++) {
        vpipe__layer_spec__init(&t->layers[l]);
        t->layers[l].name = (char *)names[l];
        t->layer_ptrs[l] = &t->layers[l];
        t->policies[l] = VPIPE__MEMORY_POLICY__MEMORY_POLICY_KEEP;
    }
    t->layers[0].kind_case = VPIPE__LAYER_SPEC__KIND_LINEAR;
    t->layers[0].linear = &t->fc1;
    t->layers[1].kind_case = VPIPE__LAYER_SPEC__KIND_ACTIVATION;
    t->layers[1].activation = &t->relu;
    t->layers[2].kind_case = VPIPE__LAYER_SPEC__KIND_LINEAR;
    t->layers[2].linear = &t->fc2;
    t->layers[3].kind_case = VPIPE__LAYER_SPEC__KIND_SOFTMAX_CROSS_ENTROPY;
    t->layers[3].softmax_cross_entropy = &t->loss;
    t->model.name = (char *)"mlp";
    t->model.n_layers = MLP_LAYERS;
    t->model.layers = t->layer_ptrs;

    if (n_devices < 1) n_devices = 1;
    if (n_devices > 2) n_devices = 2;
    vpipe__cluster_spec__init(&t->cluster);
    vpipe__plan__init(&t->plan);
    for (size_t d = 0; d < n_devices; d++) {
        vpipe__device_spec__init(&t->devices[d]);
        t->devices[d].name = (char *)"dev";
        t->devices[d].memory_bytes = 64u << 20;
        t->devices[d].host_bandwidth = 10e9;
        t->device_ptrs[d] = &t->devices[d];
        vpipe__stage_plan__init(&t->stages[d]);
        t->stages[d].device = (uint32_t)d;
        t->stage_ptrs[d] = &t->stages[d];
    }
    /* 2 stages: layers 0-1 and 2-3; 1 stage: 0-3. */
    t->stages[0].first_layer = 0;
    t->stages[0].last_layer = n_devices == 2 ? 1 : 3;
    t->stages[0].n_policy = n_devices == 2 ? 2 : 4;
    t->stages[0].policy = t->policies;
    if (n_devices == 2) {
        t->stages[1].first_layer = 2;
        t->stages[1].last_layer = 3;
        t->stages[1].n_policy = 2;
        t->stages[1].policy = t->policies + 2;
    }
    vpipe__link_spec__init(&t->link);
    t->link.bandwidth = 10e9;
    t->link_ptr = &t->link;
    t->cluster.n_devices = n_devices;
    t->cluster.devices = t->device_ptrs;
    t->cluster.n_links = n_devices - 1;
    t->cluster.links = &t->link_ptr;
    t->plan.n_stages = n_devices;
    t->plan.stages = t->stage_ptrs;
    t->plan.schedule = VPIPE__SCHEDULE__SCHEDULE_1F1B;
    t->plan.micro_batches = 2;

    vpipe__training_config__init(&t->training);
    vpipe__sgd_config__init(&t->sgd);
    t->sgd.lr = 0.1f;
    t->training.schedule = VPIPE__SCHEDULE__SCHEDULE_1F1B;
    t->training.micro_batches = 2;
    t->training.seed = 7;
    t->training.optimizer_case = VPIPE__TRAINING_CONFIG__OPTIMIZER_SGD;
    t->training.sgd = &t->sgd;

    t->config.model = &t->model;
    t->config.cluster = &t->cluster;
    t->config.plan = &t->plan;
    t->config.training = &t->training;
}

/* The config as protobuf bytes; free() the result. */
static inline uint8_t *test_session_config_pack(const test_session_config *t, size_t *len) {
    *len = vpipe__session_config__get_packed_size(&t->config);
    uint8_t *buf = (uint8_t *)malloc(*len ? *len : 1);
    vpipe__session_config__pack(&t->config, buf);
    return buf;
}

/* A fixed mini-batch of `rows` rows: deterministic pseudo-random inputs in [-1, 1), class
 * row mod 4. */
static inline void test_session_batch(float *inputs, int32_t *targets, size_t rows) {
    uint32_t state = 12345;
    for (size_t i = 0; i < rows * MLP_FEATURES; i++) {
        state = state * 1664525u + 1013904223u;
        inputs[i] = (float)(state >> 8) / (float)(1u << 23) - 1.0f;
    }
    for (size_t r = 0; r < rows; r++) targets[r] = (int32_t)(r % MLP_CLASSES);
}

#endif
