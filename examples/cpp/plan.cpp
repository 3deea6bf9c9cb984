// A C++ host: build a PlanRequest with protobuf-c, plan it, own every buffer with RAII.
//
//   c++ -std=c++17 plan.cpp -x c vpipe.pb-c.c -x none $(pkg-config --cflags --libs vpipe libprotobuf-c)
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <vector>

#include <vpipe.h>
#include "vpipe.pb-c.h"

namespace {

// The library's buffer, released by vp_bytes_free when it goes out of scope.
struct LibraryBytes {
    vp_bytes raw{nullptr, 0};
    ~LibraryBytes() { vp_bytes_free(&raw); }
};

struct PlanDeleter {
    void operator()(Vpipe__Plan *p) const { vpipe__plan__free_unpacked(p, nullptr); }
};
using PlanPtr = std::unique_ptr<Vpipe__Plan, PlanDeleter>;

PlanPtr plan(const Vpipe__PlanRequest &request) {
    std::vector<uint8_t> bytes(vpipe__plan_request__get_packed_size(&request));
    vpipe__plan_request__pack(&request, bytes.data());
    LibraryBytes out;
    if (vp_plan(bytes.data(), bytes.size(), &out.raw) != VP_OK) throw std::runtime_error(vp_last_error());
    PlanPtr p(vpipe__plan__unpack(nullptr, out.raw.len, out.raw.data));
    if (!p) throw std::runtime_error("libvpipe returned bytes that are not a vpipe.Plan");
    return p;
}

}  // namespace

int main() {
    const int layers = 16, devices = 2;
    std::vector<Vpipe__LayerProfile> profiles(layers);
    std::vector<Vpipe__LayerSpec> specs(layers);
    std::vector<Vpipe__LayerSpec *> layer_ptrs;
    for (int l = 0; l < layers; l++) {
        vpipe__layer_profile__init(&profiles[l]);
        profiles[l].fwd_seconds = l == 0 ? 0.002 : 0.010;  // a cheap embedding, then blocks
        profiles[l].bwd_seconds = 2 * profiles[l].fwd_seconds;
        profiles[l].stash_bytes = 256ull << 20;
        profiles[l].output_bytes = 16ull << 20;
        profiles[l].param_bytes = 64ull << 20;
        vpipe__layer_spec__init(&specs[l]);
        specs[l].profile = &profiles[l];
        layer_ptrs.push_back(&specs[l]);
    }
    Vpipe__ModelSpec model;
    vpipe__model_spec__init(&model);
    model.n_layers = layers;
    model.layers = layer_ptrs.data();
    model.input_bytes = 1ull << 20;

    std::vector<Vpipe__DeviceSpec> devs(devices);
    std::vector<Vpipe__DeviceSpec *> dev_ptrs;
    for (auto &d : devs) {
        vpipe__device_spec__init(&d);
        d.memory_bytes = 8ull << 30;
        d.host_bandwidth = 12e9;
        dev_ptrs.push_back(&d);
    }
    Vpipe__LinkSpec link;
    vpipe__link_spec__init(&link);
    link.bandwidth = 25e9;
    Vpipe__LinkSpec *link_ptr = &link;
    Vpipe__ClusterSpec cluster;
    vpipe__cluster_spec__init(&cluster);
    cluster.n_devices = devices;
    cluster.devices = dev_ptrs.data();
    cluster.n_links = 1;
    cluster.links = &link_ptr;

    Vpipe__PlanOptions options;
    vpipe__plan_options__init(&options);
    options.micro_batches = 4;
    options.planner = VPIPE__PLANNER__PLANNER_TIME_BALANCED;

    Vpipe__PlanRequest request;
    vpipe__plan_request__init(&request);
    request.model = &model;
    request.cluster = &cluster;
    request.options = &options;

    try {
        PlanPtr p = plan(request);
        std::printf("C++ host: %zu stages, T_iter %.3f s\n", p->n_stages, p->iteration_seconds);
        for (size_t i = 0; i < p->n_stages; i++)
            std::printf("  stage %zu: layers %u-%u, %.1f ms per micro-batch\n", i, p->stages[i]->first_layer,
                        p->stages[i]->last_layer, p->stages[i]->stage_seconds * 1e3);
    } catch (const std::exception &e) {
        std::fprintf(stderr, "planning failed: %s\n", e.what());
        return 1;
    }
    return 0;
}
