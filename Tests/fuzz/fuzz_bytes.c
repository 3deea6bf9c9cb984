/* libFuzzer target for the ABI entries that take one message and return one:
 * vp_plan, vp_evaluate, vp_simulate (protobuf bytes) and vp_import_pipedream (graph.txt).
 * Built once per entry with -DFUZZ_ENTRY=<function> (Tests/fuzz/run.sh). */
#include <stddef.h>
#include <stdint.h>

#include "fuzz_contract.h"

#ifndef FUZZ_ENTRY
#error "build with -DFUZZ_ENTRY=vp_plan (or vp_evaluate, vp_simulate, vp_import_pipedream)"
#endif

#define FUZZ_IMPORT_PIPEDREAM_vp_import_pipedream 1
#define FUZZ_IS_IMPORT_(f) FUZZ_IMPORT_PIPEDREAM_##f
#define FUZZ_IS_IMPORT(f) FUZZ_IS_IMPORT_(f)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    vp_bytes out = {0};
#if FUZZ_IS_IMPORT(FUZZ_ENTRY) == 1
    /* The last byte picks micro_batches_per_mini_batch (0 is out of range on purpose). */
    uint32_t micro_batches = size > 0 ? data[size - 1] % 9 : 1;
    vp_status status = vp_import_pipedream(data, size, micro_batches, &out);
#else
    vp_status status = FUZZ_ENTRY(data, size, &out);
#endif
    fuzz_check(status, &out);
    vp_bytes_free(&out);
    if (out.data != NULL || out.len != 0) fuzz_violation("vp_bytes_free did not reset the buffer", status);
    return 0;
}
