/* The bit-serial B-DCNN kernel in C: quantise + pack + AND/popcount + combine for one image.
 *
 * Built at install as models._bitserial_native (setup.py, optional: without a C compiler the install goes
 * on and models/bitserial.py falls back to numba, saying so at import). Private to models/bitserial.py,
 * which checks dtypes, shapes and contiguity before passing raw addresses here.
 *
 * Layouts (all C-contiguous):
 *   weights  uint64 (R, Wd): row r = n*k + j holds m+ (the bits where the basis is +1) of output channel n,
 *            basis j, in the order (ky, kx, c) for a convolution (channels of one tap contiguous),
 *            zero-padded to Wd words; R padded to a multiple of 8 with zero rows.
 *   planes   uint64 (Q, Wd, Pp): bit plane q of the input of output position p (im2col order (ky, kx, c)),
 *            positions contiguous, Pp = P rounded up to 16 (the padding positions are zero).
 *   xsum     int64 (Pp): sum of the integer input levels of each position (x_int · 1).
 *   acc      int64 (R, Pp): A = sum_q 2^q popc(m+ & b_q); the integer product is Z = 2 A - xsum.
 *
 * Kernel paths, chosen at run time from the CPU's features (or forced by the caller):
 *   "avx512_vpopcntdq": 8 weight rows x 16 positions in 16 zmm accumulators; per plane word one AND,
 *                       one VPOPCNTQ and one VPADDQ per 8 words; the 2^q weights by Horner (acc <<= 1).
 *   "avx2":             4 rows x 8 positions, popcount by nibble lookup (VPSHUFB) + VPSADBW.
 *   "scalar":           portable C (__builtin_popcountll where available).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define BS_X86 1
#include <immintrin.h>
#else
#define BS_X86 0
#endif

/* the pointwise helpers (quantise, combine) compiled for several ISAs, picked by the loader (GNU ifunc) */
#if BS_X86 && defined(__linux__) && defined(__GNUC__) && !defined(__clang__)
#define BS_CLONES __attribute__((target_clones("default", "avx2", "arch=x86-64-v4")))
#else
#define BS_CLONES
#endif

typedef int64_t i64;
typedef uint64_t u64;

enum { ISA_SCALAR = 0, ISA_AVX2 = 1, ISA_AVX512 = 2 };

static int popcount64(u64 x) {
#if defined(__GNUC__) || defined(__clang__)
    return __builtin_popcountll(x);
#else
    x = x - ((x >> 1) & 0x5555555555555555ULL);
    x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0FULL;
    return (int)((x * 0x0101010101010101ULL) >> 56);
#endif
}

static int isa_supported(int isa) {
    if (isa == ISA_SCALAR) return 1;
#if BS_X86
    __builtin_cpu_init();
    if (isa == ISA_AVX2) return __builtin_cpu_supports("avx2");
    if (isa == ISA_AVX512) return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vpopcntdq");
#endif
    return 0;
}

/* ------------------------------------------------------------------------------------ quantise, pack */
/* Levels of x exactly as models.bdcnn.quantization_levels computes them in float32 on the zero-padded map:
 * low/high over the map (and the padding's zeros when there is padding), scale = (high - low) / (2^Q - 1)
 * (1 when 0), level = round-half-even((x - low) / scale) clamped to [0, 2^Q - 1]. x is (C, H, W); levels are
 * written padded and channels last, (H + 2 ph, W + 2 pw, C), the border at the level of 0. */
static float level_of(float v, float lo, float scale, float top) {
    v = (v - lo) / scale;
    v = v < 0.0f ? 0.0f : (v > top ? top : v); /* clamped before rounding: equal after it, and in range */
    return (v + 12582912.0f) - 12582912.0f;    /* + 1.5 * 2^23 leaves no fraction bits: round half to even */
}

BS_CLONES static void quantize_map(const float *x, i64 C, i64 H, i64 W, i64 ph, i64 pw, float lo, float scale,
                                   float top, int32_t *levels) {
    const i64 Wp = W + 2 * pw;
    for (i64 c = 0; c < C; ++c)
        for (i64 y = 0; y < H; ++y) {
            const float *row = x + (c * H + y) * W;
            int32_t *out = levels + ((y + ph) * Wp + pw) * C + c;
            for (i64 i = 0; i < W; ++i) out[i * C] = (int32_t)level_of(row[i], lo, scale, top);
        }
}

static int32_t quantize(const float *x, i64 C, i64 H, i64 W, i64 ph, i64 pw, int bits, int32_t *levels,
                        float *low_out, float *scale_out) {
    const i64 n = C * H * W, Hp = H + 2 * ph, Wp = W + 2 * pw;
    float lo = x[0], hi = x[0];
    for (i64 i = 1; i < n; ++i) {
        lo = x[i] < lo ? x[i] : lo;
        hi = x[i] > hi ? x[i] : hi;
    }
    if (ph || pw) {
        lo = lo < 0.0f ? lo : 0.0f;
        hi = hi > 0.0f ? hi : 0.0f;
    }
    const float top = (float)((1 << bits) - 1);
    volatile float range = hi - lo; /* two float32 roundings, as torch: (high - low) / (2^Q - 1) */
    float scale = range / top;
    if (!(scale > 0.0f)) scale = 1.0f;
    const int32_t pad = (int32_t)level_of(0.0f, lo, scale, top);
    for (i64 y = 0; y < Hp; ++y)
        for (i64 xx = 0; xx < Wp; ++xx)
            if (y < ph || y >= ph + H || xx < pw || xx >= pw + W)
                for (i64 c = 0; c < C; ++c) levels[(y * Wp + xx) * C + c] = pad;
    quantize_map(x, C, H, W, ph, pw, lo, scale, top, levels);
    *low_out = lo;
    *scale_out = scale;
    return pad;
}

/* Bit q of up to 64 levels as one word (bit c of the word = bit q of levels[c]). */
static void pack_word(const int32_t *lv, i64 count, int bits, u64 *words, i64 stride) {
    u64 word[16] = {0};
    for (i64 c = 0; c < count; ++c) {
        const u64 v = (u64)lv[c];
        for (int q = 0; q < bits; ++q) word[q] |= ((v >> q) & 1) << c;
    }
    for (int q = 0; q < bits; ++q) words[q * stride] = word[q];
}

#if BS_X86
__attribute__((target("avx512f"))) static void pack_word_avx512(const int32_t *lv, i64 count, int bits, u64 *words,
                                                                  i64 stride) {
    __m512i v[4];
    for (int i = 0; i < 4; ++i) {
        const i64 left = count - 16 * i;
        const __mmask16 m = left >= 16 ? (__mmask16)0xffff : (left > 0 ? (__mmask16)((1u << left) - 1) : 0);
        v[i] = _mm512_maskz_loadu_epi32(m, lv + 16 * i);
    }
    for (int q = 0; q < bits; ++q) {
        const __m512i bit = _mm512_set1_epi32(1 << q);
        words[q * stride] = (u64)_mm512_test_epi32_mask(v[0], bit) | ((u64)_mm512_test_epi32_mask(v[1], bit) << 16) |
                            ((u64)_mm512_test_epi32_mask(v[2], bit) << 32) |
                            ((u64)_mm512_test_epi32_mask(v[3], bit) << 48);
    }
}
#endif

/* OR len bits of src from bit soff into dst from bit doff (src readable one word past its last bit). */
static void copy_bits(u64 *dst, i64 doff, const u64 *src, i64 soff, i64 len) {
    while (len > 0) {
        const i64 n = len < 64 ? len : 64, i = soff >> 6, j = doff >> 6;
        const int s = (int)(soff & 63), t = (int)(doff & 63);
        u64 v = src[i] >> s;
        if (s) v |= src[i + 1] << (64 - s);
        if (n < 64) v &= ((u64)1 << n) - 1;
        dst[j] |= v << t;
        if (t && t + n > 64) dst[j + 1] |= v >> (64 - t);
        soff += n;
        doff += n;
        len -= n;
    }
}

/* Bit planes of a convolution's input, im2col in (ky, kx, c) order, from padded channels-last levels
 * (Hp, Wp, C). Each padded row is first packed as one bit string of its Wp * C levels per plane, so that the
 * kw taps of a kernel row (dilation 1) are one contiguous run of kw * C bits. planes (Q, Wd, Pp) and xsum
 * (Pp, = sum of the position's levels = sum_q 2^q popcount(plane q)) are written whole (zeros beyond P). */
static int pack_conv(int isa, const int32_t *levels, i64 C, i64 Hp, i64 Wp, i64 kh, i64 kw, i64 sh, i64 sw, i64 dh,
                     i64 dw, i64 OH, i64 OW, int bits, i64 Wd, i64 Pp, u64 *planes, i64 *xsum) {
    const i64 row_len = Wp * C, RW = (row_len + 63) / 64 + 1; /* + 1: copy_bits reads one word ahead */
    u64 *rows = (u64 *)calloc((size_t)(bits * Hp * RW), sizeof(u64)); /* (Q, Hp, RW) */
    u64 *column = (u64 *)malloc((size_t)(bits * Wd) * sizeof(u64));   /* one position's planes (Q, Wd) */
    if (!rows || !column) {
        free(rows);
        free(column);
        return -1;
    }
    const i64 plane_stride = Hp * RW;
    for (i64 y = 0; y < Hp; ++y) {
        const int32_t *lv = levels + y * row_len;
        for (i64 i = 0; 64 * i < row_len; ++i) {
            const i64 count = row_len - 64 * i < 64 ? row_len - 64 * i : 64;
#if BS_X86
            if (isa == ISA_AVX512) {
                pack_word_avx512(lv + 64 * i, count, bits, rows + y * RW + i, plane_stride);
                continue;
            }
#endif
            pack_word(lv + 64 * i, count, bits, rows + y * RW + i, plane_stride);
        }
    }
    for (i64 p = OH * OW; p < Pp; ++p) { /* the padding positions: zero */
        xsum[p] = 0;
        for (i64 t = 0; t < bits * Wd; ++t) planes[t * Pp + p] = 0;
    }
    for (i64 oy = 0; oy < OH; ++oy)
        for (i64 ox = 0; ox < OW; ++ox) {
            const i64 p = oy * OW + ox;
            memset(column, 0, (size_t)(bits * Wd) * sizeof(u64));
            for (int q = 0; q < bits; ++q) {
                u64 *dst = column + (i64)q * Wd;
                i64 offset = 0;
                for (i64 ky = 0; ky < kh; ++ky) {
                    const u64 *row = rows + q * plane_stride + (oy * sh + ky * dh) * RW;
                    if (dw == 1) {
                        copy_bits(dst, offset, row, ox * sw * C, kw * C);
                        offset += kw * C;
                    } else
                        for (i64 kx = 0; kx < kw; ++kx, offset += C) copy_bits(dst, offset, row, (ox * sw + kx * dw) * C, C);
                }
            }
            i64 sum = 0;
            for (int q = 0; q < bits; ++q) {
                i64 ones = 0;
                for (i64 t = 0; t < Wd; ++t) ones += popcount64(column[(i64)q * Wd + t]);
                sum += ones << q;
            }
            for (i64 t = 0; t < bits * Wd; ++t) planes[t * Pp + p] = column[t];
            xsum[p] = sum;
        }
    free(rows);
    free(column);
    return 0;
}

/* Bit planes of a linear layer's input: levels (D,) -> planes (Q, Wd), xsum (1). */
static void pack_linear(const int32_t *levels, i64 D, int bits, i64 Wd, u64 *planes, i64 *xsum) {
    memset(planes, 0, (size_t)(bits * Wd) * sizeof(u64));
    i64 sum = 0;
    for (i64 d = 0; d < D; ++d) {
        const u64 v = (u64)levels[d];
        sum += (i64)v;
        for (int q = 0; q < bits; ++q) planes[q * Wd + (d >> 6)] |= ((v >> q) & 1) << (d & 63);
    }
    xsum[0] = sum;
}

/* ------------------------------------------------------------------------------------ kernels: conv */
/* Weights of a convolution are blocked (R/8, Wd, 8): the 8 rows' words of one t share a cache line, so
 * word t of row r is w[((r / 8) * Wd + t) * 8 + r % 8]. One call computes the 16 positions p0..p0+15 of
 * every row into acc[r * stride + i]. */
#define WBLK(w, Wd, r, t) ((w)[(((r) >> 3) * (Wd) + (t)) * 8 + ((r) & 7)])

static void conv_block_scalar(const u64 *w, i64 R, i64 Wd, const u64 *x, int bits, i64 Pp, i64 p0, i64 *acc,
                              i64 stride) {
    for (i64 r = 0; r < R; ++r)
        for (i64 i = 0; i < 16; ++i) {
            i64 a = 0;
            for (int q = bits - 1; q >= 0; --q) {
                i64 s = 0;
                for (i64 t = 0; t < Wd; ++t) s += popcount64(WBLK(w, Wd, r, t) & x[((i64)q * Wd + t) * Pp + p0 + i]);
                a = 2 * a + s;
            }
            acc[r * stride + i] = a;
        }
}

#if BS_X86
__attribute__((target("avx512f,avx512vpopcntdq"))) static void conv_block_avx512(const u64 *w, i64 R, i64 Wd,
                                                                                 const u64 *x, int bits, i64 Pp,
                                                                                 i64 p0, i64 *acc, i64 stride) {
    for (i64 r0 = 0; r0 < R; r0 += 8) {
        const u64 *wr = w + r0 * Wd; /* (Wd, 8) */
        __m512i a0[8], a1[8];
#pragma GCC unroll 8
        for (int r = 0; r < 8; ++r) a0[r] = a1[r] = _mm512_setzero_si512();
        for (int q = bits - 1; q >= 0; --q) {
#pragma GCC unroll 8
            for (int r = 0; r < 8; ++r) {
                a0[r] = _mm512_slli_epi64(a0[r], 1);
                a1[r] = _mm512_slli_epi64(a1[r], 1);
            }
            const u64 *xq = x + (i64)q * Wd * Pp + p0;
            for (i64 t = 0; t < Wd; ++t) {
                const __m512i x0 = _mm512_loadu_si512((const void *)(xq + t * Pp));
                const __m512i x1 = _mm512_loadu_si512((const void *)(xq + t * Pp + 8));
#pragma GCC unroll 8
                for (int r = 0; r < 8; ++r) {
                    const __m512i wv = _mm512_set1_epi64((long long)wr[t * 8 + r]);
                    a0[r] = _mm512_add_epi64(a0[r], _mm512_popcnt_epi64(_mm512_and_si512(wv, x0)));
                    a1[r] = _mm512_add_epi64(a1[r], _mm512_popcnt_epi64(_mm512_and_si512(wv, x1)));
                }
            }
        }
#pragma GCC unroll 8
        for (int r = 0; r < 8; ++r) {
            _mm512_storeu_si512((void *)(acc + (r0 + r) * stride), a0[r]);
            _mm512_storeu_si512((void *)(acc + (r0 + r) * stride + 8), a1[r]);
        }
    }
}

__attribute__((target("avx2"))) static inline __m256i popcount256(__m256i v) {
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1, 2,
                                         2, 3, 2, 3, 3, 4);
    const __m256i nibble = _mm256_set1_epi8(0x0f);
    const __m256i lo = _mm256_and_si256(v, nibble), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), nibble);
    const __m256i bytes = _mm256_add_epi8(_mm256_shuffle_epi8(lut, lo), _mm256_shuffle_epi8(lut, hi));
    return _mm256_sad_epu8(bytes, _mm256_setzero_si256());
}

__attribute__((target("avx2"))) static void conv_block_avx2(const u64 *w, i64 R, i64 Wd, const u64 *x, int bits,
                                                            i64 Pp, i64 p0, i64 *acc, i64 stride) {
    for (i64 r0 = 0; r0 < R; r0 += 4)
        for (i64 h = 0; h < 16; h += 8) {
            __m256i a0[4], a1[4];
#pragma GCC unroll 4
            for (int r = 0; r < 4; ++r) a0[r] = a1[r] = _mm256_setzero_si256();
            for (int q = bits - 1; q >= 0; --q) {
#pragma GCC unroll 4
                for (int r = 0; r < 4; ++r) {
                    a0[r] = _mm256_slli_epi64(a0[r], 1);
                    a1[r] = _mm256_slli_epi64(a1[r], 1);
                }
                const u64 *xq = x + (i64)q * Wd * Pp + p0 + h;
                for (i64 t = 0; t < Wd; ++t) {
                    const __m256i x0 = _mm256_loadu_si256((const __m256i *)(xq + t * Pp));
                    const __m256i x1 = _mm256_loadu_si256((const __m256i *)(xq + t * Pp + 4));
#pragma GCC unroll 4
                    for (int r = 0; r < 4; ++r) {
                        const __m256i wv = _mm256_set1_epi64x((long long)WBLK(w, Wd, r0 + r, t));
                        a0[r] = _mm256_add_epi64(a0[r], popcount256(_mm256_and_si256(wv, x0)));
                        a1[r] = _mm256_add_epi64(a1[r], popcount256(_mm256_and_si256(wv, x1)));
                    }
                }
            }
#pragma GCC unroll 4
            for (int r = 0; r < 4; ++r) {
                _mm256_storeu_si256((__m256i *)(acc + (r0 + r) * stride + h), a0[r]);
                _mm256_storeu_si256((__m256i *)(acc + (r0 + r) * stride + h + 4), a1[r]);
            }
        }
}
#endif

/* ------------------------------------------------------------------------------------ kernels: linear */
static void linear_scalar(const u64 *w, i64 R, i64 Wd, const u64 *x, int bits, i64 *acc) {
    for (i64 r = 0; r < R; ++r) {
        i64 a = 0;
        for (int q = bits - 1; q >= 0; --q) {
            i64 s = 0;
            for (i64 t = 0; t < Wd; ++t) s += popcount64(w[r * Wd + t] & x[(i64)q * Wd + t]);
            a = 2 * a + s;
        }
        acc[r] = a;
    }
}

#if BS_X86
__attribute__((target("avx512f,avx512vpopcntdq"))) static void linear_avx512(const u64 *w, i64 R, i64 Wd,
                                                                             const u64 *x, int bits, i64 *acc) {
    const i64 full = Wd & ~(i64)7;
    const __mmask8 tail = (__mmask8)((1u << (Wd - full)) - 1);
    for (i64 r = 0; r < R; ++r) {
        const u64 *wr = w + r * Wd;
        __m512i a = _mm512_setzero_si512();
        for (int q = bits - 1; q >= 0; --q) {
            const u64 *xq = x + (i64)q * Wd;
            a = _mm512_slli_epi64(a, 1);
            __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
            i64 t = 0;
            for (; t + 16 <= full; t += 16) {
                s0 = _mm512_add_epi64(s0, _mm512_popcnt_epi64(_mm512_and_si512(_mm512_loadu_si512(wr + t),
                                                                                 _mm512_loadu_si512(xq + t))));
                s1 = _mm512_add_epi64(s1, _mm512_popcnt_epi64(_mm512_and_si512(_mm512_loadu_si512(wr + t + 8),
                                                                                 _mm512_loadu_si512(xq + t + 8))));
            }
            for (; t < full; t += 8)
                s0 = _mm512_add_epi64(s0, _mm512_popcnt_epi64(_mm512_and_si512(_mm512_loadu_si512(wr + t),
                                                                                 _mm512_loadu_si512(xq + t))));
            if (tail)
                s1 = _mm512_add_epi64(s1, _mm512_popcnt_epi64(_mm512_and_si512(
                                              _mm512_maskz_loadu_epi64(tail, wr + full),
                                              _mm512_maskz_loadu_epi64(tail, xq + full))));
            a = _mm512_add_epi64(a, _mm512_add_epi64(s0, s1));
        }
        acc[r] = _mm512_reduce_add_epi64(a);
    }
}

__attribute__((target("avx2"))) static void linear_avx2(const u64 *w, i64 R, i64 Wd, const u64 *x, int bits,
                                                        i64 *acc) {
    const i64 full = Wd & ~(i64)3;
    for (i64 r = 0; r < R; ++r) {
        const u64 *wr = w + r * Wd;
        i64 a = 0;
        for (int q = bits - 1; q >= 0; --q) {
            const u64 *xq = x + (i64)q * Wd;
            __m256i s = _mm256_setzero_si256();
            for (i64 t = 0; t < full; t += 4)
                s = _mm256_add_epi64(s, popcount256(_mm256_and_si256(_mm256_loadu_si256((const __m256i *)(wr + t)),
                                                                     _mm256_loadu_si256((const __m256i *)(xq + t)))));
            i64 lanes[4];
            _mm256_storeu_si256((__m256i *)lanes, s);
            i64 sum = lanes[0] + lanes[1] + lanes[2] + lanes[3];
            for (i64 t = full; t < Wd; ++t) sum += popcount64(wr[t] & xq[t]);
            a = 2 * a + sum;
        }
        acc[r] = a;
    }
}
#endif

static void conv_block(int isa, const u64 *w, i64 R, i64 Wd, const u64 *x, int bits, i64 Pp, i64 p0, i64 *acc,
                       i64 stride) {
#if BS_X86
    if (isa == ISA_AVX512) return conv_block_avx512(w, R, Wd, x, bits, Pp, p0, acc, stride);
    if (isa == ISA_AVX2) return conv_block_avx2(w, R, Wd, x, bits, Pp, p0, acc, stride);
#endif
    (void)isa;
    conv_block_scalar(w, R, Wd, x, bits, Pp, p0, acc, stride);
}

/* A (R, Pp) of every position. */
static void run_conv(int isa, const u64 *w, i64 R, i64 Wd, const u64 *x, int bits, i64 Pp, i64 *acc) {
    for (i64 p0 = 0; p0 < Pp; p0 += 16) conv_block(isa, w, R, Wd, x, bits, Pp, p0, acc + p0, Pp);
}

static void run_linear(int isa, const u64 *w, i64 R, i64 Wd, const u64 *x, int bits, i64 *acc) {
#if BS_X86
    if (isa == ISA_AVX512) return linear_avx512(w, R, Wd, x, bits, acc);
    if (isa == ISA_AVX2) return linear_avx2(w, R, Wd, x, bits, acc);
#endif
    (void)isa;
    linear_scalar(w, R, Wd, x, bits, acc);
}

/* ------------------------------------------------------------------------------------ combine */
/* y[n * ystride + p] = scale * sum_j c[n, j] (2 acc[(n*k + j) * stride + p] - xsum[p]) + offset * offw[n] + bias[n]
 * for p < P, in double, computed as 2 scale sum_j c[n, j] acc[..] - scale xsum[p] sum_j c[n, j] + offset offw[n]
 * + bias[n]. scratch: 2 P doubles. */
BS_CLONES static void combine(const i64 *acc, i64 stride, const i64 *xsum, const double *coef, i64 k,
                              const double *offw, const double *bias, double scale, double offset, i64 N, i64 P,
                              float *y, i64 ystride, double *scratch) {
    double *sum = scratch, *xs = scratch + P;
    for (i64 p = 0; p < P; ++p) xs[p] = (double)xsum[p];
    for (i64 n = 0; n < N; ++n) {
        double csum = 0.0;
        for (i64 p = 0; p < P; ++p) sum[p] = 0.0;
        for (i64 j = 0; j < k; ++j) {
            const double c = coef[n * k + j];
            const i64 *a = acc + (n * k + j) * stride;
            csum += c;
            for (i64 p = 0; p < P; ++p) sum[p] += c * (double)a[p];
        }
        const double b = offset * offw[n] + (bias ? bias[n] : 0.0), twice = 2.0 * scale, cx = scale * csum;
        for (i64 p = 0; p < P; ++p) y[n * ystride + p] = (float)(twice * sum[p] - cx * xs[p] + b);
    }
}

/* ------------------------------------------------------------------------------------ Python bindings */
#define PTR(type, addr) ((type *)(uintptr_t)(addr))

static int check_isa(int isa) {
    if (isa < ISA_SCALAR || isa > ISA_AVX512 || !isa_supported(isa)) {
        PyErr_Format(PyExc_ValueError, "kernel path %d is not supported by this CPU/build", isa);
        return 0;
    }
    return 1;
}

static PyObject *py_supported(PyObject *self, PyObject *args) {
    int isa;
    if (!PyArg_ParseTuple(args, "i", &isa)) return NULL;
    return PyBool_FromLong(isa_supported(isa));
}

static PyObject *py_quantize(PyObject *self, PyObject *args) {
    Py_ssize_t x, C, H, W, ph, pw, levels;
    int bits;
    if (!PyArg_ParseTuple(args, "nnnnnnin", &x, &C, &H, &W, &ph, &pw, &bits, &levels)) return NULL;
    float low, scale;
    int32_t pad;
    Py_BEGIN_ALLOW_THREADS pad = quantize(PTR(const float, x), C, H, W, ph, pw, bits, PTR(int32_t, levels), &low,
                                          &scale);
    Py_END_ALLOW_THREADS return Py_BuildValue("iff", (int)pad, (double)low, (double)scale);
}

static PyObject *py_pack_conv(PyObject *self, PyObject *args) {
    Py_ssize_t levels, C, Hp, Wp, kh, kw, sh, sw, dh, dw, OH, OW, Wd, Pp, planes, xsum;
    int isa, bits;
    if (!PyArg_ParseTuple(args, "innnnnnnnnnnninnnn", &isa, &levels, &C, &Hp, &Wp, &kh, &kw, &sh, &sw, &dh, &dw, &OH,
                          &OW, &bits, &Wd, &Pp, &planes, &xsum))
        return NULL;
    if (!check_isa(isa)) return NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = pack_conv(isa, PTR(const int32_t, levels), C, Hp, Wp, kh, kw, sh, sw, dh, dw, OH, OW,
                                          bits, Wd, Pp, PTR(u64, planes), PTR(i64, xsum));
    Py_END_ALLOW_THREADS if (rc) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *py_pack_linear(PyObject *self, PyObject *args) {
    Py_ssize_t levels, D, Wd, planes, xsum;
    int bits;
    if (!PyArg_ParseTuple(args, "nninnn", &levels, &D, &bits, &Wd, &planes, &xsum)) return NULL;
    pack_linear(PTR(const int32_t, levels), D, bits, Wd, PTR(u64, planes), PTR(i64, xsum));
    Py_RETURN_NONE;
}

static PyObject *py_kernel(PyObject *self, PyObject *args) {
    int isa, bits;
    Py_ssize_t w, R, Wd, x, Pp, acc;
    if (!PyArg_ParseTuple(args, "innnninn", &isa, &w, &R, &Wd, &x, &bits, &Pp, &acc)) return NULL;
    if (!check_isa(isa)) return NULL;
    Py_BEGIN_ALLOW_THREADS if (Pp == 0) run_linear(isa, PTR(const u64, w), R, Wd, PTR(const u64, x), bits,
                                                   PTR(i64, acc));
    else run_conv(isa, PTR(const u64, w), R, Wd, PTR(const u64, x), bits, Pp, PTR(i64, acc));
    Py_END_ALLOW_THREADS Py_RETURN_NONE;
}

static PyObject *py_combine(PyObject *self, PyObject *args) {
    Py_ssize_t acc, Pp, xsum, coef, k, offw, bias, N, P, y;
    double scale, offset;
    if (!PyArg_ParseTuple(args, "nnnnnnnddnnn", &acc, &Pp, &xsum, &coef, &k, &offw, &bias, &scale, &offset, &N, &P,
                          &y))
        return NULL;
    double *scratch = (double *)malloc((size_t)(2 * P) * sizeof(double));
    if (!scratch) return PyErr_NoMemory();
    Py_BEGIN_ALLOW_THREADS combine(PTR(const i64, acc), Pp, PTR(const i64, xsum), PTR(const double, coef), k,
                                   PTR(const double, offw), bias ? PTR(const double, bias) : NULL, scale, offset, N,
                                   P, PTR(float, y), P, scratch);
    Py_END_ALLOW_THREADS free(scratch);
    Py_RETURN_NONE;
}

/* One image through a convolution: quantise, pack, kernel, combine (scratch allocated here). */
static PyObject *py_conv_forward(PyObject *self, PyObject *args) {
    int isa, bits;
    Py_ssize_t x, C, H, W, ph, pw, kh, kw, sh, sw, dh, dw, OH, OW, w, R, Wd, coef, k, offw, bias, N, y;
    if (!PyArg_ParseTuple(args, "innnnnnnnnnnnnninnnnnnnnn", &isa, &x, &C, &H, &W, &ph, &pw, &kh, &kw, &sh, &sw, &dh,
                          &dw, &OH, &OW, &bits, &w, &R, &Wd, &coef, &k, &offw, &bias, &N, &y))
        return NULL;
    if (!check_isa(isa)) return NULL;
    const i64 P = OH * OW, Pp = (P + 15) & ~(i64)15;
    int32_t *levels = (int32_t *)malloc((size_t)(C * (H + 2 * ph) * (W + 2 * pw)) * sizeof(int32_t));
    u64 *planes = (u64 *)malloc((size_t)(bits * Wd * Pp) * sizeof(u64));
    i64 *xsum = (i64 *)malloc((size_t)Pp * sizeof(i64));
    i64 *acc = (i64 *)malloc((size_t)(R * 16) * sizeof(i64)); /* one block of 16 positions, every row */
    int rc = !(levels && planes && xsum && acc);
    if (!rc) {
        Py_BEGIN_ALLOW_THREADS float low, scale;
        double scratch[32];
        quantize(PTR(const float, x), C, H, W, ph, pw, bits, levels, &low, &scale);
        rc = pack_conv(isa, levels, C, H + 2 * ph, W + 2 * pw, kh, kw, sh, sw, dh, dw, OH, OW, bits, Wd, Pp, planes,
                       xsum);
        for (i64 p0 = 0; !rc && p0 < P; p0 += 16) { /* the block's A stays in cache until it is combined */
            conv_block(isa, PTR(const u64, w), R, Wd, planes, bits, Pp, p0, acc, 16);
            combine(acc, 16, xsum + p0, PTR(const double, coef), k, PTR(const double, offw),
                    bias ? PTR(const double, bias) : NULL, (double)scale, (double)low, N, P - p0 < 16 ? P - p0 : 16,
                    PTR(float, y) + p0, P, scratch);
        }
        Py_END_ALLOW_THREADS
    }
    free(levels);
    free(planes);
    free(xsum);
    free(acc);
    if (rc) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* One input vector through a linear layer. */
static PyObject *py_linear_forward(PyObject *self, PyObject *args) {
    int isa, bits;
    Py_ssize_t x, D, w, R, Wd, coef, k, offw, bias, N, y;
    if (!PyArg_ParseTuple(args, "inninnnnnnnnn", &isa, &x, &D, &bits, &w, &R, &Wd, &coef, &k, &offw, &bias, &N, &y))
        return NULL;
    if (!check_isa(isa)) return NULL;
    int32_t *levels = (int32_t *)malloc((size_t)D * sizeof(int32_t));
    u64 *planes = (u64 *)malloc((size_t)(bits * Wd) * sizeof(u64));
    i64 *acc = (i64 *)malloc((size_t)R * sizeof(i64));
    int rc = !(levels && planes && acc);
    if (!rc) {
        Py_BEGIN_ALLOW_THREADS float low, scale;
        i64 xsum;
        quantize(PTR(const float, x), 1, 1, D, 0, 0, bits, levels, &low, &scale);
        pack_linear(levels, D, bits, Wd, planes, &xsum);
        run_linear(isa, PTR(const u64, w), R, Wd, planes, bits, acc);
        double scratch[2];
        combine(acc, 1, &xsum, PTR(const double, coef), k, PTR(const double, offw),
                bias ? PTR(const double, bias) : NULL, (double)scale, (double)low, N, 1, PTR(float, y), 1, scratch);
        Py_END_ALLOW_THREADS
    }
    free(levels);
    free(planes);
    free(acc);
    if (rc) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"supported", py_supported, METH_VARARGS, "supported(isa) -> bool: this CPU runs kernel path isa (0, 1, 2)"},
    {"quantize", py_quantize, METH_VARARGS, "quantize(x, C, H, W, ph, pw, bits, levels) -> (pad_level, low, scale); levels (H+2ph, W+2pw, C)"},
    {"pack_conv", py_pack_conv, METH_VARARGS, "pack_conv(isa, levels (Hp, Wp, C), C, Hp, Wp, kh, kw, sh, sw, dh, dw, OH, OW, bits, Wd, Pp, planes, xsum)"},
    {"pack_linear", py_pack_linear, METH_VARARGS, "pack_linear(levels, D, bits, Wd, planes, xsum)"},
    {"kernel", py_kernel, METH_VARARGS, "kernel(isa, w, R, Wd, planes, bits, Pp, acc); Pp = 0: linear"},
    {"combine", py_combine, METH_VARARGS, "combine(acc, Pp, xsum, coef, k, offw, bias, scale, offset, N, P, y)"},
    {"conv_forward", py_conv_forward, METH_VARARGS, "one image through a convolution"},
    {"linear_forward", py_linear_forward, METH_VARARGS, "one vector through a linear layer"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_bitserial_native",
                                    "Bit-serial B-DCNN kernel (see models/bitserial.py).", -1, methods};

PyMODINIT_FUNC PyInit__bitserial_native(void) { return PyModule_Create(&module); }
