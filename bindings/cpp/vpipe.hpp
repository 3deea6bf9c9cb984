// vpipe.hpp: a header-only C++17 wrapper of libvpipe's C ABI (vpipe.h).
//
// What it adds to the C functions, and nothing else: exceptions instead of statuses
// (vpipe::Error carries the status and vp_last_error()'s message, read on the failing
// thread), ownership of every buffer the library returns (vpipe::Bytes frees it with
// vp_bytes_free), and a move-only vpipe::Session that closes its handle in the destructor.
// Messages stay protobuf bytes (proto/vpipe.proto): build and read them with the protobuf
// library of your choice (protobuf-c, protobuf C++).
//
//     #include <vpipe.hpp>     // c++ -std=c++17 host.cpp $(pkg-config --cflags --libs vpipe)
//
//     std::vector<uint8_t> plan = vpipe::plan(request_bytes);        // a vpipe.Plan
//     vpipe::Session session(config_bytes);                           // a vpipe.SessionConfig
//     float loss = session.step(inputs, targets);                     // rows x features, rows
//     std::vector<uint8_t> stats = session.stats();                   // a vpipe.SessionStats
//
// Thread safety is the library's (see vpipe.h): the free functions may be called from any
// thread; a Session may be used from several threads, its calls are serialised by the
// library. Moving a Session while another thread uses it is the caller's race.
#ifndef VPIPE_HPP
#define VPIPE_HPP

#include <vpipe.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace vpipe {

// The C name of a status, e.g. "VP_ERR_INVALID_REQUEST"; unknown codes give "VP_ERR_UNKNOWN".
inline const char *status_name(vp_status status) noexcept {
    switch (status) {
    case VP_OK: return "VP_OK";
    case VP_ERR_INVALID_ARGUMENT: return "VP_ERR_INVALID_ARGUMENT";
    case VP_ERR_DECODE: return "VP_ERR_DECODE";
    case VP_ERR_INVALID_REQUEST: return "VP_ERR_INVALID_REQUEST";
    case VP_ERR_INFEASIBLE: return "VP_ERR_INFEASIBLE";
    case VP_ERR_NOT_IMPLEMENTED: return "VP_ERR_NOT_IMPLEMENTED";
    case VP_ERR_INTERNAL: return "VP_ERR_INTERNAL";
    case VP_ERR_RUNTIME: return "VP_ERR_RUNTIME";
    default: return "VP_ERR_UNKNOWN";
    }
}

// A failed libvpipe call. what() is "<function>: <STATUS_NAME>: <message>"; message() is the
// library's text alone, which names the field, layer, stage or device at fault.
class Error : public std::runtime_error {
public:
    Error(vp_status status, const std::string &function, const std::string &message)
        : std::runtime_error(function + ": " + status_name(status) + ": " + message), status_(status), message_(message) {}
    vp_status status() const noexcept { return status_; }
    const std::string &message() const noexcept { return message_; }

private:
    vp_status status_;
    std::string message_;
};

namespace detail {
// Throws Error for a non-zero status, with vp_last_error() read right away on this thread.
inline void check(vp_status status, const char *function) {
    if (status != VP_OK) throw Error(status, function, vp_last_error());
}
}  // namespace detail

// A buffer the library returned, released with vp_bytes_free when the Bytes goes away.
// Move-only. out() hands its vp_bytes to a C function that fills it.
class Bytes {
public:
    Bytes() noexcept = default;
    ~Bytes() { vp_bytes_free(&raw_); }
    Bytes(const Bytes &) = delete;
    Bytes &operator=(const Bytes &) = delete;
    Bytes(Bytes &&other) noexcept : raw_(other.raw_) { other.raw_ = vp_bytes{nullptr, 0}; }
    Bytes &operator=(Bytes &&other) noexcept {
        if (this != &other) {
            vp_bytes_free(&raw_);
            raw_ = other.raw_;
            other.raw_ = vp_bytes{nullptr, 0};
        }
        return *this;
    }

    const uint8_t *data() const noexcept { return raw_.data; }
    size_t size() const noexcept { return raw_.len; }
    bool empty() const noexcept { return raw_.len == 0; }
    std::vector<uint8_t> vector() const { return std::vector<uint8_t>(raw_.data, raw_.data + raw_.len); }
    // Frees what is held and returns the vp_bytes for a C call to fill.
    vp_bytes *out() noexcept {
        vp_bytes_free(&raw_);
        return &raw_;
    }

private:
    vp_bytes raw_{nullptr, 0};
};

// The library's version ("0.1.0") and ABI version.
inline std::string version() { return vp_version(); }
inline uint32_t abi_version() noexcept { return vp_abi_version(); }

// Throws unless the loaded library has the ABI this header describes; call it at start-up.
inline void check_abi() {
    if (vp_abi_version() != VPIPE_ABI_VERSION)
        throw Error(VP_ERR_INVALID_ARGUMENT, "vpipe::check_abi",
                    "libvpipe has ABI version " + std::to_string(vp_abi_version()) + ", this header needs " +
                        std::to_string(VPIPE_ABI_VERSION));
}

// vp_plan: a serialised vpipe.PlanRequest in, a serialised vpipe.Plan out.
inline std::vector<uint8_t> plan(const std::vector<uint8_t> &request) {
    Bytes out;
    detail::check(vp_plan(request.data(), request.size(), out.out()), "vp_plan");
    return out.vector();
}

// vp_evaluate: a serialised vpipe.EvaluationRequest in, a serialised vpipe.Evaluation out.
inline std::vector<uint8_t> evaluate(const std::vector<uint8_t> &request) {
    Bytes out;
    detail::check(vp_evaluate(request.data(), request.size(), out.out()), "vp_evaluate");
    return out.vector();
}

// vp_simulate: a serialised vpipe.SimulationRequest in, a serialised vpipe.SimulationReport out.
inline std::vector<uint8_t> simulate(const std::vector<uint8_t> &request) {
    Bytes out;
    detail::check(vp_simulate(request.data(), request.size(), out.out()), "vp_simulate");
    return out.vector();
}

// A training session (vp_session_*): opened from a serialised vpipe.SessionConfig, closed by
// the destructor (or close()). Move-only; a moved-from Session is closed, and any call on a
// closed Session throws Error with VP_ERR_INVALID_ARGUMENT.
class Session {
public:
    explicit Session(const std::vector<uint8_t> &config) : Session(config.data(), config.size()) {}
    Session(const uint8_t *config, size_t config_len) {
        detail::check(vp_session_open(config, config_len, &handle_), "vp_session_open");
    }
    ~Session() { vp_session_close(handle_); }  // NULL is accepted; errors cannot escape here
    Session(const Session &) = delete;
    Session &operator=(const Session &) = delete;
    Session(Session &&other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}
    Session &operator=(Session &&other) noexcept {
        if (this != &other) {
            vp_session_close(handle_);
            handle_ = std::exchange(other.handle_, nullptr);
        }
        return *this;
    }

    // Closes the session now; closing a closed Session does nothing.
    void close() {
        vp_session *h = std::exchange(handle_, nullptr);
        detail::check(vp_session_close(h), "vp_session_close");
    }
    bool closed() const noexcept { return handle_ == nullptr; }

    // One training step: inputs are rows x features floats (row-major), targets one class
    // per row. Returns the mini-batch's mean loss.
    float step(const std::vector<float> &inputs, const std::vector<int32_t> &targets) {
        float loss = 0;
        detail::check(vp_session_step(live("vp_session_step"), inputs.data(), inputs.size(), targets.data(), targets.size(), &loss),
                      "vp_session_step");
        return loss;
    }

    // One training step of a token model: one token id per row.
    float step_tokens(const std::vector<int32_t> &tokens, const std::vector<int32_t> &targets) {
        float loss = 0;
        detail::check(vp_session_step_tokens(live("vp_session_step_tokens"), tokens.data(), tokens.size(), targets.data(),
                                             targets.size(), &loss),
                      "vp_session_step_tokens");
        return loss;
    }

    // A serialised vpipe.SessionStats.
    std::vector<uint8_t> stats() {
        Bytes out;
        detail::check(vp_session_stats(live("vp_session_stats"), out.out()), "vp_session_stats");
        return out.vector();
    }

    // Layer `layer`'s parameters: a serialised vpipe.LayerParameters.
    std::vector<uint8_t> parameters(uint32_t layer) {
        Bytes out;
        detail::check(vp_session_get_parameters(live("vp_session_get_parameters"), layer, out.out()), "vp_session_get_parameters");
        return out.vector();
    }

    // Replaces layer `layer`'s parameters from a serialised vpipe.LayerParameters; every shape
    // must match. On error nothing changes.
    void set_parameters(uint32_t layer, const std::vector<uint8_t> &parameters) {
        detail::check(vp_session_set_parameters(live("vp_session_set_parameters"), layer, parameters.data(), parameters.size()),
                      "vp_session_set_parameters");
    }

    // The last iteration as measured: an SVG timeline for a path ending in ".svg", otherwise
    // a Chrome trace (JSON).
    void write_trace(const std::string &path) {
        detail::check(vp_session_write_trace(live("vp_session_write_trace"), path.c_str()), "vp_session_write_trace");
    }

    // Writes the whole training state to `path`, atomically (docs/checkpoint.md). Throws
    // vpipe::Error (VP_ERR_CHECKPOINT) naming the file and the system's reason.
    void save(const std::string &path) {
        detail::check(vp_session_save(live("vp_session_save"), path.c_str()), "vp_session_save");
    }

    // Resumes the state saved at `path` (same model and optimizer; the plan may differ).
    // A damaged checkpoint, or one of another model, throws and leaves the session as it was.
    void load(const std::string &path) {
        detail::check(vp_session_load(live("vp_session_load"), path.c_str()), "vp_session_load");
    }

    // The C handle, for calls this wrapper does not cover; still owned by the Session.
    vp_session *handle() const noexcept { return handle_; }

private:
    vp_session *live(const char *function) const {
        if (!handle_) throw Error(VP_ERR_INVALID_ARGUMENT, function, "session: closed (or moved from)");
        return handle_;
    }

    vp_session *handle_ = nullptr;
};

}  // namespace vpipe

#endif  // VPIPE_HPP
