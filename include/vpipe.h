/*
 * vpipe.h: the C ABI of libvpipe, the vPipe pipeline-parallel training runtime.
 *
 * This header is the manual. Every message crossing it is a protobuf message of
 * proto/vpipe.proto, serialised to bytes; hosts in any language build requests with their
 * own protobuf library and read the replies the same way.
 *
 * Conventions
 * - Every fallible call returns a vp_status: VP_OK (0) on success, a VP_ERR_* code
 *   otherwise. On failure vp_last_error() describes what went wrong, naming the field,
 *   layer, stage or device at fault (for example "model.layers[3].profile.fwd_seconds:
 *   must be finite and >= 0, got -1").
 * - No call aborts, traps or exits the host process on bad input: NULL pointers, truncated
 *   or random bytes and nonsensical values all come back as a status and a message.
 * - Ownership: the library never frees or keeps a pointer to memory the host passed in;
 *   inputs are read during the call only. Buffers the library returns (vp_bytes) belong
 *   to the host and are released with vp_bytes_free.
 * - Thread safety is stated per function. Functions marked "thread-safe" may be called
 *   from any number of threads at once.
 * - Only symbols prefixed vp_ are exported from libvpipe.so.
 */
#ifndef VPIPE_H
#define VPIPE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The ABI version this header describes. It changes only when an existing function's
 * signature or meaning changes incompatibly; compare it with vp_abi_version() at start-up. */
#define VPIPE_ABI_VERSION 1

/* Status codes. New codes may be added; treat unknown non-zero values as errors. */
typedef int32_t vp_status;
enum {
    VP_OK = 0,
    VP_ERR_INVALID_ARGUMENT = 1, /* a NULL pointer or an impossible length was passed */
    VP_ERR_DECODE = 2,           /* the bytes are not a valid protobuf message of the expected type */
    VP_ERR_INVALID_REQUEST = 3,  /* the message decoded but a field's value is invalid */
    VP_ERR_INFEASIBLE = 4,       /* no plan fits the devices' memory; the message says where and by how much */
    VP_ERR_NOT_IMPLEMENTED = 5,  /* the requested feature (e.g. a planner) is not available yet */
    VP_ERR_INTERNAL = 6,         /* a bug in libvpipe; please report the message */
    VP_ERR_RUNTIME = 7           /* training failed: out of device memory (names stage, layer, bytes),
                                    a stage failed (names the stage), bad data (names the row) */,
    VP_ERR_CHECKPOINT = 8        /* a checkpoint could not be written or read, is damaged (truncated,
                                    checksum), of a newer format, or of another model; names the
                                    file and what does not match */
};

/* A buffer returned by the library. The host owns it after a successful call and must
 * release it with vp_bytes_free. */
typedef struct vp_bytes {
    uint8_t *data;
    size_t len;
} vp_bytes;

/* Releases a buffer returned by the library and resets it to {NULL, 0}. Passing NULL, or
 * a vp_bytes whose data is NULL, does nothing; freeing the same buffer twice after the
 * reset is harmless. Thread-safe (for distinct buffers). */
void vp_bytes_free(vp_bytes *bytes);

/* The message describing the last failure on the calling thread, or "" if none.
 * The string is owned by the library and stays valid on this thread until the next vp_
 * call that fails on it. Thread-safe: each thread has its own message. */
const char *vp_last_error(void);

/* The library's version as a static string, e.g. "0.1.0". Never NULL; do not free.
 * Thread-safe. */
const char *vp_version(void);

/* The ABI version of the loaded library; equal to VPIPE_ABI_VERSION when the header and
 * the library match. Thread-safe. */
uint32_t vp_abi_version(void);

/* Plans a pipeline.
 *
 * request, request_len: a serialised vpipe.PlanRequest {model, cluster, options}. Read
 *   during the call only. request may be NULL only if request_len is 0 (an empty request is
 *   still rejected, naming the missing field).
 * plan_out: receives a serialised vpipe.Plan on VP_OK, owned by the host (vp_bytes_free).
 *   Left as {NULL, 0} on failure. Must not be NULL.
 *
 * Errors: VP_ERR_INVALID_ARGUMENT, VP_ERR_DECODE, VP_ERR_INVALID_REQUEST (names the field),
 *   VP_ERR_INFEASIBLE (names the stage and the bytes over its memory),
 *   VP_ERR_NOT_IMPLEMENTED (a planner that is not available yet).
 * Thread-safe: planning keeps no shared state. */
vp_status vp_plan(const uint8_t *request, size_t request_len, vp_bytes *plan_out);

/* Re-evaluates any plan with the cost model (docs/cost-model.md), for checking a plan
 * from elsewhere or comparing hand-made ones.
 *
 * request: a serialised vpipe.EvaluationRequest {model, cluster, plan}; the plan's stage
 *   ranges, policies, schedule and micro_batches are read, its numbers are ignored.
 * evaluation_out: receives a serialised vpipe.Evaluation {plan with every number
 *   recomputed, feasible, violations}, owned by the host (vp_bytes_free).
 * An infeasible plan is not an error here: it comes back with feasible = false and one
 * violation per stage over its memory.
 * Thread-safe. */
vp_status vp_evaluate(const uint8_t *request, size_t request_len, vp_bytes *evaluation_out);

/* Plays a plan's schedule in the discrete-event simulator (docs/simulator.md): every
 * forward, backward, recompute, swap and transfer of one iteration as its own timed action
 * on its own resource (each stage's compute and copy engine, each link), with durations
 * from the layer profiles. A finer judge of a plan than the cost model's formula.
 *
 * request: a serialised vpipe.SimulationRequest {model, cluster, plan}; the plan's stage
 *   ranges, policies, schedule and micro_batches are read, its numbers are ignored.
 *   Read during the call only.
 * report_out: receives a serialised vpipe.SimulationReport {iteration_seconds, per-stage
 *   busy/idle/bubble fractions and peak memory, cost_model_iteration_seconds,
 *   chrome_trace_json, svg, schedule}, owned by the host (vp_bytes_free). Left as {NULL, 0}
 *   on failure. Must not be NULL.
 * An infeasible plan is simulated all the same (peak memory then exceeds the device).
 * Errors: VP_ERR_INVALID_ARGUMENT, VP_ERR_DECODE, VP_ERR_INVALID_REQUEST (names the field,
 *   e.g. plan.stages[1].first_layer, or plan.micro_batches when stages x micro-batches
 *   exceed 16384).
 * Thread-safe: the simulation keeps no shared state. */
vp_status vp_simulate(const uint8_t *request, size_t request_len, vp_bytes *report_out);

/* Converts a PipeDream profiler graph (the `graph.txt` its profiler writes) into a model:
 * the graph is linearised into a chain of layers with per-micro-batch profiles, exactly as
 * `vpipe import pipedream` does (docs/pipedream-import.md).
 *
 * graph: the file's bytes (UTF-8 text), graph_len of them; read during the call only.
 * micro_batches_per_mini_batch: PipeDream profiles one mini-batch; times and activation
 *   sizes are divided by this (1 to 2^20).
 * model_out: receives a serialised vpipe.ModelSpec, owned by the host (vp_bytes_free).
 *   Left as {NULL, 0} on failure. Must not be NULL.
 * Errors: VP_ERR_INVALID_ARGUMENT, VP_ERR_INVALID_REQUEST (names the line of the graph and
 *   what is wrong with it, or micro_batches_per_mini_batch).
 * Thread-safe: importing keeps no shared state. */
vp_status vp_import_pipedream(const uint8_t *graph, size_t graph_len, uint32_t micro_batches_per_mini_batch,
                              vp_bytes *model_out);

/* ------------------------------------------------------------------ training sessions
 *
 * A session trains a model (every layer with a kind: linear, activation, layer_norm,
 * embedding, transformer_block, softmax_cross_entropy last) on pipeline stages: one thread
 * per stage, a device arena of the stage's memory_bytes - reserved_bytes, a host pool and a
 * copy engine for swaps. With a plan in the config it runs that plan; without one, the first
 * training.profile_iterations steps run on one stage while every layer is measured, then
 * the session plans with PLANNER_VPIPE and moves the layers (weights and optimizer state) to
 * their stages. Those steps are real training steps.
 *
 * Thread safety: a session may be used from any thread, but calls on one session are
 * serialised (a second caller waits). Different sessions are independent.
 * Handles: a handle is valid from vp_session_open until vp_session_close; a closed or
 * unknown handle gives VP_ERR_INVALID_ARGUMENT, never a crash. */
typedef struct vp_session vp_session;

/* Opens a session. config: a serialised vpipe.SessionConfig {model, cluster, plan?,
 * training}. On VP_OK *session_out owns the session (close it with vp_session_close).
 * Errors name the field (e.g. "model.layers[3].transformer_block.heads") or, when the model
 * does not fit, the stage, layer and bytes. */
vp_status vp_session_open(const uint8_t *config, size_t config_len, vp_session **session_out);

/* One training iteration on a mini-batch of rows. inputs: rows x features float32 values
 * (features = the first layer's input width), row-major; targets: one class per row (the
 * loss layer's targets). The mini-batch splits into training.micro_batches equal parts.
 * *loss_out receives the mean loss over the mini-batch (its gradients are those of that
 * mean, so results do not depend on the micro-batch count). Inputs are read during the
 * call only. If any stage fails, every stage stops, the error names the stage, and no
 * weight changes. */
vp_status vp_session_step(vp_session *session, const float *inputs, size_t input_count,
                          const int32_t *targets, size_t target_count, float *loss_out);

/* vp_session_step for token models (first layer: embedding): one token id per row. */
vp_status vp_session_step_tokens(vp_session *session, const int32_t *tokens, size_t token_count,
                                 const int32_t *targets, size_t target_count, float *loss_out);

/* Measured statistics: a serialised vpipe.SessionStats (per stage peak device bytes,
 * measured time, swapped bytes, recomputed layers; iteration times; measured layer
 * profiles; the plan), owned by the host (vp_bytes_free). */
vp_status vp_session_stats(vp_session *session, vp_bytes *stats_out);

/* Writes the last iteration as measured: an SVG timeline when path ends in ".svg",
 * otherwise a Chrome trace (JSON, for Perfetto or chrome://tracing). */
vp_status vp_session_write_trace(vp_session *session, const char *path);

/* Layer `layer`'s parameters as a serialised vpipe.LayerParameters (shapes and float32
 * values), owned by the host (vp_bytes_free). For checkpoints and comparisons. */
vp_status vp_session_get_parameters(vp_session *session, uint32_t layer, vp_bytes *parameters_out);

/* Replaces layer `layer`'s parameters from a serialised vpipe.LayerParameters; every shape
 * must match. On error nothing changes. */
vp_status vp_session_set_parameters(vp_session *session, uint32_t layer, const uint8_t *parameters,
                                    size_t parameters_len);

/* Host-defined layers. A LayerSpec of kind `external {callback, in_features, out_features}`
 * runs the host's code: forward(input [rows x in], output [rows x out]) and
 * backward(input, output, grad_output [rows x out], grad_input [rows x in]). All buffers
 * are row-major float32 owned by the library (in the stage's memory arena), valid only
 * during the call; the callback fills `output` / `grad_input`. A callback returns 0 on
 * success; any other value fails the step everywhere with the text it wrote into `error`
 * (at most error_len bytes, NUL-terminated), prefixed with the stage and layer.
 * Callbacks run on the stages' worker threads: calls for one stage never overlap, calls
 * for different stages may (in Python the GIL serialises them). */
typedef int32_t (*vp_external_forward)(void *user_data, const float *input, float *output, int64_t rows,
                                       int64_t in_features, int64_t out_features, char *error, size_t error_len);
typedef int32_t (*vp_external_backward)(void *user_data, const float *input, const float *output,
                                        const float *grad_output, float *grad_input, int64_t rows,
                                        int64_t in_features, int64_t out_features, char *error, size_t error_len);

/* Registers (or replaces) the callbacks of external layers named `callback` for sessions
 * opened afterwards. `user_data` is passed back untouched; the host keeps it alive while any
 * session uses the layer. Thread-safe. */
vp_status vp_register_external_layer(const char *callback, vp_external_forward forward,
                                     vp_external_backward backward, void *user_data);

/* Live migration: asks the session to move to `plan` (a serialised vpipe.Plan for the same
 * model, stage count, schedule and micro-batches): layers move between stages and change
 * policies while training continues. It takes effect during the next vp_session_step: the
 * moving layers' weights and optimizer state are pre-copied while that iteration computes,
 * their accumulated gradients are handed over at its flush, the receiving stage applies
 * the optimizer step, and ownership switches for the following iteration. Training
 * computes exactly what it would have without the move.
 * Checked now against the measured profiles: a plan that cannot be applied (does not fit,
 * wrong layer or stage count, another schedule) is rejected with the reason, and training
 * continues on the current plan, untouched. May be called from another thread while a step
 * runs (not serialised with it); a later request replaces one that has not started.
 * The outcome appears in vp_session_stats (decisions).
 * TRANSPORT_MPI: every rank's host calls this with the same plan between the same two
 * steps (e.g. rank 0 decides and broadcasts it); the layers travel between ranks over MPI
 * (docs/mpi.md). A step that the ranks start with different plans fails on every rank. */
vp_status vp_session_apply_plan(vp_session *session, const uint8_t *plan, size_t plan_len);

/* Checkpoints (docs/checkpoint.md). vp_session_save writes the session's whole training
 * state to the file `path` (UTF-8, NUL-terminated; read during the call only): parameters,
 * optimizer state (SGD momentum, Adam moments and step count), iteration count, the plan,
 * PIPEDREAM_ASYNC weight versions, the profiler's and re-planner's measurements. Layers are
 * stored by model layer, so a checkpoint loads into a session with another plan (stage
 * count, partition, policies) and training continues with bit-identical losses.
 * The file appears atomically (temporary name, fsync, rename): a crash mid-save leaves the
 * previous checkpoint at `path` intact. Between steps; serialised with the session's other
 * calls. TRANSPORT_MPI: collective, every rank calls it with the same path between the same
 * two steps; each rank writes its stages' shard `<path>.it<N>.rank<r>` beside `path`, and
 * rank 0 then writes the manifest at `path` (a shared file system, or the same machine).
 * Errors: VP_ERR_INVALID_ARGUMENT (NULL), VP_ERR_CHECKPOINT (the file system's reason). */
vp_status vp_session_save(vp_session *session, const char *path);

/* Loads a checkpoint written by vp_session_save into this session (opened with the same
 * model and optimizer kind; its plan, cluster and world size may differ). Everything is
 * checked before anything changes: a truncated or corrupted file (CRC-32 per tensor), a
 * checkpoint of another model (layer names, kinds, shapes), another optimizer or seed, or a
 * newer format version is refused with VP_ERR_CHECKPOINT naming the file and what does not
 * match, and the session stays as it was. A session opened without a plan that is still
 * profiling takes the checkpoint's plan; one opened with a plan keeps its own.
 * TRANSPORT_MPI: collective; every rank reads the manifest and the shards holding its
 * layers, whatever world size wrote them; if any rank refuses, every rank does.
 * Serialised with the session's other calls. */
vp_status vp_session_load(vp_session *session, const char *path);

/* Closes the session and frees everything it owns. NULL is accepted (VP_OK). Closing a
 * handle twice gives VP_ERR_INVALID_ARGUMENT. */
vp_status vp_session_close(vp_session *session);

#ifdef __cplusplus
}
#endif

#endif /* VPIPE_H */
