/* A C host: describe a 24-block model and a 4-device cluster with protobuf-c, ask libvpipe
 * for a plan, print it.
 *
 *   cc plan.c vpipe.pb-c.c $(pkg-config --cflags --libs vpipe libprotobuf-c)
 *
 * (vpipe.pb-c.c/.h: `protoc-c --c_out=. vpipe.proto`, or Sources/CVPipeProto in the repo.) */
#include <stdio.h>
#include <stdlib.h>

#include <vpipe.h>
#include "vpipe.pb-c.h"

#define LAYERS 24
#define DEVICES 4

int main(void) {
    Vpipe__LayerProfile profiles[LAYERS];
    Vpipe__LayerSpec layers[LAYERS], *layer_ptrs[LAYERS];
    for (int l = 0; l < LAYERS; l++) {
        vpipe__layer_profile__init(&profiles[l]);
        profiles[l].fwd_seconds = 0.012;               /* one micro-batch, reference device */
        profiles[l].bwd_seconds = 0.024;
        profiles[l].stash_bytes = 600ull << 20;        /* activations kept for the backward */
        profiles[l].output_bytes = 32ull << 20;
        profiles[l].param_bytes = 200ull << 20;
        vpipe__layer_spec__init(&layers[l]);
        layers[l].name = "block";
        layers[l].profile = &profiles[l];
        layer_ptrs[l] = &layers[l];
    }
    Vpipe__ModelSpec model = VPIPE__MODEL_SPEC__INIT;
    model.name = "example";
    model.n_layers = LAYERS;
    model.layers = layer_ptrs;
    model.input_bytes = 32ull << 20;

    Vpipe__DeviceSpec devices[DEVICES], *device_ptrs[DEVICES];
    Vpipe__LinkSpec links[DEVICES - 1], *link_ptrs[DEVICES - 1];
    for (int i = 0; i < DEVICES; i++) {
        vpipe__device_spec__init(&devices[i]);
        devices[i].name = "gpu";
        devices[i].memory_bytes = 16ull << 30;
        devices[i].host_bandwidth = 12e9;
        device_ptrs[i] = &devices[i];
        if (i < DEVICES - 1) {
            vpipe__link_spec__init(&links[i]);
            links[i].bandwidth = 10e9;
            links[i].latency = 1e-5;
            link_ptrs[i] = &links[i];
        }
    }
    Vpipe__ClusterSpec cluster = VPIPE__CLUSTER_SPEC__INIT;
    cluster.n_devices = DEVICES;
    cluster.devices = device_ptrs;
    cluster.n_links = DEVICES - 1;
    cluster.links = link_ptrs;

    Vpipe__PlanOptions options = VPIPE__PLAN_OPTIONS__INIT;
    options.schedule = VPIPE__SCHEDULE__SCHEDULE_1F1B;
    options.micro_batches = 8;
    options.planner = VPIPE__PLANNER__PLANNER_GPIPE;

    Vpipe__PlanRequest request = VPIPE__PLAN_REQUEST__INIT;
    request.model = &model;
    request.cluster = &cluster;
    request.options = &options;

    size_t len = vpipe__plan_request__get_packed_size(&request);
    uint8_t *buf = malloc(len);
    vpipe__plan_request__pack(&request, buf);

    vp_bytes out = {0};
    vp_status status = vp_plan(buf, len, &out);
    free(buf);
    if (status != VP_OK) {
        fprintf(stderr, "vp_plan failed (%d): %s\n", status, vp_last_error());
        return 1;
    }
    Vpipe__Plan *plan = vpipe__plan__unpack(NULL, out.len, out.data);
    vp_bytes_free(&out);
    if (!plan) {
        fprintf(stderr, "could not decode the plan\n");
        return 1;
    }
    printf("libvpipe %s: %zu stages, iteration %.3f s, bottleneck %.1f ms\n", vp_version(), plan->n_stages,
           plan->iteration_seconds, plan->bottleneck_seconds * 1e3);
    for (size_t i = 0; i < plan->n_stages; i++) {
        const Vpipe__StagePlan *s = plan->stages[i];
        printf("  stage %zu: layers %2u-%2u  stage time %6.1f ms  peak %6.2f GiB of %.0f GiB\n", i, s->first_layer,
               s->last_layer, s->stage_seconds * 1e3, s->peak_memory_bytes / 1073741824.0, s->memory_bytes / 1073741824.0);
    }
    vpipe__plan__free_unpacked(plan, NULL);
    return 0;
}
