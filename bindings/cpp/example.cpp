// A C++ host of libvpipe through vpipe.hpp: plan a pipeline, then train a small MLP on two
// pipeline stages and print its losses. Messages are built and read with protobuf-c.
//
//   c++ -std=c++17 example.cpp -x c vpipe.pb-c.c -x none $(pkg-config --cflags --libs vpipe libprotobuf-c)
#include <cstdio>
#include <memory>
#include <vector>

#include <vpipe.hpp>
#include "vpipe.pb-c.h"

namespace {

template <typename Message, size_t (*Size)(const Message *), size_t (*Pack)(const Message *, uint8_t *)>
std::vector<uint8_t> pack(const Message &m) {
    std::vector<uint8_t> bytes(Size(&m));
    Pack(&m, bytes.data());
    return bytes;
}

// Twelve equal blocks on two 16 GiB devices, planned by PLANNER_TIME_BALANCED.
void plan_a_pipeline() {
    const int layers = 12, devices = 2;
    std::vector<Vpipe__LayerProfile> profiles(layers);
    std::vector<Vpipe__LayerSpec> specs(layers);
    std::vector<Vpipe__LayerSpec *> layer_ptrs;
    for (int l = 0; l < layers; l++) {
        vpipe__layer_profile__init(&profiles[l]);
        profiles[l].fwd_seconds = 0.010;
        profiles[l].bwd_seconds = 0.020;
        profiles[l].stash_bytes = 256ull << 20;
        profiles[l].output_bytes = 16ull << 20;
        profiles[l].param_bytes = 64ull << 20;
        vpipe__layer_spec__init(&specs[l]);
        specs[l].profile = &profiles[l];
        layer_ptrs.push_back(&specs[l]);
    }
    Vpipe__PlanRequest request;
    Vpipe__ModelSpec model;
    Vpipe__ClusterSpec cluster;
    Vpipe__PlanOptions options;
    vpipe__plan_request__init(&request);
    vpipe__model_spec__init(&model);
    vpipe__cluster_spec__init(&cluster);
    vpipe__plan_options__init(&options);
    model.n_layers = layers;
    model.layers = layer_ptrs.data();
    model.input_bytes = 16ull << 20;
    std::vector<Vpipe__DeviceSpec> devs(devices);
    std::vector<Vpipe__DeviceSpec *> dev_ptrs;
    for (auto &d : devs) {
        vpipe__device_spec__init(&d);
        d.memory_bytes = 16ull << 30;
        d.host_bandwidth = 12e9;
        dev_ptrs.push_back(&d);
    }
    Vpipe__LinkSpec link;
    vpipe__link_spec__init(&link);
    link.bandwidth = 25e9;
    Vpipe__LinkSpec *link_ptr = &link;
    cluster.n_devices = devices;
    cluster.devices = dev_ptrs.data();
    cluster.n_links = 1;
    cluster.links = &link_ptr;
    options.micro_batches = 8;
    options.planner = VPIPE__PLANNER__PLANNER_TIME_BALANCED;
    request.model = &model;
    request.cluster = &cluster;
    request.options = &options;

    std::vector<uint8_t> bytes = vpipe::plan(pack<Vpipe__PlanRequest, vpipe__plan_request__get_packed_size, vpipe__plan_request__pack>(request));
    std::unique_ptr<Vpipe__Plan, void (*)(Vpipe__Plan *)> plan(vpipe__plan__unpack(nullptr, bytes.size(), bytes.data()),
                                                               [](Vpipe__Plan *p) { vpipe__plan__free_unpacked(p, nullptr); });
    if (!plan) throw std::runtime_error("the library returned bytes that are not a vpipe.Plan");
    std::printf("plan: %zu stages, iteration %.3f s\n", plan->n_stages, plan->iteration_seconds);
    for (size_t i = 0; i < plan->n_stages; i++)
        std::printf("  stage %zu: layers %u-%u, %.1f ms per micro-batch\n", i, plan->stages[i]->first_layer, plan->stages[i]->last_layer,
                    plan->stages[i]->stage_seconds * 1e3);
}

// Linear 8->16, ReLU, Linear 16->4, softmax cross-entropy on two stages (layers 0-1, 2-3),
// trained with SGD on one fixed mini-batch of 16 rows in 2 micro-batches.
void train_an_mlp() {
    Vpipe__Linear fc1, fc2;
    vpipe__linear__init(&fc1);
    vpipe__linear__init(&fc2);
    fc1.in_features = 8, fc1.out_features = 16;
    fc2.in_features = 16, fc2.out_features = 4;
    Vpipe__Activation relu;
    vpipe__activation__init(&relu);
    relu.kind = VPIPE__ACTIVATION_KIND__ACTIVATION_RELU;
    Vpipe__SoftmaxCrossEntropy loss;
    vpipe__softmax_cross_entropy__init(&loss);
    Vpipe__LayerSpec layers[4];
    for (auto &l : layers) vpipe__layer_spec__init(&l);
    layers[0].kind_case = VPIPE__LAYER_SPEC__KIND_LINEAR, layers[0].linear = &fc1;
    layers[1].kind_case = VPIPE__LAYER_SPEC__KIND_ACTIVATION, layers[1].activation = &relu;
    layers[2].kind_case = VPIPE__LAYER_SPEC__KIND_LINEAR, layers[2].linear = &fc2;
    layers[3].kind_case = VPIPE__LAYER_SPEC__KIND_SOFTMAX_CROSS_ENTROPY, layers[3].softmax_cross_entropy = &loss;
    Vpipe__LayerSpec *layer_ptrs[4] = {&layers[0], &layers[1], &layers[2], &layers[3]};
    Vpipe__ModelSpec model;
    vpipe__model_spec__init(&model);
    model.name = (char *)"mlp";
    model.n_layers = 4;
    model.layers = layer_ptrs;

    Vpipe__DeviceSpec devs[2];
    Vpipe__DeviceSpec *dev_ptrs[2] = {&devs[0], &devs[1]};
    for (auto &d : devs) {
        vpipe__device_spec__init(&d);
        d.memory_bytes = 64ull << 20;
        d.host_bandwidth = 10e9;
    }
    Vpipe__LinkSpec link;
    vpipe__link_spec__init(&link);
    link.bandwidth = 10e9;
    Vpipe__LinkSpec *link_ptr = &link;
    Vpipe__ClusterSpec cluster;
    vpipe__cluster_spec__init(&cluster);
    cluster.n_devices = 2, cluster.devices = dev_ptrs;
    cluster.n_links = 1, cluster.links = &link_ptr;

    Vpipe__MemoryPolicy keep[4] = {VPIPE__MEMORY_POLICY__MEMORY_POLICY_KEEP, VPIPE__MEMORY_POLICY__MEMORY_POLICY_KEEP,
                                   VPIPE__MEMORY_POLICY__MEMORY_POLICY_KEEP, VPIPE__MEMORY_POLICY__MEMORY_POLICY_KEEP};
    Vpipe__StagePlan stages[2];
    Vpipe__StagePlan *stage_ptrs[2] = {&stages[0], &stages[1]};
    for (uint32_t i = 0; i < 2; i++) {
        vpipe__stage_plan__init(&stages[i]);
        stages[i].device = i;
        stages[i].first_layer = 2 * i;
        stages[i].last_layer = 2 * i + 1;
        stages[i].n_policy = 2;
        stages[i].policy = keep + 2 * i;
    }
    Vpipe__Plan plan;
    vpipe__plan__init(&plan);
    plan.n_stages = 2, plan.stages = stage_ptrs;
    plan.schedule = VPIPE__SCHEDULE__SCHEDULE_1F1B;
    plan.micro_batches = 2;

    Vpipe__SgdConfig sgd;
    vpipe__sgd_config__init(&sgd);
    sgd.lr = 0.1f;
    Vpipe__TrainingConfig training;
    vpipe__training_config__init(&training);
    training.schedule = VPIPE__SCHEDULE__SCHEDULE_1F1B;
    training.micro_batches = 2;
    training.seed = 7;
    training.optimizer_case = VPIPE__TRAINING_CONFIG__OPTIMIZER_SGD;
    training.sgd = &sgd;

    Vpipe__SessionConfig config;
    vpipe__session_config__init(&config);
    config.model = &model, config.cluster = &cluster, config.plan = &plan, config.training = &training;

    vpipe::Session session(pack<Vpipe__SessionConfig, vpipe__session_config__get_packed_size, vpipe__session_config__pack>(config));
    const size_t rows = 16;
    std::vector<float> inputs(rows * 8);
    std::vector<int32_t> targets(rows);
    for (size_t i = 0; i < inputs.size(); i++) inputs[i] = static_cast<float>((i * 37) % 17) / 8.0f - 1.0f;
    for (size_t r = 0; r < rows; r++) targets[r] = static_cast<int32_t>(r % 4);
    std::printf("training: losses");
    float first = 0, last = 0;
    for (int step = 0; step < 5; step++) {
        last = session.step(inputs, targets);
        if (step == 0) first = last;
        std::printf(" %.4f", last);
    }
    std::printf("\n");
    if (!(last < first)) throw std::runtime_error("the loss did not fall");

    std::vector<uint8_t> bytes = session.stats();
    Vpipe__SessionStats *stats = vpipe__session_stats__unpack(nullptr, bytes.size(), bytes.data());
    if (!stats) throw std::runtime_error("the library returned bytes that are not a vpipe.SessionStats");
    for (size_t i = 0; i < stats->n_stages; i++)
        std::printf("  stage %zu: layers %u-%u, peak %llu of %llu device bytes\n", i, stats->stages[i]->first_layer,
                    stats->stages[i]->last_layer, static_cast<unsigned long long>(stats->stages[i]->peak_device_bytes),
                    static_cast<unsigned long long>(stats->stages[i]->capacity_bytes));
    vpipe__session_stats__free_unpacked(stats, nullptr);

    // Errors are exceptions carrying the status and the library's message.
    try {
        inputs.pop_back();
        session.step(inputs, targets);
    } catch (const vpipe::Error &e) {
        std::printf("a ragged batch: %s (status %d)\n", e.what(), e.status());
    }
}  // the session closes here

}  // namespace

int main() {
    try {
        vpipe::check_abi();
        std::printf("libvpipe %s (ABI %u)\n", vpipe::version().c_str(), vpipe::abi_version());
        plan_a_pipeline();
        train_an_mlp();
    } catch (const std::exception &e) {
        std::fprintf(stderr, "example failed: %s\n", e.what());
        return 1;
    }
    return 0;
}
