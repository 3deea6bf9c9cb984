// CRC-32 (zlib's polynomial and conventions) at memory speed, for checkpoint blobs.
//
// Debian's zlib 1.2.13 computes CRC-32 with tables at about 1 GB/s, slower than writing the
// bytes to disk; a checkpoint of hundreds of MB would spend most of its save in the checksum.
// On x86-64 CPUs with PCLMULQDQ this folds 64 bytes per step with carry-less multiplies
// (Intel's "Fast CRC Computation Using PCLMULQDQ", the constants of Linux's crc32-pclmul),
// 256 bytes per step with VPCLMULQDQ on AVX-512 CPUs, and hands the folded 16 bytes and the
// tail to zlib; elsewhere it is zlib's crc32. The same result as zlib's crc32 on every path
// (tested against it). Internal to libvpipe.
#ifndef VPIPE_CRC32_H
#define VPIPE_CRC32_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// zlib's crc32(crc, data, length): continues `crc` (0 for a fresh checksum) over `length` bytes.
uint32_t vpk_crc32(uint32_t crc, const void *data, size_t length);

/// Tests: vpk_crc32 limited to path `limit` (0 zlib, 1 128-bit folding, 2 512-bit folding)
/// or the best below it that this CPU has.
uint32_t vpk_crc32_using(int limit, uint32_t crc, const void *data, size_t length);

/// The path vpk_crc32 takes on this CPU: "vpclmulqdq", "pclmul" or "zlib".
const char *vpk_crc32_path(void);

#ifdef __cplusplus
}
#endif

#endif
