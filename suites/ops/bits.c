/* 1-bit masks for ReLU6 and ReLU, in C: torch has no packbits, and its boolean ops are slow on the CPU.
   Built by native.py with the device's C compiler and called through ctypes on contiguous
   float32 tensors. Bit i of byte j is element 8j + i (least significant first), as bits.py. */
#include <stdint.h>
#include <string.h>

#define CHUNK 4096

/* out = clamp(y, 0, high) (ReLU6: high = 6; ReLU: high = infinity); packed = 1 where 0 < y < high
   (where a gradient passes) */
void odt_clamp_pack(const float *restrict y, float *restrict out, uint8_t *restrict packed, int64_t n,
                    float high) {
    uint8_t passes[CHUNK + 8];
    for (int64_t start = 0; start < n; start += CHUNK) {
        int64_t len = n - start < CHUNK ? n - start : CHUNK;
        const float *v = y + start;
        float *o = out + start;
        for (int64_t k = 0; k < len; ++k) {
            float c = v[k] < 0.0f ? 0.0f : v[k];
            o[k] = c > high ? high : c;
            passes[k] = (uint8_t)((v[k] > 0.0f) & (v[k] < high));
        }
        memset(passes + len, 0, 8);
        uint8_t *p = packed + start / 8;
        for (int64_t j = 0; j < (len + 7) / 8; ++j) {
            uint64_t word;
            memcpy(&word, passes + 8 * j, 8);
            /* byte i of word (0 or 1) lands on bit 56 + i */
            p[j] = (uint8_t)((word * 0x0102040810204080ULL) >> 56);
        }
    }
}

static float byte_bits[256][8];
static int byte_bits_ready = 0;

/* out = grad where the mask is 1, else 0 */
void odt_masked_grad(const float *restrict grad, const uint8_t *restrict packed, float *restrict out, int64_t n) {
    if (!byte_bits_ready) {
        for (int b = 0; b < 256; ++b)
            for (int i = 0; i < 8; ++i)
                byte_bits[b][i] = (float)((b >> i) & 1);
        byte_bits_ready = 1;
    }
    int64_t full = n / 8;
    for (int64_t j = 0; j < full; ++j) {
        const float *m = byte_bits[packed[j]];
        for (int i = 0; i < 8; ++i)
            out[8 * j + i] = grad[8 * j + i] * m[i];
    }
    for (int64_t k = full * 8; k < n; ++k)
        out[k] = ((packed[k >> 3] >> (k & 7)) & 1) ? grad[k] : 0.0f;
}
