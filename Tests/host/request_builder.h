/* Builds vpipe.PlanRequest messages for the host tests with protobuf-c, from the host's own
 * copy of the generated code (libvpipe.so hides its copy, so the two cannot clash). */
#ifndef VPIPE_TEST_REQUEST_BUILDER_H
#define VPIPE_TEST_REQUEST_BUILDER_H

#include <stdint.h>
#include <stdlib.h>
#include "vpipe.pb-c.h"

#define MAX_LAYERS 320
#define MAX_DEVICES 16

/* Owns every sub-message of one request; fields are public so tests can break them. */
typedef struct {
    Vpipe__PlanRequest request;
    Vpipe__ModelSpec model;
    Vpipe__ClusterSpec cluster;
    Vpipe__PlanOptions options;
    Vpipe__LayerSpec layers[MAX_LAYERS];
    Vpipe__LayerProfile profiles[MAX_LAYERS];
    Vpipe__LayerSpec *layer_ptrs[MAX_LAYERS];
    Vpipe__DeviceSpec devices[MAX_DEVICES];
    Vpipe__DeviceSpec *device_ptrs[MAX_DEVICES];
    Vpipe__LinkSpec links[MAX_DEVICES];
    Vpipe__LinkSpec *link_ptrs[MAX_DEVICES];
} test_request;

/* `n_layers` identical transformer-ish layers (10 ms forward, 20 ms backward, 64 MiB stash,
 * 8 MiB output, 32 MiB params) on `n_devices` 16 GiB devices joined by 10 GB/s links. */
static inline void test_request_init(test_request *t, size_t n_layers, size_t n_devices, Vpipe__Planner planner) {
    vpipe__plan_request__init(&t->request);
    vpipe__model_spec__init(&t->model);
    vpipe__cluster_spec__init(&t->cluster);
    vpipe__plan_options__init(&t->options);
    for (size_t l = 0; l < n_layers && l < MAX_LAYERS; l++) {
        vpipe__layer_spec__init(&t->layers[l]);
        vpipe__layer_profile__init(&t->profiles[l]);
        t->profiles[l].fwd_seconds = 0.010;
        t->profiles[l].bwd_seconds = 0.020;
        t->profiles[l].stash_bytes = 64u << 20;
        t->profiles[l].output_bytes = 8u << 20;
        t->profiles[l].param_bytes = 32u << 20;
        t->layers[l].name = (char *)"block";
        t->layers[l].profile = &t->profiles[l];
        t->layer_ptrs[l] = &t->layers[l];
    }
    t->model.name = (char *)"test-model";
    t->model.n_layers = n_layers;
    t->model.layers = t->layer_ptrs;
    t->model.input_bytes = 8u << 20;
    for (size_t i = 0; i < n_devices && i < MAX_DEVICES; i++) {
        vpipe__device_spec__init(&t->devices[i]);
        t->devices[i].name = (char *)"gpu";
        t->devices[i].memory_bytes = (uint64_t)16 << 30;
        t->devices[i].speed = 1.0;
        t->devices[i].host_bandwidth = 12e9;
        t->device_ptrs[i] = &t->devices[i];
        vpipe__link_spec__init(&t->links[i]);
        t->links[i].bandwidth = 10e9;
        t->links[i].latency = 1e-5;
        t->link_ptrs[i] = &t->links[i];
    }
    t->cluster.n_devices = n_devices;
    t->cluster.devices = t->device_ptrs;
    t->cluster.n_links = n_devices > 0 ? n_devices - 1 : 0;
    t->cluster.links = t->link_ptrs;
    t->options.schedule = VPIPE__SCHEDULE__SCHEDULE_1F1B;
    t->options.micro_batches = 8;
    t->options.planner = planner;
    t->request.model = &t->model;
    t->request.cluster = &t->cluster;
    t->request.options = &t->options;
}

/* The request as protobuf bytes; free() the result. */
static inline uint8_t *test_request_pack(const test_request *t, size_t *len) {
    *len = vpipe__plan_request__get_packed_size(&t->request);
    uint8_t *buf = (uint8_t *)malloc(*len ? *len : 1);
    vpipe__plan_request__pack(&t->request, buf);
    return buf;
}

#endif
