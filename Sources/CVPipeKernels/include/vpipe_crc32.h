// CRC-32 (zlib's polynomial and conventions: the same values as zlib's crc32) at memory
// speed, for checkpoint blobs, with no library behind it (libvpipe.so needs only glibc and
// the C++ runtime, docs/torch.md "The wheel").
//
// Table-driven CRC-32 (zlib 1.2.13's, or slicing-by-8) runs at 1-2 GB/s, slower than writing
// the bytes to disk; a checkpoint of hundreds of MB would spend much of its save in the
// checksum. On x86-64 CPUs with PCLMULQDQ this folds 64 bytes per step with carry-less
// multiplies (Intel's "Fast CRC Computation Using PCLMULQDQ", the constants of Linux's
// crc32-pclmul), 256 bytes per step with VPCLMULQDQ on AVX-512 CPUs, and finishes the
// folded 16 bytes and the tail with slicing-by-8 tables; elsewhere it is slicing-by-8 only.
// Every path gives the same result (tested against a bitwise reference). Internal to libvpipe.
#ifndef VPIPE_CRC32_H
#define VPIPE_CRC32_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// zlib's crc32(crc, data, length): continues `crc` (0 for a fresh checksum) over `length` bytes.
uint32_t vpk_crc32(uint32_t crc, const void *data, size_t length);

/// Tests: vpk_crc32 limited to path `limit` (0 tables, 1 128-bit folding, 2 512-bit folding)
/// or the best below it that this CPU has.
uint32_t vpk_crc32_using(int limit, uint32_t crc, const void *data, size_t length);

/// The path vpk_crc32 takes on this CPU: "vpclmulqdq", "pclmul" or "slicing-by-8".
const char *vpk_crc32_path(void);

#ifdef __cplusplus
}
#endif

#endif
