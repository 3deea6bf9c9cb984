/* What every fuzz target checks after each call, beyond "no crash, no hang": the ABI's
 * contract (docs/abi.md). A violation aborts, so libFuzzer saves the input. */
#ifndef VPIPE_FUZZ_CONTRACT_H
#define VPIPE_FUZZ_CONTRACT_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vpipe.h>

static void fuzz_violation(const char *what, vp_status status) {
    fprintf(stderr, "fuzz: ABI contract violated: %s (status %d, message \"%s\")\n", what, status, vp_last_error());
    abort();
}

/* A status is one of the documented ones; a failure has a message and leaves `out` empty;
 * VP_ERR_INTERNAL is a bug in libvpipe whatever the input. */
static void fuzz_check(vp_status status, const vp_bytes *out) {
    if (status < VP_OK || status > VP_ERR_CHECKPOINT) fuzz_violation("undocumented status", status);
    if (status == VP_ERR_INTERNAL) fuzz_violation("VP_ERR_INTERNAL (a bug, whatever the input)", status);
    if (status == VP_OK) {
        if (out && out->len > 0 && out->data == NULL) fuzz_violation("VP_OK with a NULL buffer of non-zero length", status);
        return;
    }
    const char *message = vp_last_error();
    if (message == NULL || message[0] == '\0') fuzz_violation("a failure without a message", status);
    if (out && (out->data != NULL || out->len != 0)) fuzz_violation("a failure that filled its output", status);
}

#endif
