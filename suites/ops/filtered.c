/* Four passes of the filtered conv (filtered.py), in C: torch pools NCHW maps, reduces a short
   innermost axis and copies from or into a stride-0 innermost axis slowly on the CPU. Built by
   native.py with bits.c into one library and called through ctypes on contiguous float32
   tensors. Large calls run on the threads of torch's own OpenMP runtime where the build links it
   (native.py checks that it is the same one): the passes are memory-bound, and one core alone
   does not draw the bandwidth (ResNet-18's last 512x512x3x3 weight was summed in ~0.6 ms on one
   core and in ~0.4 ms on two, inside a training step). */
#include <stdint.h>
#include <string.h>

#define PARALLEL_FROM (1 << 17) /* elements read or written: below it a fork costs more than it saves */

/* out[p] = sum of the taps values of w[p * taps ...] (a contiguous weight's kernel window summed
   per (out, in) pair), on up to threads threads */
void odt_kernel_sums(const float *restrict w, float *restrict out, int64_t pairs, int64_t taps, int threads) {
    if (taps == 9) { /* 3x3: unrolled, which the compiler vectorises */
#pragma omp parallel for schedule(static) num_threads(threads) if (pairs * 9 >= PARALLEL_FROM)
        for (int64_t p = 0; p < pairs; ++p) {
            const float *v = w + 9 * p;
            out[p] = ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7])) + v[8];
        }
        return;
    }
#pragma omp parallel for schedule(static) num_threads(threads) if (pairs * taps >= PARALLEL_FROM)
    for (int64_t p = 0; p < pairs; ++p) {
        float s = 0.0f;
        for (int64_t t = 0; t < taps; ++t)
            s += w[p * taps + t];
        out[p] = s;
    }
}

/* out[p * taps ... (p + 1) * taps) = v[p]: one value per (out, in) pair at every kernel position
   of a contiguous weight-shaped gradient (the transpose of odt_kernel_sums), on up to threads
   threads */
void odt_kernel_broadcast(const float *restrict v, float *restrict out, int64_t pairs, int64_t taps, int threads) {
    if (taps == 9) { /* 3x3: the nine stores spelt out, 0.18 ms against the loop's 0.30 on a warm
                        512x512x3x3 gradient */
#pragma omp parallel for schedule(static) num_threads(threads) if (pairs * 9 >= PARALLEL_FROM)
        for (int64_t p = 0; p < pairs; ++p) {
            const float x = v[p];
            float *restrict o = out + 9 * p;
            o[0] = x; o[1] = x; o[2] = x; o[3] = x; o[4] = x; o[5] = x; o[6] = x; o[7] = x; o[8] = x;
        }
        return;
    }
#pragma omp parallel for schedule(static) num_threads(threads) if (pairs * taps >= PARALLEL_FROM)
    for (int64_t p = 0; p < pairs; ++p)
        for (int64_t t = 0; t < taps; ++t)
            out[p * taps + t] = v[p];
}

/* out[b] = sum of row[b ww ... (b + 1) ww), cut at width; the common widths spelt out so that
   the compiler vectorises them */
static void sums_across(const float *restrict row, float *restrict out, int64_t windows, int64_t ww,
                        int64_t width) {
    int64_t whole = width / ww < windows ? width / ww : windows, b = 0;
    if (ww == 2)
        for (; b < whole; ++b)
            out[b] = row[2 * b] + row[2 * b + 1];
    else if (ww == 4)
        for (; b < whole; ++b)
            out[b] = (row[4 * b] + row[4 * b + 1]) + (row[4 * b + 2] + row[4 * b + 3]);
    for (; b < windows; ++b) {
        float s = 0.0f;
        for (int64_t c = b * ww; c < (b + 1) * ww && c < width; ++c)
            s += row[c];
        out[b] = s;
    }
}

/* per plane, in: rows x cols, out: ph x pw; out[a][b] = sum of in over rows [a wh, (a + 1) wh) and
   columns [b ww, (b + 1) ww), cut to the plane (windows reaching beyond it sum what is inside,
   the plane beyond the last window is in none); planes on up to threads threads. torch's NCHW
   sum pooling took 10 ms for a 32x64x56x56 map, 0.2-0.4 ms for 8x512x7x7. */
void odt_window_sums(const float *restrict planes_in, float *restrict planes_out, int64_t planes, int64_t rows,
                     int64_t cols, int64_t wh, int64_t ww, int64_t ph, int64_t pw, int threads) {
    int64_t last_row = ph * wh < rows ? ph * wh : rows, last_col = pw * ww < cols ? pw * ww : cols;
#pragma omp parallel for schedule(static) num_threads(threads) if (planes * rows * cols >= PARALLEL_FROM)
    for (int64_t plane = 0; plane < planes; ++plane) {
        const float *x = planes_in + plane * rows * cols;
        float *out = planes_out + plane * ph * pw, column[last_col];
        for (int64_t a = 0; a < ph; ++a, out += pw) {
            int64_t top = a * wh, bottom = top + wh < last_row ? top + wh : last_row;
            if (top >= last_row) {
                memset(out, 0, pw * sizeof(float));
                continue;
            }
            /* down the window's rows first (contiguous, vectorised), then across each window */
            memcpy(column, x + top * cols, last_col * sizeof(float));
            for (int64_t h = top + 1; h < bottom; ++h)
                for (int64_t c = 0; c < last_col; ++c)
                    column[c] += x[h * cols + c];
            sums_across(column, out, pw, ww, last_col);
        }
    }
}

/* per plane, x: ph x pw in, out: rows x cols; out[h][c] = x[h / wh][c / ww] where that window
   exists, 0 where the input reaches beyond the last window; planes on up to threads threads */
void odt_spread(const float *restrict planes_in, float *restrict planes_out, int64_t planes, int64_t ph,
                int64_t pw, int64_t wh, int64_t ww, int64_t rows, int64_t cols, int threads) {
    int64_t covered = pw * ww < cols ? pw * ww : cols;
#pragma omp parallel for schedule(static) num_threads(threads) if (planes * rows * cols >= PARALLEL_FROM)
    for (int64_t plane = 0; plane < planes; ++plane) {
        const float *x = planes_in + plane * ph * pw;
        float *out = planes_out + plane * rows * cols;
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
