// The C ABI from a C++ host: RAII ownership of returned buffers, exceptions carrying the
// library's message, and concurrent planning from std::threads.
// Built and run by `make test` against the installed library (pkg-config vpipe).
#include <atomic>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <vpipe.h>
#include "request_builder.h"

namespace {

int failures = 0;

void check(bool ok, const std::string &what) {
    if (!ok) {
        ++failures;
        std::fprintf(stderr, "FAIL: %s\n", what.c_str());
    }
}

// Owns a buffer returned by the library.
struct Bytes {
    vp_bytes raw{nullptr, 0};
    Bytes() = default;
    Bytes(const Bytes &) = delete;
    Bytes &operator=(const Bytes &) = delete;
    ~Bytes() { vp_bytes_free(&raw); }
};

struct Error : std::runtime_error {
    vp_status status;
    Error(vp_status s, const char *message) : std::runtime_error(message), status(s) {}
};

std::vector<uint8_t> pack(const test_request &t) {
    std::vector<uint8_t> out(vpipe__plan_request__get_packed_size(&t.request));
    vpipe__plan_request__pack(&t.request, out.data());
    return out;
}

// vp_plan with C++ error handling: the plan's bytes, or an Error with the library's message.
std::vector<uint8_t> plan(const std::vector<uint8_t> &request) {
    Bytes out;
    vp_status s = vp_plan(request.data(), request.size(), &out.raw);
    if (s != VP_OK) throw Error(s, vp_last_error());
    return std::vector<uint8_t>(out.raw.data, out.raw.data + out.raw.len);
}

}  // namespace

int main() {
    test_request t;
    test_request_init(&t, 24, 4, VPIPE__PLANNER__PLANNER_GPIPE);
    std::vector<uint8_t> bytes = plan(pack(t));
    Vpipe__Plan *p = vpipe__plan__unpack(nullptr, bytes.size(), bytes.data());
    check(p != nullptr && p->n_stages == 4, "GPIPE plan with 4 stages");
    if (p) {
        for (size_t i = 0; i < p->n_stages; i++)
            for (size_t j = 0; j < p->stages[i]->n_policy; j++)
                check(p->stages[i]->policy[j] == VPIPE__MEMORY_POLICY__MEMORY_POLICY_RECOMPUTE, "GPIPE recomputes every layer");
        vpipe__plan__free_unpacked(p, nullptr);
    }

    try {
        plan(std::vector<uint8_t>{0xff, 0x01, 0x02});
        check(false, "garbage must throw");
    } catch (const Error &e) {
        check(e.status == VP_ERR_DECODE, std::string("garbage gives VP_ERR_DECODE, got ") + e.what());
    }

    test_request_init(&t, 24, 4, VPIPE__PLANNER__PLANNER_TIME_BALANCED);
    t.links[2].latency = -0.5;
    try {
        plan(pack(t));
        check(false, "a negative latency must throw");
    } catch (const Error &e) {
        check(e.status == VP_ERR_INVALID_REQUEST && std::strstr(e.what(), "cluster.links[2].latency"),
              std::string("negative latency names cluster.links[2].latency, got ") + e.what());
    }

    // Eight threads plan at once; every plan must be identical (planning is deterministic).
    test_request_init(&t, 24, 4, VPIPE__PLANNER__PLANNER_TIME_BALANCED);
    const std::vector<uint8_t> request = pack(t);
    const std::vector<uint8_t> reference = plan(request);
    std::atomic<int> mismatches{0};
    std::vector<std::thread> threads;
    for (int i = 0; i < 8; i++)
        threads.emplace_back([&] {
            for (int k = 0; k < 20; k++) {
                Vpipe__Plan *a = vpipe__plan__unpack(nullptr, reference.size(), reference.data());
                std::vector<uint8_t> got = plan(request);
                Vpipe__Plan *b = vpipe__plan__unpack(nullptr, got.size(), got.data());
                bool same = a && b && a->n_stages == b->n_stages && a->iteration_seconds == b->iteration_seconds;
                for (size_t s = 0; same && s < a->n_stages; s++)
                    same = a->stages[s]->first_layer == b->stages[s]->first_layer;
                if (!same) ++mismatches;
                vpipe__plan__free_unpacked(a, nullptr);
                vpipe__plan__free_unpacked(b, nullptr);
            }
        });
    for (auto &th : threads) th.join();
    check(mismatches == 0, "concurrent plans equal the reference, mismatches: " + std::to_string(mismatches.load()));

    if (failures) {
        std::fprintf(stderr, "test_abi (C++): %d failure(s)\n", failures);
        return 1;
    }
    std::printf("test_abi (C++): all checks passed\n");
    return 0;
}
