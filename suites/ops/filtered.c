/* Two passes of the filtered conv's backward (filtered.py), in C: torch reduces a short innermost
   axis and copies into a stride-0 innermost axis slowly on the CPU. Built by native.py with
   bits.c into one library and called through ctypes on contiguous float32 tensors. */
#include <stdint.h>
#include <string.h>

/* out[p] = sum of the taps values of w[p * taps ...] (a contiguous weight's kernel window summed
   per (out, in) pair) */
void odt_kernel_sums(const float *restrict w, float *restrict out, int64_t pairs, int64_t taps) {
    if (taps == 9) { /* 3x3: unrolled, which the compiler vectorises */
        for (int64_t p = 0; p < pairs; ++p, w += 9)
            out[p] = ((w[0] + w[1]) + (w[2] + w[3])) + ((w[4] + w[5]) + (w[6] + w[7])) + w[8];
        return;
    }
    for (int64_t p = 0; p < pairs; ++p, w += taps) {
        float s = 0.0f;
        for (int64_t t = 0; t < taps; ++t)
            s += w[t];
        out[p] = s;
    }
}

/* x: planes x ph x pw, out: planes x rows x cols; out[h][c] = x[h / wh][c / ww] where that
   window exists, 0 where the input reaches beyond the last window */
void odt_spread(const float *restrict x, float *restrict out, int64_t planes, int64_t ph, int64_t pw,
                int64_t wh, int64_t ww, int64_t rows, int64_t cols) {
    int64_t covered = pw * ww < cols ? pw * ww : cols;
    for (int64_t plane = 0; plane < planes; ++plane, x += ph * pw) {
        for (int64_t h = 0; h < rows; ++h, out += cols) {
            if (h / wh >= ph) {
                memset(out, 0, cols * sizeof(float));
            } else if (h % wh) { /* the row above came from the same window row */
                memcpy(out, out - cols, cols * sizeof(float));
            } else {
                const float *src = x + (h / wh) * pw;
                int64_t c = 0;
                for (int64_t b = 0; c < covered; ++b)
                    for (int64_t k = 0; k < ww && c < covered; ++k)
                        out[c++] = src[b];
                for (; c < cols; ++c)
                    out[c] = 0.0f;
            }
        }
    }
}
