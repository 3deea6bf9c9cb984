// The C++ wrapper (bindings/cpp/vpipe.hpp, installed as <vpipe.hpp>): errors become
// vpipe::Error with the status and message, buffers and sessions are owned, a Session is
// move-only and a moved-from or closed one throws instead of crashing.
#include <cstdio>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>
#include <unistd.h>

#include <vpipe.hpp>
#include "request_builder.h"
#include "session_builder.h"

static int failures = 0;
#define CHECK(cond, ...)                                                    \
    do {                                                                    \
        if (!(cond)) {                                                      \
            failures++;                                                     \
            std::fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            std::fprintf(stderr, __VA_ARGS__);                              \
            std::fprintf(stderr, "\n");                                     \
        }                                                                   \
    } while (0)

static_assert(!std::is_copy_constructible<vpipe::Session>::value, "Session must be move-only");
static_assert(std::is_nothrow_move_constructible<vpipe::Session>::value, "Session must move without throwing");
static_assert(!std::is_copy_constructible<vpipe::Bytes>::value, "Bytes must be move-only");

template <typename F>
static vp_status status_of(F &&f, std::string *message = nullptr) {
    try {
        f();
    } catch (const vpipe::Error &e) {
        if (message) *message = e.message();
        return e.status();
    }
    return VP_OK;
}

static std::vector<uint8_t> session_config(size_t devices) {
    test_session_config t;
    test_session_config_init(&t, devices);
    size_t len;
    uint8_t *buf = test_session_config_pack(&t, &len);
    std::vector<uint8_t> bytes(buf, buf + len);
    free(buf);
    return bytes;
}

int main() {
    vpipe::check_abi();

    test_request t;
    test_request_init(&t, 8, 2, VPIPE__PLANNER__PLANNER_UNIFORM);
    size_t len;
    uint8_t *buf = test_request_pack(&t, &len);
    std::vector<uint8_t> request(buf, buf + len);
    free(buf);
    std::vector<uint8_t> plan = vpipe::plan(request);
    Vpipe__Plan *p = vpipe__plan__unpack(nullptr, plan.size(), plan.data());
    CHECK(p && p->n_stages == 2, "expected a 2-stage plan");
    if (p) vpipe__plan__free_unpacked(p, nullptr);

    std::string message;
    t.options.micro_batches = 0;
    buf = test_request_pack(&t, &len);
    std::vector<uint8_t> bad(buf, buf + len);
    free(buf);
    CHECK(status_of([&] { vpipe::plan(bad); }, &message) == VP_ERR_INVALID_REQUEST, "micro_batches 0 must be invalid");
    CHECK(message.find("options.micro_batches") != std::string::npos, "message: %s", message.c_str());
    try {
        vpipe::plan(bad);
    } catch (const vpipe::Error &e) {
        CHECK(std::strncmp(e.what(), "vp_plan: VP_ERR_INVALID_REQUEST: ", 33) == 0, "what(): %s", e.what());
    }
    CHECK(status_of([&] { vpipe::evaluate({0xff, 0x01}); }) == VP_ERR_DECODE, "junk must not decode");
    CHECK(status_of([&] { vpipe::simulate({}); }) == VP_ERR_INVALID_REQUEST, "an empty simulation request names a field");

    std::vector<float> x(16 * MLP_FEATURES);
    std::vector<int32_t> y(16);
    test_session_batch(x.data(), y.data(), 16);
    vpipe::Session a(session_config(2));
    float first = a.step(x, y);
    vpipe::Session b(std::move(a));
    CHECK(a.closed() && !b.closed(), "a move must transfer the handle");
    CHECK(status_of([&] { a.step(x, y); }, &message) == VP_ERR_INVALID_ARGUMENT, "a moved-from session must throw");
    float second = b.step(x, y);
    CHECK(second < first, "loss %g then %g", first, second);
    CHECK(status_of([&] { b.step(std::vector<float>(x.begin(), x.end() - 1), y); }, &message) == VP_ERR_INVALID_REQUEST,
          "a ragged batch must be VP_ERR_INVALID_REQUEST");
    CHECK(message.find("inputs") != std::string::npos, "message: %s", message.c_str());
    std::vector<uint8_t> w = b.parameters(0);
    b.set_parameters(0, w);
    CHECK(b.parameters(0) == w, "parameters must round-trip");
    CHECK(!b.stats().empty(), "stats must not be empty");
    {
        // Checkpoint: save, step on; a fresh session loads and takes the same step.
        const std::string path = "/tmp/test_vpipe_hpp_" + std::to_string(getpid()) + ".vpck";
        b.save(path);
        float continued = b.step(x, y);
        vpipe::Session resumed(session_config(2));
        resumed.load(path);
        float again = resumed.step(x, y);
        CHECK(std::memcmp(&continued, &again, sizeof(float)) == 0, "resumed loss %.9g, continued %.9g", again, continued);
        CHECK(status_of([&] { resumed.load(path + ".missing"); }, &message) == VP_ERR_CHECKPOINT, "a missing checkpoint");
        CHECK(message.find(".missing") != std::string::npos, "message: %s", message.c_str());
        std::remove(path.c_str());
    }
    b.close();
    b.close();  // idempotent
    CHECK(status_of([&] { b.stats(); }) == VP_ERR_INVALID_ARGUMENT, "a closed session must throw");
    CHECK(status_of([&] { vpipe::Session bad_config(std::vector<uint8_t>{0xff}); }) == VP_ERR_DECODE, "junk config");

    {
        vpipe::Bytes bytes;
        CHECK(vp_plan(request.data(), request.size(), bytes.out()) == VP_OK && !bytes.empty(), "Bytes::out");
        vpipe::Bytes moved(std::move(bytes));
        CHECK(bytes.empty() && !moved.empty(), "a move must transfer the buffer");
    }  // freed once, here

    if (failures) {
        std::fprintf(stderr, "test_vpipe_hpp: %d failure(s)\n", failures);
        return 1;
    }
    std::printf("test_vpipe_hpp (C++ wrapper): all passed\n");
    return 0;
}
