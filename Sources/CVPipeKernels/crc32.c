// CRC-32 by carry-less multiplication (see vpipe_crc32.h).
//
// The folding keeps the message's remainder modulo the CRC polynomial P while shrinking it:
// four 128-bit lanes each advance 512 bits per step (multiplied by x^(512±32) mod P, k1/k2),
// then fold into one lane (k3/k4, 128 bits per step). The 16 bytes left are congruent to
// everything folded so far, so their plain CRC (the register starting at 0) is the register
// after the whole folded part; the tables then continue over the tail. The initial register
// (~crc, zlib's pre-inversion) is XORed into the first four bytes.
#include "vpipe_crc32.h"

#include <string.h>

// Slicing-by-8 tables of the reflected polynomial 0xEDB88320: table[0] is the classic
// byte-at-a-time table, table[k][b] the register after byte b and k zero bytes. Filled when
// the library loads (before any caller can run).
static uint32_t table[8][256];

__attribute__((constructor)) static void make_tables(void) {
    for (uint32_t b = 0; b < 256; b++) {
        uint32_t c = b;
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1)));
        table[0][b] = c;
    }
    for (int k = 1; k < 8; k++)
        for (int b = 0; b < 256; b++) table[k][b] = (table[k - 1][b] >> 8) ^ table[0][table[k - 1][b] & 0xff];
}

// The register after `length` more bytes (no pre- or post-inversion): eight bytes per step.
static uint32_t update(uint32_t reg, const unsigned char *p, size_t length) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    while (length >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        v ^= reg;
        reg = table[7][v & 0xff] ^ table[6][(v >> 8) & 0xff] ^ table[5][(v >> 16) & 0xff] ^ table[4][(v >> 24) & 0xff] ^
              table[3][(v >> 32) & 0xff] ^ table[2][(v >> 40) & 0xff] ^ table[1][(v >> 48) & 0xff] ^ table[0][v >> 56];
        p += 8;
        length -= 8;
    }
#endif
    while (length-- > 0) reg = table[0][(reg ^ *p++) & 0xff] ^ (reg >> 8);
    return reg;
}

static uint32_t crc32_tables(uint32_t crc, const void *data, size_t length) { return ~update(~crc, data, length); }

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#include <immintrin.h>

#define FOLD(x, k, data) \
    _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x, k, 0x00), _mm_clmulepi64_si128(x, k, 0x11)), data)

// Four lanes holding `first` (64 bytes, the initial register already XORed in), then
// `length` more bytes (a multiple of 16). Returns the zlib CRC of everything.
__attribute__((target("pclmul,sse4.1"))) static uint32_t fold4(const unsigned char *first, const unsigned char *p,
                                                               size_t length) {
    const __m128i k1k2 = _mm_set_epi64x(0x01c6e41596, 0x0154442bd4);
    const __m128i k3k4 = _mm_set_epi64x(0x00ccaa009e, 0x01751997d0);
    __m128i x1 = _mm_loadu_si128((const __m128i *)(first + 0x00));
    __m128i x2 = _mm_loadu_si128((const __m128i *)(first + 0x10));
    __m128i x3 = _mm_loadu_si128((const __m128i *)(first + 0x20));
    __m128i x4 = _mm_loadu_si128((const __m128i *)(first + 0x30));
    while (length >= 64) {
        x1 = FOLD(x1, k1k2, _mm_loadu_si128((const __m128i *)(p + 0x00)));
        x2 = FOLD(x2, k1k2, _mm_loadu_si128((const __m128i *)(p + 0x10)));
        x3 = FOLD(x3, k1k2, _mm_loadu_si128((const __m128i *)(p + 0x20)));
        x4 = FOLD(x4, k1k2, _mm_loadu_si128((const __m128i *)(p + 0x30)));
        p += 64;
        length -= 64;
    }
    x1 = FOLD(x1, k3k4, x2);
    x1 = FOLD(x1, k3k4, x3);
    x1 = FOLD(x1, k3k4, x4);
    while (length >= 16) {
        x1 = FOLD(x1, k3k4, _mm_loadu_si128((const __m128i *)p));
        p += 16;
        length -= 16;
    }
    unsigned char folded[16];
    _mm_storeu_si128((__m128i *)folded, x1);
    return ~update(0, folded, 16);
}

#define FOLD512(x, k, data)                                                                                   \
    _mm512_ternarylogic_epi64(_mm512_clmulepi64_epi128(x, k, 0x00), _mm512_clmulepi64_epi128(x, k, 0x11), data, 0x96)

// The same with four 512-bit registers (sixteen lanes, 256 bytes per step: x^(2048±32) mod P),
// folded to four lanes (x^(512±32)) and handed to fold4. `length` is a
// multiple of 16, at least 256.
__attribute__((target("vpclmulqdq,pclmul,avx512f,sse4.1"))) static uint32_t fold512(uint32_t crc, const unsigned char *p,
                                                                                     size_t length) {
    const __m512i k2048 = _mm512_set4_epi64(0x01322d1430, 0x011542778a, 0x01322d1430, 0x011542778a);
    const __m512i k512 = _mm512_set4_epi64(0x01c6e41596, 0x0154442bd4, 0x01c6e41596, 0x0154442bd4);
    __m512i x1 = _mm512_loadu_si512((const void *)(p + 0x00));
    __m512i x2 = _mm512_loadu_si512((const void *)(p + 0x40));
    __m512i x3 = _mm512_loadu_si512((const void *)(p + 0x80));
    __m512i x4 = _mm512_loadu_si512((const void *)(p + 0xc0));
    x1 = _mm512_xor_si512(x1, _mm512_castsi128_si512(_mm_cvtsi32_si128((int)~crc)));
    p += 256;
    length -= 256;
    while (length >= 256) {
        x1 = FOLD512(x1, k2048, _mm512_loadu_si512((const void *)(p + 0x00)));
        x2 = FOLD512(x2, k2048, _mm512_loadu_si512((const void *)(p + 0x40)));
        x3 = FOLD512(x3, k2048, _mm512_loadu_si512((const void *)(p + 0x80)));
        x4 = FOLD512(x4, k2048, _mm512_loadu_si512((const void *)(p + 0xc0)));
        p += 256;
        length -= 256;
    }
    x1 = FOLD512(x1, k512, x2);
    x1 = FOLD512(x1, k512, x3);
    x1 = FOLD512(x1, k512, x4);
    // x1's four lanes are the four lanes of `fold`, 64 bytes of "message" followed by the rest.
    unsigned char lanes[64];
    _mm512_storeu_si512((void *)lanes, x1);
    return fold4(lanes, p, length);
}

// `length` is a multiple of 16, at least 64. Returns zlib's crc32(crc, data, length).
static uint32_t fold(uint32_t crc, const unsigned char *p, size_t length) {
    unsigned char first[64];
    memcpy(first, p, 64);
    uint32_t reg = ~crc;
    for (int i = 0; i < 4; i++) first[i] ^= (unsigned char)(reg >> (8 * i));
    return fold4(first, p + 64, length - 64);
}

// 0: tables only, 1: 128-bit folding, 2: 512-bit folding. A benign race: every thread
// computes the same answer.
static int path(void) {
    static int known = -1;
    if (known < 0) {
        __builtin_cpu_init();
        int clmul = __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1");
        known = !clmul ? 0 : (__builtin_cpu_supports("vpclmulqdq") && __builtin_cpu_supports("avx512f")) ? 2 : 1;
    }
    return known;
}

uint32_t vpk_crc32(uint32_t crc, const void *data, size_t length) { return vpk_crc32_using(2, crc, data, length); }

uint32_t vpk_crc32_using(int limit, uint32_t crc, const void *data, size_t length) {
    const unsigned char *p = data;
    int how = length >= 64 ? (path() < limit ? path() : limit) : 0;
    if (how > 0) {
        size_t body = length & ~(size_t)15;
        crc = how == 2 && body >= 256 ? fold512(crc, p, body) : fold(crc, p, body);
        p += body;
        length -= body;
    }
    return crc32_tables(crc, p, length);
}

const char *vpk_crc32_path(void) {
    static const char *names[] = {"slicing-by-8", "pclmul", "vpclmulqdq"};
    return names[path()];
}

#else
uint32_t vpk_crc32(uint32_t crc, const void *data, size_t length) { return crc32_tables(crc, data, length); }
uint32_t vpk_crc32_using(int limit, uint32_t crc, const void *data, size_t length) {
    (void)limit;
    return crc32_tables(crc, data, length);
}
const char *vpk_crc32_path(void) { return "slicing-by-8"; }
#endif
