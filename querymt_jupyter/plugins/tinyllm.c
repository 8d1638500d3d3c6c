/*
 * tinyllm.c - a small transformer language model as a generation B QueryMT plugin.
 *
 * A Llama-style decoder (RMSNorm, rotary embeddings, multi-head attention with grouped KV heads and a
 * KV cache, SwiGLU) that reads llama2.c checkpoints (legacy fp32, fp32 "v1" and int8 "v2") and their
 * tokenizer.bin. One source, two builds: natively it splits matrix rows over threads; in Wasm it uses
 * 128-bit SIMD (-msimd128 -mrelaxed-simd) and reads the checkpoint through a directory plugins.toml grants.
 *
 * Both builds compute bit-identical logits: float arithmetic is written with generic vector types whose
 * lanes and reduction order are fixed, no fused multiply-add (-ffp-contract=off), threads split rows
 * (never a sum), integer dot products are exact, and exp/sin/cos are our own (libm differs by target).
 * So a seeded generation is the same text natively and in the sandbox.
 *
 *   chat, chat_stream  continue the conversation's text (a base model: the messages are joined by
 *                      newlines and the reply continues the last one), streaming token by token
 *   complete           continue req.prompt
 *   embed              mean of the final (normalised) hidden states, L2-normalised
 *   tokenize, logits   the tokenizer's ids and the raw logits, for tests against a reference
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime, fileno, strdup under -std=c11 */
#include "qmt_json.h"
#include "querymt_plugin.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#if defined(QMT_TARGET_NATIVE) && !defined(_WIN32)
#define TINYLLM_THREADS 1
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>
#endif
#if defined(__wasm_simd128__)
#include <wasm_simd128.h>
#elif defined(__AVX2__)
#include <immintrin.h>
#endif

#define DEFAULT_MAX_TOKENS 128
#define MAX_THREADS 16

/* ---- deterministic math: the same bits on every target -------------------------------------------- */

/* e^x in double precision, for the rotary tables built at load: 2^k * e^r with |r| <= ln2/2, e^r by its
   Taylor polynomial to r^10 (error < 1e-10), 2^k written straight into a double's exponent bits. */
static double det_exp(double x) {
    if (x < -700) return 0;
    if (x > 700) x = 700;
    const double ln2 = 0.69314718055994530942;
    double kf = x / ln2;
    int64_t k = (int64_t)(kf < 0 ? kf - 0.5 : kf + 0.5);
    double r = x - (double)k * ln2;
    double p = 1.0 / 3628800;
    static const double inverse_factorials[] = {1.0 / 362880, 1.0 / 40320, 1.0 / 5040, 1.0 / 720, 1.0 / 120,
                                                1.0 / 24,     1.0 / 6,     0.5,        1.0,       1.0};
    for (size_t i = 0; i < sizeof inverse_factorials / sizeof *inverse_factorials; i++) p = p * r + inverse_factorials[i];
    uint64_t bits = (uint64_t)(k + 1023) << 52;
    double scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* sin and cos of x >= 0 (rotary angles), by reduction to [-pi, pi] and their series. */
static void det_sincos(double x, double *s, double *c) {
    const double two_pi = 6.28318530717958647692;
    x -= two_pi * (double)(long)(x / two_pi + 0.5);
    double term_s = x, term_c = 1, sum_s = x, sum_c = 1, x2 = x * x;
    for (int i = 1; i < 14; i++) {
        term_s *= -x2 / ((2 * i) * (2 * i + 1));
        term_c *= -x2 / ((2 * i - 1) * (2 * i));
        sum_s += term_s;
        sum_c += term_c;
    }
    *s = sum_s;
    *c = sum_c;
}

/* 10000^(-e) for 0 <= e < 1, as e^(-e ln 10000). */
static double rope_frequency(int pair, int head_size) {
    return det_exp(-((double)(2 * pair) / head_size) * 9.21034037197618273607);
}

/* ---- kernels ---------------------------------------------------------------------------------------- */

typedef float f32x8 __attribute__((vector_size(32)));
typedef int32_t i32x8 __attribute__((vector_size(32)));
typedef int8_t i8x8 __attribute__((vector_size(8)));

static inline f32x8 load8(const float *p) {
    f32x8 v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void store8(float *p, f32x8 v) { memcpy(p, &v, sizeof v); }

/* Lane-wise max and min by compare and select, as maxps and Wasm's f32x4.pmax do it: C's fmax (what
   __builtin_elementwise_max means) has no Wasm instruction and becomes a libm call per lane. */
static inline f32x8 max8(f32x8 a, f32x8 b) {
    i32x8 pick = a > b;
    return (f32x8)((pick & (i32x8)a) | (~pick & (i32x8)b));
}

static inline f32x8 min8(f32x8 a, f32x8 b) {
    i32x8 pick = a < b;
    return (f32x8)((pick & (i32x8)a) | (~pick & (i32x8)b));
}

/* e^x in eight lanes, for softmax and SiLU: 2^k * e^r with k = round(x / ln2) (by the 1.5 * 2^23 trick, so
   no float-to-int conversion), r reduced in two steps (Cody and Waite) and e^r by a degree-7 polynomial
   (relative error ~5e-9, below float precision). Only +, -, *, min, max and bit moves: the same bits on
   every target. */
static inline f32x8 exp8(f32x8 x) {
    const f32x8 lo = {-87.0f, -87.0f, -87.0f, -87.0f, -87.0f, -87.0f, -87.0f, -87.0f};
    const f32x8 hi = {88.0f, 88.0f, 88.0f, 88.0f, 88.0f, 88.0f, 88.0f, 88.0f};
    x = min8(max8(x, lo), hi);
    const float magic = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer in the low mantissa bits */
    f32x8 t = x * 1.44269504088896341f + magic;
    f32x8 k = t - magic;
    f32x8 r = (x - k * 0.693145751953125f) - k * 1.42860682030941723e-6f;
    f32x8 p = r * (1.0f / 5040) + (1.0f / 720);
    p = p * r + (1.0f / 120);
    p = p * r + (1.0f / 24);
    p = p * r + (1.0f / 6);
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    i32x8 bits;
    memcpy(&bits, &t, sizeof bits);
    i32x8 exponent = (bits - 0x4B400000 + 127) << 23; /* t's mantissa holds k: 2^k as float bits */
    f32x8 scale;
    memcpy(&scale, &exponent, sizeof scale);
    return p * scale;
}

/* Loads up to eight floats, zero-padding a short tail (so tails go through the same lanes). */
static inline f32x8 load_upto8(const float *p, int n) {
    if (n >= 8) return load8(p);
    float padded[8] = {0};
    memcpy(padded, p, (size_t)n * sizeof(float));
    return load8(padded);
}

static inline void store_upto8(float *p, f32x8 v, int n) {
    float lanes[8];
    store8(lanes, v);
    memcpy(p, lanes, (size_t)(n < 8 ? n : 8) * sizeof(float));
}

static inline float sum8(f32x8 v) { return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7])); }

/* a . b in one fixed order: eight lane sums over blocks of 8, a fixed reduction tree, then the tail.
   Every dot product of the engine uses exactly this order, so a result never depends on the target or
   on how rows were split between threads. (Blocking four rows to share the loads of x measured slower
   in both builds.) */
static float dot_f32(const float *a, const float *b, int n) {
    f32x8 acc = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8) acc += load8(a + i) * load8(b + i);
    float sum = sum8(acc);
    for (; i < n; i++) sum += a[i] * b[i];
    return sum;
}

typedef float f32x4 __attribute__((vector_size(16)));
typedef int32_t i32x4 __attribute__((vector_size(16)));

/* Four lane sums of the int8 products a[i] * b[i], i < n (a multiple of 16): lane k adds the products at
   positions 4k..4k+3 of every block of 16. Those are the lanes of x86's vpmaddubsw then vpmaddwd and of
   Wasm's relaxed dot product (q8_by_group), so every build computes the same four (exact) integers. */
static inline i32x4 dot_i8_lanes(const int8_t *a, const int8_t *b, int n) {
    i32x4 lanes;
#if defined(__wasm_simd128__)
    /* pairs of products in each half of a block, then neighbouring pairs added across the two halves */
    v128_t lo = wasm_i32x4_splat(0), hi = lo;
    for (int i = 0; i < n; i += 16) {
        v128_t x = wasm_v128_load(a + i), y = wasm_v128_load(b + i);
        lo = wasm_i32x4_add(lo, wasm_i32x4_dot_i16x8(wasm_i16x8_extend_low_i8x16(x), wasm_i16x8_extend_low_i8x16(y)));
        hi = wasm_i32x4_add(hi, wasm_i32x4_dot_i16x8(wasm_i16x8_extend_high_i8x16(x), wasm_i16x8_extend_high_i8x16(y)));
    }
    v128_t sum = wasm_i32x4_add(wasm_i32x4_shuffle(lo, hi, 0, 2, 4, 6), wasm_i32x4_shuffle(lo, hi, 1, 3, 5, 7));
    memcpy(&lanes, &sum, sizeof lanes);
#elif defined(__AVX2__)
    /* vpmaddubsw multiplies unsigned by signed bytes: |a| (128 fits) by b with a's sign; the pairs of
       products (at most 2 * 128 * 127) cannot saturate its 16 bits */
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i acc = _mm256_setzero_si256();
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256i x = _mm256_loadu_si256((const __m256i *)(a + i)), y = _mm256_loadu_si256((const __m256i *)(b + i));
        __m256i pairs = _mm256_maddubs_epi16(_mm256_abs_epi8(x), _mm256_sign_epi8(y, x));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, ones));
    }
    __m128i sum = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
    if (i < n) {
        __m128i x = _mm_loadu_si128((const __m128i *)(a + i)), y = _mm_loadu_si128((const __m128i *)(b + i));
        __m128i pairs = _mm_maddubs_epi16(_mm_abs_epi8(x), _mm_sign_epi8(y, x));
        sum = _mm_add_epi32(sum, _mm_madd_epi16(pairs, _mm256_castsi256_si128(ones)));
    }
    memcpy(&lanes, &sum, sizeof lanes);
#else
    lanes = (i32x4){0};
    for (int i = 0; i < n; i += 16)
        for (int k = 0; k < 4; k++) {
            const int8_t *x = a + i + 4 * k, *y = b + i + 4 * k;
            lanes[k] += x[0] * y[0] + x[1] * y[1] + x[2] * y[2] + x[3] * y[3];
        }
#endif
    return lanes;
}

/* Exact sum of n int8 products, for group sizes that are not a multiple of 16. */
static int32_t dot_i8(const int8_t *a, const int8_t *b, int n) {
    int32_t sum = 0;
    for (int i = 0; i < n; i++) sum += (int32_t)a[i] * b[i];
    return sum;
}

/* float(x) rounded to the nearest integer, ties to even, for |x| < 2^22: adding 1.5 * 2^23 leaves the
   integer in the low mantissa bits. No float-to-int instruction (Wasm's traps, and is slow). */
static inline i32x8 round8(f32x8 x) {
    f32x8 t = x + 12582912.0f;
    i32x8 bits;
    memcpy(&bits, &t, sizeof bits);
    return bits - 0x4B400000;
}

/* A matrix or vector quantised in groups: q[i] * s[i / gs] approximates the float value. (The relaxed-SIMD
   Wasm build keeps weight matrices group-major instead: see tile_groups.) */
typedef struct {
    int8_t *q;
    float *s;
#if defined(__wasm_relaxed_simd__)
    int8_t *pos, *neg; /* an input's max(q, 0) and max(-q, 0): 7-bit operands for q8_by_group */
#endif
} qtensor;

/* Each group of gs values: scale = max|x| / 127, q = x / scale rounded to the nearest integer. */
static void quantize(qtensor *t, const float *x, int n, int gs) {
    for (int g = 0; g < n / gs; g++) {
        const float *xg = x + (size_t)g * gs;
        f32x8 top = {0};
        int i = 0;
        for (; i + 8 <= gs; i += 8) {
            f32x8 v = load8(xg + i);
            top = max8(top, max8(v, -v));
        }
        /* the lanes' max by halving (no branch per lane: Wasmtime makes a float select a jump) */
        top = max8(top, __builtin_shufflevector(top, top, 4, 5, 6, 7, 0, 1, 2, 3));
        top = max8(top, __builtin_shufflevector(top, top, 2, 3, 0, 1, 6, 7, 4, 5));
        top = max8(top, __builtin_shufflevector(top, top, 1, 0, 3, 2, 5, 4, 7, 6));
        float max = top[0];
        for (; i < gs; i++) {
            float v = xg[i] < 0 ? -xg[i] : xg[i];
            if (v > max) max = v;
        }
        float scale = max / 127.0f;
        t->s[g] = scale;
        const f32x8 divisor = {scale, scale, scale, scale, scale, scale, scale, scale};
        for (i = 0; i < gs; i += 8) {
            i8x8 q = scale ? __builtin_convertvector(round8(load_upto8(xg + i, gs - i) / divisor), i8x8) : (i8x8){0};
            if (gs - i >= 8) /* a constant size: the copy inlines, where a variable one is a libc call in Wasm */
                memcpy(t->q + (size_t)g * gs + i, &q, 8);
            else
                memcpy(t->q + (size_t)g * gs + i, &q, (size_t)(gs - i));
        }
    }
}

/* ---- threads (native build): rows of a matrix product split over a small pool --------------------- */

typedef struct {
    float *out;
    const float *x;       /* fp32 input ... */
    const qtensor *xq;    /* ... or the quantised one */
    const float *w;       /* fp32 weights ... */
    const qtensor *wq;    /* ... or int8 */
    int n, gs;
#if defined(__wasm_relaxed_simd__)
    f32x4 *lanes; /* rows x 4 partial sums, for q8_by_group */
    int rows;     /* of W, whose int8 weights are group-major: see tile_groups */
#endif
} matmul_job;

/* Rows lo..hi of an int8 product whose group size is a multiple of 16: four float lanes per row, one
   horizontal sum at the end. Inlined with gs a constant, the block loop unrolls away. */
static inline __attribute__((always_inline)) void q8_rows(const matmul_job *j, int lo, int hi, int gs) {
    const int n = j->n, groups = n / gs;
    const int8_t *wq = j->wq->q, *xq = j->xq->q;
    const float *wscale = j->wq->s, *xscale = j->xq->s;
    float *out = j->out; /* locals: the stores to out could alias j, so every use of j would be a reload */
    int i = lo;
#ifndef __wasm__ /* two rows share each load of x: 5 to 8% faster natively (Wasm goes group by group) */
    for (; i + 2 <= hi; i += 2) {
        const int8_t *w0 = wq + (size_t)i * n, *w1 = w0 + n;
        const float *s0 = wscale + (size_t)i * groups, *s1 = s0 + groups;
        f32x4 acc0 = {0}, acc1 = {0};
        for (int g = 0; g < groups; g++) {
            i32x4 l0 = dot_i8_lanes(w0 + g * gs, xq + g * gs, gs), l1 = dot_i8_lanes(w1 + g * gs, xq + g * gs, gs);
            acc0 += __builtin_convertvector(l0, f32x4) * (s0[g] * xscale[g]);
            acc1 += __builtin_convertvector(l1, f32x4) * (s1[g] * xscale[g]);
        }
        out[i] = (acc0[0] + acc0[1]) + (acc0[2] + acc0[3]);
        out[i + 1] = (acc1[0] + acc1[1]) + (acc1[2] + acc1[3]);
    }
#endif
    for (; i < hi; i++) {
        const int8_t *wrow = wq + (size_t)i * n;
        const float *ws = wscale + (size_t)i * groups;
        f32x4 acc = {0};
        for (int g = 0; g < groups; g++) {
            f32x4 lanes = __builtin_convertvector(dot_i8_lanes(wrow + g * gs, xq + g * gs, gs), f32x4);
            acc += lanes * (ws[g] * xscale[g]);
        }
        out[i] = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    }
}

#if defined(__wasm_relaxed_simd__)
/* One block of 16 products w[i] * x[i] in dot_i8_lanes's four lanes, x given as its positive and negative
   parts (both 0..127, the 7-bit operand of Wasm's relaxed dot product, which Wasmtime makes vpmaddubsw).
   A pair of products is at most 2 * 128 * 127, so both dot products and their difference fit 16 bits:
   exact for any weight, and the same on every runtime. */
static inline v128_t block_lanes(v128_t w, v128_t pos, v128_t neg) {
    v128_t pairs = wasm_i16x8_sub(wasm_i16x8_relaxed_dot_i8x16_i7x16(w, pos), wasm_i16x8_relaxed_dot_i8x16_i7x16(w, neg));
    return wasm_i32x4_extadd_pairwise_i16x8(pairs);
}

/* One group of a row: its lanes (as floats) times the two scales' product. */
static inline f32x4 group_lanes(const int8_t *w, const v128_t *pos, const v128_t *neg, int blocks, float scale) {
    v128_t sum = block_lanes(wasm_v128_load(w), pos[0], neg[0]);
    for (int b = 1; b < blocks; b++) sum = wasm_i32x4_add(sum, block_lanes(wasm_v128_load(w + 16 * b), pos[b], neg[b]));
    return __builtin_convertvector((i32x4)sum, f32x4) * scale;
}

/* The group sizes q8_by_group takes: one group's blocks of x fit in registers. */
static inline int by_group(int gs) { return gs % 16 == 0 && gs <= 64; }

/* A weight matrix (rows x n) reordered group-major for q8_by_group: group g of every row side by side
   (q[g][row][0..gs), s[g][row]), so the rows of one iteration are a pointer and fixed offsets. */
static int tile_groups(qtensor *t, int rows, int n, int gs) {
    size_t groups = (size_t)(n / gs), count = (size_t)rows * n, scales = rows * groups * sizeof(float);
    int8_t *q = malloc(count);
    float *s = malloc(scales);
    if (q && s) {
        for (size_t i = 0; i < (size_t)rows; i++)
            for (size_t g = 0; g < groups; g++) {
                memcpy(q + (g * rows + i) * gs, t->q + i * n + g * gs, (size_t)gs);
                s[g * rows + i] = t->s[i * groups + g];
            }
        memcpy(t->q, q, count);
        memcpy(t->s, s, scales);
    }
    int failed = !q || !s;
    free(q);
    free(s);
    return failed;
}

/* Rows lo..hi of an int8 product in Wasm, weights group-major (tile_groups), group by group: the group's x
   stays in registers, four rows go through it at a time, and each row's lanes wait in j->lanes. Row by row
   (q8_rows), Wasmtime kept the loop's vectors on the stack, stored and reloaded around the epoch check at
   every loop head; this order measured 1.3 to 1.4 times faster. The sums and their order are q8_rows's,
   so the bits are too. */
static inline __attribute__((always_inline)) void q8_by_group(const matmul_job *j, int lo, int hi, int gs) {
    const int n = j->n, groups = n / gs, blocks = gs / 16;
    f32x4 *acc = j->lanes;
    for (int i = lo; i < hi; i++) acc[i] = (f32x4){0};
    for (int g = 0; g < groups; g++) {
        v128_t pos[4], neg[4];
        for (int b = 0; b < blocks; b++) {
            pos[b] = wasm_v128_load(j->xq->pos + g * gs + 16 * b);
            neg[b] = wasm_v128_load(j->xq->neg + g * gs + 16 * b);
        }
        const int8_t *wg = j->wq->q + (size_t)g * j->rows * gs;
        const float *sg = j->wq->s + (size_t)g * j->rows;
        const float xs = j->xq->s[g];
        int i = lo;
        for (; i + 4 <= hi; i += 4) { /* (8 rows at a time measured a third slower) */
            f32x4 r[4];
            for (int k = 0; k < 4; k++) r[k] = group_lanes(wg + (size_t)(i + k) * gs, pos, neg, blocks, sg[i + k] * xs);
            for (int k = 0; k < 4; k++) acc[i + k] += r[k];
        }
        for (; i < hi; i++) acc[i] += group_lanes(wg + (size_t)i * gs, pos, neg, blocks, sg[i] * xs);
    }
    for (int i = lo; i < hi; i++) j->out[i] = (acc[i][0] + acc[i][1]) + (acc[i][2] + acc[i][3]);
}
#endif

/* Not inlined: inside forward(), Wasmtime's register allocator spilled this loop's state to the stack. */
static __attribute__((noinline)) void matmul_rows(const matmul_job *j, int lo, int hi) {
    if (j->w) {
        for (int i = lo; i < hi; i++) j->out[i] = dot_f32(j->w + (size_t)i * j->n, j->x, j->n);
        return;
    }
    int groups = j->n / j->gs, gs = j->gs;
#if defined(__wasm_relaxed_simd__)
    if (gs == 32) return q8_by_group(j, lo, hi, 32);
    if (gs == 64) return q8_by_group(j, lo, hi, 64);
    if (by_group(gs)) return q8_by_group(j, lo, hi, gs);
#endif
    if (gs == 32) return q8_rows(j, lo, hi, 32);
    if (gs == 64) return q8_rows(j, lo, hi, 64);
    if (gs % 16 == 0) return q8_rows(j, lo, hi, gs);
    for (int i = lo; i < hi; i++) {
        const int8_t *wrow = j->wq->q + (size_t)i * j->n;
        const float *ws = j->wq->s + (size_t)i * groups;
        float val = 0;
        for (int g = 0; g < groups; g++)
            val += (float)dot_i8(wrow + g * gs, j->xq->q + g * gs, gs) * (ws[g] * j->xq->s[g]);
        j->out[i] = val;
    }
}

#ifdef TINYLLM_THREADS
/* Below this many multiply-adds a matrix product is not worth sharing. */
#define PARALLEL_MIN_WORK (32 * 1024)
/* Workers spin this many pause rounds (0.53 ms on this project's AMD EPYC) waiting for the next product
   before they sleep: a forward pass hands out a product every few µs, and waking a sleeping thread costs
   more than that on a VM. */
#define SPIN_ROUNDS 20000

static struct {
    pthread_t threads[MAX_THREADS];
    int size;  /* participants: the calling thread + the workers */
    int parts; /* participants sharing the current job (<= size) */
    atomic_uint generation; /* bumped for every job */
    atomic_int pending;     /* workers still on the current job */
    atomic_int sleepers;    /* workers blocked on `start` */
    pthread_mutex_t mu;
    pthread_cond_t start;
    const matmul_job *job;
    int rows;
} pool = {.size = 1, .parts = 1, .mu = PTHREAD_MUTEX_INITIALIZER, .start = PTHREAD_COND_INITIALIZER};

static void share(int part, int parts, int rows, int *lo, int *hi) {
    *lo = (int)((long)rows * part / parts);
    *hi = (int)((long)rows * (part + 1) / parts);
}

static inline void relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Waits until the generation moves past `seen`: spinning first, then asleep on the condition variable.
   (The sleeper count and the generation are sequentially consistent, so a job posted while a worker
   goes to sleep either is seen by it or sees it asleep and wakes it.) */
static unsigned wait_for_job(unsigned seen) {
    for (int round = 0; round < SPIN_ROUNDS; round++) {
        unsigned now = atomic_load(&pool.generation);
        if (now != seen) return now;
        relax();
    }
    pthread_mutex_lock(&pool.mu);
    atomic_fetch_add(&pool.sleepers, 1);
    while (atomic_load(&pool.generation) == seen) pthread_cond_wait(&pool.start, &pool.mu);
    atomic_fetch_sub(&pool.sleepers, 1);
    pthread_mutex_unlock(&pool.mu);
    return atomic_load(&pool.generation);
}

static void *worker(void *arg) {
    int part = (int)((intptr_t)arg & 0xff);
    unsigned seen = (unsigned)((uintptr_t)arg >> 8);
    for (;;) {
        seen = wait_for_job(seen);
        int lo = 0, hi = 0;
        if (part < pool.parts) share(part, pool.parts, pool.rows, &lo, &hi);
        if (lo < hi) matmul_rows(pool.job, lo, hi);
        atomic_fetch_sub(&pool.pending, 1);
    }
    return NULL;
}

/* Uses `threads` participants from now on, starting workers as needed (they are never stopped). Called
   between jobs, from the thread that posts them. */
static void pool_resize(int threads) {
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    while (pool.size < threads) {
        uintptr_t arg = (uintptr_t)pool.size | ((uintptr_t)atomic_load(&pool.generation) << 8);
        if (pthread_create(&pool.threads[pool.size], NULL, worker, (void *)arg) != 0) break;
        pool.size++;
    }
    pool.parts = threads < pool.size ? threads : pool.size;
}

static void matmul_run(const matmul_job *j, int rows) {
    if (pool.parts <= 1 || (long)rows * j->n < PARALLEL_MIN_WORK) {
        matmul_rows(j, 0, rows);
        return;
    }
    pool.job = j;
    pool.rows = rows;
    atomic_store(&pool.pending, pool.size - 1);
    atomic_fetch_add(&pool.generation, 1); /* publishes job and rows to the workers */
    if (atomic_load(&pool.sleepers)) {
        pthread_mutex_lock(&pool.mu);
        pthread_cond_broadcast(&pool.start);
        pthread_mutex_unlock(&pool.mu);
    }
    int lo, hi;
    share(0, pool.parts, rows, &lo, &hi);
    matmul_rows(j, lo, hi);
    while (atomic_load(&pool.pending)) relax();
}

static int default_threads(void) {
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    return cores < 1 ? 1 : cores > 4 ? 4 : (int)cores;
}
#else
static void pool_resize(int threads) { (void)threads; }
static void matmul_run(const matmul_job *j, int rows) { matmul_rows(j, 0, rows); }
static int default_threads(void) { return 1; }
#endif

/* ---- the model ------------------------------------------------------------------------------------- */

typedef struct {
    int dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
    int shared_classifier;
    int group_size; /* 0: fp32 weights */
} model_config;

/* A weight matrix in one of the two formats (w for fp32, q for int8). */
typedef struct {
    float *w;
    qtensor q;
} matrix;

typedef struct {
    model_config c;
    char *checkpoint, *tokenizer_path; /* what was loaded, to notice a config change */
    long long checkpoint_size, checkpoint_mtime;
    uint8_t *file; /* the checkpoint's bytes; weights point into it */
    void **owned;  /* realigned copies of misaligned float tensors */
    int n_owned;
    float *embedding;       /* vocab x dim, fp32 always (rows are looked up, not multiplied) */
    float *rms_att, *rms_ffn, *rms_final;
    matrix *wq, *wk, *wv, *wo, *w1, *w2, *w3; /* per layer */
    matrix wcls;
    float *rope_cos, *rope_sin; /* seq_len x head_size/2 */
    /* tokenizer */
    char **pieces;
    int *piece_len;
    float *scores;
    int *sorted; /* ids ordered by piece bytes, then id, for lookup */
    int max_piece_len;
    /* run state */
    float *x, *xb, *xb2, *hb, *hb2, *q, *att, *logits, *key_cache, *value_cache;
    qtensor xq, hq;
#if defined(__wasm_relaxed_simd__)
    f32x4 *lanes; /* q8_by_group's partial sums: 4 per row of the largest matrix */
#endif
} model;

static void model_free(model *m) {
    if (!m) return;
    free(m->checkpoint);
    free(m->tokenizer_path);
    free(m->file);
    for (int i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    free(m->wq);
    free(m->wk);
    free(m->wv);
    free(m->wo);
    free(m->w1);
    free(m->w2);
    free(m->w3);
    free(m->rope_cos);
    free(m->rope_sin);
    if (m->pieces)
        for (int i = 0; i < m->c.vocab_size; i++) free(m->pieces[i]);
    free(m->pieces);
    free(m->piece_len);
    free(m->scores);
    free(m->sorted);
    free(m->x);
    free(m->xb);
    free(m->xb2);
    free(m->hb);
    free(m->hb2);
    free(m->q);
    free(m->att);
    free(m->logits);
    free(m->key_cache);
    free(m->value_cache);
    free(m->xq.q);
    free(m->xq.s);
    free(m->hq.q);
    free(m->hq.s);
#if defined(__wasm_relaxed_simd__)
    free(m->xq.pos);
    free(m->xq.neg);
    free(m->hq.pos);
    free(m->hq.neg);
    free(m->lanes);
#endif
    free(m);
}

/* Loading reports problems in err (a message for the user) and returns non-zero. */
typedef struct {
    char text[512];
} load_error;

static int fail_load(load_error *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail_load(load_error *e, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->text, sizeof e->text, fmt, ap);
    va_end(ap);
    return 1;
}

static const char *open_hint(int err) {
#ifdef QMT_TARGET_WASM
    if (err == ENOENT || err == ENOTCAPABLE || err == EACCES || err == EPERM)
        return " (a Wasm plugin sees only the directories that plugins.toml grants it with `allowed_paths`)";
#else
    (void)err;
#endif
    return "";
}

static int read_file(const char *path, const char *what, uint8_t **data, long long *size, load_error *e) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        int err = errno;
        return fail_load(e, "cannot open %s `%s`: %s%s", what, path, strerror(err), open_hint(err));
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return fail_load(e, "%s `%s` is not a regular file", what, path);
    }
    *size = (long long)st.st_size;
    *data = malloc(*size ? (size_t)*size : 1);
    if (!*data) {
        fclose(f);
        return fail_load(e, "out of memory reading %s `%s` (%lld bytes)", what, path, *size);
    }
    size_t got = *size ? fread(*data, 1, (size_t)*size, f) : 0;
    fclose(f);
    if ((long long)got != *size) {
        free(*data);
        *data = NULL;
        return fail_load(e, "could not read all of %s `%s`", what, path);
    }
    return 0;
}

/* A cursor over the checkpoint bytes; taking past the end is a truncated file. */
typedef struct {
    uint8_t *base;
    size_t pos, size;
    int short_by; /* set when a take ran past the end */
    size_t needed;
    model *owner; /* keeps realigned copies */
} cursor;

static void *take(cursor *cur, size_t bytes) {
    if (cur->short_by || bytes > cur->size - cur->pos) {
        cur->short_by = 1;
        cur->needed = cur->pos + bytes;
        return NULL;
    }
    void *p = cur->base + cur->pos;
    cur->pos += bytes;
    return p;
}

/* Floats from the file, in place; int8 tensors whose size is not a multiple of 4 (tiny group sizes) put
   the floats after them off a 4-byte boundary, and those are copied (the copies are owned by the model). */
static float *take_floats(cursor *cur, size_t n) {
    uint8_t *p = take(cur, n * sizeof(float));
    if (!p || ((uintptr_t)p % sizeof(float)) == 0) return (float *)p;
    model *m = cur->owner;
    void **grown = realloc(m->owned, (size_t)(m->n_owned + 1) * sizeof(void *));
    if (grown) m->owned = grown;
    float *copy = grown ? malloc(n * sizeof(float)) : NULL;
    if (!copy) abort(); /* as qmt_buf does: no useful answer to running out of memory here */
    memcpy(copy, p, n * sizeof(float));
    m->owned[m->n_owned++] = copy;
    return copy;
}

static int32_t read_i32(const uint8_t *p) {
    int32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

#define MAGIC_AK42 0x616b3432u

/* Reads the header; sets the cursor after it. */
static int parse_header(cursor *cur, model_config *c, int *version, const char *path, load_error *e) {
    if (cur->size < 28) return fail_load(e, "checkpoint `%s` is %zu bytes: too short for a llama2.c checkpoint", path, cur->size);
    uint32_t magic;
    memcpy(&magic, cur->base, 4);
    const uint8_t *h = cur->base;
    if (magic == MAGIC_AK42) {
        if (cur->size < 256) return fail_load(e, "checkpoint `%s` is truncated inside its 256-byte header", path);
        *version = read_i32(h + 4);
        if (*version != 1 && *version != 2)
            return fail_load(e, "checkpoint `%s` has format version %d; this plugin reads versions 1 (fp32) and 2 (int8) "
                             "and the legacy fp32 layout", path, *version);
        h += 8;
    } else {
        *version = 0;
    }
    c->dim = read_i32(h);
    c->hidden_dim = read_i32(h + 4);
    c->n_layers = read_i32(h + 8);
    c->n_heads = read_i32(h + 12);
    c->n_kv_heads = read_i32(h + 16);
    c->vocab_size = read_i32(h + 20);
    c->seq_len = read_i32(h + 24);
    c->group_size = 0;
    if (*version == 0) {
        c->shared_classifier = c->vocab_size > 0;
        if (c->vocab_size < 0) c->vocab_size = -c->vocab_size;
        cur->pos = 28;
    } else {
        c->shared_classifier = h[28];
        if (*version == 2) c->group_size = read_i32(h + 29);
        cur->pos = 256;
    }
    return 0;
}

static int check_config(const model_config *c, const char *path, load_error *e) {
    const char *bad = NULL;
    if (c->dim <= 0 || c->dim > 65536) bad = "dim";
    else if (c->hidden_dim <= 0 || c->hidden_dim > 262144) bad = "hidden_dim";
    else if (c->n_layers <= 0 || c->n_layers > 1024) bad = "n_layers";
    else if (c->n_heads <= 0 || c->dim % c->n_heads || (c->dim / c->n_heads) % 2) bad = "n_heads";
    else if (c->n_kv_heads <= 0 || c->n_heads % c->n_kv_heads) bad = "n_kv_heads";
    else if (c->vocab_size <= 3 || c->vocab_size > (1 << 21)) bad = "vocab_size";
    else if (c->seq_len <= 0 || c->seq_len > (1 << 20)) bad = "seq_len";
    else if (c->group_size < 0 || (c->group_size && (c->dim % c->group_size || c->hidden_dim % c->group_size)))
        bad = "group_size";
    if (!bad) return 0;
    return fail_load(e,
                     "checkpoint `%s` is not a llama2.c checkpoint this plugin can read: bad %s in the header "
                     "(dim %d, hidden_dim %d, n_layers %d, n_heads %d, n_kv_heads %d, vocab_size %d, seq_len %d, "
                     "group_size %d)",
                     path, bad, c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads, c->vocab_size,
                     c->seq_len, c->group_size);
}

static int alloc_matrices(model *m) {
    int L = m->c.n_layers;
    matrix **all[] = {&m->wq, &m->wk, &m->wv, &m->wo, &m->w1, &m->w2, &m->w3};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (!(*all[i] = calloc((size_t)L, sizeof(matrix)))) return 1;
    return 0;
}

/* fp32 weights of one kind, all layers back to back. */
static void take_fp32_layers(cursor *cur, matrix *layers, int L, size_t each) {
    for (int l = 0; l < L; l++) layers[l].w = take_floats(cur, each);
}

/* int8 weights: per tensor the int8 values then one float scale per group. */
static void take_q8(cursor *cur, matrix *mat, size_t n, int gs) {
    mat->q.q = take(cur, n);
    mat->q.s = take_floats(cur, n / gs);
}

static void take_q8_layers(cursor *cur, matrix *layers, int L, size_t each, int gs) {
    for (int l = 0; l < L; l++) take_q8(cur, &layers[l], each, gs);
}

static int map_weights(model *m, cursor *cur, int version) {
    const model_config *c = &m->c;
    size_t dim = c->dim, hidden = c->hidden_dim, L = c->n_layers, head = dim / c->n_heads;
    size_t kv_dim = dim * c->n_kv_heads / c->n_heads, vocab = c->vocab_size;
    if (alloc_matrices(m)) return 1;
    if (version == 0) {
        m->embedding = take_floats(cur, vocab * dim);
        m->rms_att = take_floats(cur, L * dim);
        take_fp32_layers(cur, m->wq, (int)L, dim * dim);
        take_fp32_layers(cur, m->wk, (int)L, kv_dim * dim);
        take_fp32_layers(cur, m->wv, (int)L, kv_dim * dim);
        take_fp32_layers(cur, m->wo, (int)L, dim * dim);
        m->rms_ffn = take_floats(cur, L * dim);
        take_fp32_layers(cur, m->w1, (int)L, hidden * dim);
        take_fp32_layers(cur, m->w2, (int)L, dim * hidden);
        take_fp32_layers(cur, m->w3, (int)L, hidden * dim);
        m->rms_final = take_floats(cur, dim);
        take(cur, (size_t)c->seq_len * head / 2 * sizeof(float) * 2); /* the exporter's RoPE tables: recomputed */
        m->wcls.w = c->shared_classifier ? m->embedding : take_floats(cur, vocab * dim);
        return 0;
    }
    m->rms_att = take_floats(cur, L * dim);
    m->rms_ffn = take_floats(cur, L * dim);
    m->rms_final = take_floats(cur, dim);
    if (version == 1) {
        m->embedding = take_floats(cur, vocab * dim);
        take_fp32_layers(cur, m->wq, (int)L, dim * dim);
        take_fp32_layers(cur, m->wk, (int)L, kv_dim * dim);
        take_fp32_layers(cur, m->wv, (int)L, kv_dim * dim);
        take_fp32_layers(cur, m->wo, (int)L, dim * dim);
        take_fp32_layers(cur, m->w1, (int)L, hidden * dim);
        take_fp32_layers(cur, m->w2, (int)L, dim * hidden);
        take_fp32_layers(cur, m->w3, (int)L, hidden * dim);
        m->wcls.w = c->shared_classifier ? m->embedding : take_floats(cur, vocab * dim);
        return 0;
    }
    int gs = c->group_size;
    matrix embedding_q;
    take_q8(cur, &embedding_q, vocab * dim, gs);
    take_q8_layers(cur, m->wq, (int)L, dim * dim, gs);
    take_q8_layers(cur, m->wk, (int)L, kv_dim * dim, gs);
    take_q8_layers(cur, m->wv, (int)L, kv_dim * dim, gs);
    take_q8_layers(cur, m->wo, (int)L, dim * dim, gs);
    take_q8_layers(cur, m->w1, (int)L, hidden * dim, gs);
    take_q8_layers(cur, m->w2, (int)L, dim * hidden, gs);
    take_q8_layers(cur, m->w3, (int)L, hidden * dim, gs);
    if (c->shared_classifier) m->wcls = embedding_q;
    else take_q8(cur, &m->wcls, vocab * dim, gs);
    if (cur->short_by) return 0;
    /* Rows of the embedding are copied into the residual stream: keep them as floats. */
    m->embedding = malloc(vocab * dim * sizeof(float));
    if (!m->embedding) return 1;
    for (size_t i = 0; i < vocab * dim; i++) m->embedding[i] = embedding_q.q.q[i] * embedding_q.q.s[i / gs];
#if defined(__wasm_relaxed_simd__)
    if (by_group(gs)) {
        int d = (int)dim, h = (int)hidden, kv = (int)kv_dim;
        for (size_t l = 0; l < L; l++)
            if (tile_groups(&m->wq[l].q, d, d, gs) || tile_groups(&m->wk[l].q, kv, d, gs) ||
                tile_groups(&m->wv[l].q, kv, d, gs) || tile_groups(&m->wo[l].q, d, d, gs) ||
                tile_groups(&m->w1[l].q, h, d, gs) || tile_groups(&m->w2[l].q, d, h, gs) ||
                tile_groups(&m->w3[l].q, h, d, gs))
                return 1;
        if (tile_groups(&m->wcls.q, (int)vocab, d, gs)) return 1;
    }
#endif
    return 0;
}

static int alloc_state(model *m) {
    const model_config *c = &m->c;
    size_t dim = c->dim, hidden = c->hidden_dim, head = dim / c->n_heads;
    size_t kv_dim = dim * c->n_kv_heads / c->n_heads, cache = (size_t)c->n_layers * c->seq_len * kv_dim;
    size_t gs = c->group_size ? (size_t)c->group_size : 1;
    m->x = calloc(dim, sizeof(float));
    m->xb = calloc(dim, sizeof(float));
    m->xb2 = calloc(dim, sizeof(float));
    m->hb = calloc(hidden, sizeof(float));
    m->hb2 = calloc(hidden, sizeof(float));
    m->q = calloc(dim, sizeof(float));
    m->att = calloc((size_t)c->n_heads * c->seq_len, sizeof(float));
    m->logits = calloc((size_t)c->vocab_size, sizeof(float));
    m->key_cache = calloc(cache, sizeof(float));
    m->value_cache = calloc(cache, sizeof(float));
    m->xq.q = calloc(dim, 1);
    m->xq.s = calloc(dim / gs, sizeof(float));
    m->hq.q = calloc(hidden, 1);
    m->hq.s = calloc(hidden / gs, sizeof(float));
    m->rope_cos = malloc((size_t)c->seq_len * head / 2 * sizeof(float));
    m->rope_sin = malloc((size_t)c->seq_len * head / 2 * sizeof(float));
    if (!m->x || !m->xb || !m->xb2 || !m->hb || !m->hb2 || !m->q || !m->att || !m->logits || !m->key_cache ||
        !m->value_cache || !m->xq.q || !m->xq.s || !m->hq.q || !m->hq.s || !m->rope_cos || !m->rope_sin)
        return 1;
#if defined(__wasm_relaxed_simd__)
    size_t rows = dim; /* of the tallest matrix: dim, hidden or vocab */
    if (hidden > rows) rows = hidden;
    if ((size_t)c->vocab_size > rows) rows = (size_t)c->vocab_size;
    m->xq.pos = malloc(dim);
    m->xq.neg = malloc(dim);
    m->hq.pos = malloc(hidden);
    m->hq.neg = malloc(hidden);
    m->lanes = malloc(rows * sizeof(f32x4));
    if (!m->xq.pos || !m->xq.neg || !m->hq.pos || !m->hq.neg || !m->lanes) return 1;
#endif
    for (int pos = 0; pos < c->seq_len; pos++)
        for (size_t i = 0; i < head / 2; i++) {
            double s, co;
            det_sincos(pos * rope_frequency((int)i, (int)head), &s, &co);
            m->rope_cos[pos * head / 2 + i] = (float)co;
            m->rope_sin[pos * head / 2 + i] = (float)s;
        }
    return 0;
}

static int load_checkpoint(model *m, const char *path, load_error *e) {
    long long size;
    if (read_file(path, "checkpoint", &m->file, &size, e)) return 1;
    m->checkpoint_size = size;
    cursor cur = {m->file, 0, (size_t)size, 0, 0, m};
    int version;
    if (parse_header(&cur, &m->c, &version, path, e) || check_config(&m->c, path, e)) return 1;
    if (((uintptr_t)m->file % 4) != 0) return fail_load(e, "internal: misaligned checkpoint buffer");
    if (map_weights(m, &cur, version)) return fail_load(e, "out of memory loading checkpoint `%s`", path);
    if (cur.short_by)
        return fail_load(e,
                         "checkpoint `%s` is truncated: it is %lld bytes, but a %s model with dim %d, %d layers and "
                         "vocab %d needs at least %zu; download or export it again",
                         path, size, version == 2 ? "int8" : "fp32", m->c.dim, m->c.n_layers, m->c.vocab_size,
                         cur.needed);
    if (alloc_state(m)) return fail_load(e, "out of memory for the model's run state (seq_len %d)", m->c.seq_len);
    return 0;
}

/* ---- tokenizer -------------------------------------------------------------------------------------- */

static const model *sort_model; /* qsort has no context argument */

static int compare_pieces(const char *a, int alen, const char *b, int blen) {
    int n = alen < blen ? alen : blen, c = memcmp(a, b, (size_t)n);
    return c ? c : (alen > blen) - (alen < blen);
}

static int compare_ids(const void *x, const void *y) {
    int a = *(const int *)x, b = *(const int *)y;
    int c = compare_pieces(sort_model->pieces[a], sort_model->piece_len[a], sort_model->pieces[b],
                           sort_model->piece_len[b]);
    return c ? c : (a > b) - (a < b);
}

/* The lowest id whose piece is exactly these bytes, or -1. */
static int lookup(const model *m, const char *s, int len) {
    int lo = 0, hi = m->c.vocab_size;
    while (lo < hi) {
        int mid = (lo + hi) / 2, id = m->sorted[mid];
        if (compare_pieces(m->pieces[id], m->piece_len[id], s, len) < 0) lo = mid + 1;
        else hi = mid;
    }
    if (lo < m->c.vocab_size) {
        int id = m->sorted[lo];
        if (compare_pieces(m->pieces[id], m->piece_len[id], s, len) == 0) return id;
    }
    return -1;
}

static int load_tokenizer(model *m, const char *path, load_error *e) {
    uint8_t *data;
    long long size;
    if (read_file(path, "tokenizer", &data, &size, e)) return 1;
    int n = m->c.vocab_size, rc = 0;
    m->pieces = calloc((size_t)n, sizeof(char *));
    m->piece_len = calloc((size_t)n, sizeof(int));
    m->scores = calloc((size_t)n, sizeof(float));
    m->sorted = calloc((size_t)n, sizeof(int));
    if (!m->pieces || !m->piece_len || !m->scores || !m->sorted) {
        free(data);
        return fail_load(e, "out of memory loading tokenizer `%s`", path);
    }
    size_t pos = 4;
    if (size < 4) rc = fail_load(e, "tokenizer `%s` is empty or truncated", path);
    else m->max_piece_len = read_i32(data);
    for (int i = 0; !rc && i < n; i++) {
        if ((size_t)size - pos < 8) {
            rc = fail_load(e, "tokenizer `%s` ends after %d of the model's %d pieces; is it the tokenizer of this "
                           "checkpoint?", path, i, n);
            break;
        }
        memcpy(&m->scores[i], data + pos, 4);
        int len = read_i32(data + pos + 4);
        pos += 8;
        if (len < 0 || (size_t)len > (size_t)size - pos) {
            rc = fail_load(e, "tokenizer `%s`: piece %d has a bad length %d (file truncated or not a tokenizer.bin)",
                           path, i, len);
            break;
        }
        m->pieces[i] = malloc((size_t)len + 1);
        if (!m->pieces[i]) {
            rc = fail_load(e, "out of memory loading tokenizer `%s`", path);
            break;
        }
        memcpy(m->pieces[i], data + pos, (size_t)len);
        m->pieces[i][len] = 0;
        m->piece_len[i] = len;
        if (len > m->max_piece_len) m->max_piece_len = len;
        pos += (size_t)len;
        m->sorted[i] = i;
    }
    free(data);
    if (rc) return rc;
    sort_model = m;
    qsort(m->sorted, (size_t)n, sizeof(int), compare_ids);
    return 0;
}

/* Bytes of the UTF-8 character a lead byte announces (1 for a byte that starts none). */
static int utf8_lead_length(uint8_t lead) {
    return lead < 0x80 ? 1 : (lead & 0xe0) == 0xc0 ? 2 : (lead & 0xf0) == 0xe0 ? 3 : (lead & 0xf8) == 0xf0 ? 4 : 1;
}

/* Bytes of one UTF-8 character starting at s (1 for a byte that starts no complete, valid one). */
static int utf8_length(const uint8_t *s, size_t n) {
    int len = utf8_lead_length(s[0]);
    if ((size_t)len > n) return 1;
    for (int i = 1; i < len; i++)
        if ((s[i] & 0xc0) != 0x80) return 1;
    return len;
}

/* ---- merging: llama2.c's rule (repeatedly merge the adjacent pair whose merged piece scores highest, the
   leftmost on ties) in O(n log n): the tokens form a linked list and candidate pairs a heap, checked
   when popped because a merge may have changed either side since the pair was pushed. */

typedef struct {
    float score;
    int left, right;                 /* node indices; left < right, so left orders ties */
    unsigned left_ver, right_ver;    /* the nodes' versions when pushed */
    int id;                          /* the merged piece */
} candidate_pair;

typedef struct {
    int *tok, *next, *prev;
    unsigned *ver;
    candidate_pair *heap;
    int size;
    char *scratch; /* two pieces side by side */
} merger;

static int pair_before(const candidate_pair *a, const candidate_pair *b) {
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static void heap_push(merger *g, candidate_pair item) {
    int i = g->size++;
    while (i > 0 && pair_before(&item, &g->heap[(i - 1) / 2])) {
        g->heap[i] = g->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    g->heap[i] = item;
}

static candidate_pair heap_pop(merger *g) {
    candidate_pair top = g->heap[0], last = g->heap[--g->size];
    int i = 0;
    for (;;) {
        int child = 2 * i + 1;
        if (child >= g->size) break;
        if (child + 1 < g->size && pair_before(&g->heap[child + 1], &g->heap[child])) child++;
        if (!pair_before(&g->heap[child], &last)) break;
        g->heap[i] = g->heap[child];
        i = child;
    }
    g->heap[i] = last;
    return top;
}

/* Pushes the pair (left, right) when their pieces together are a piece of the vocabulary. */
static void offer_pair(const model *m, merger *g, int left, int right) {
    if (left < 0 || right < 0) return;
    int a = g->tok[left], b = g->tok[right], la = m->piece_len[a], lb = m->piece_len[b];
    if (la + lb > m->max_piece_len) return;
    memcpy(g->scratch, m->pieces[a], (size_t)la);
    memcpy(g->scratch + la, m->pieces[b], (size_t)lb);
    int id = lookup(m, g->scratch, la + lb);
    if (id >= 0) heap_push(g, (candidate_pair){m->scores[id], left, right, g->ver[left], g->ver[right], id});
}

/* Merges tokens[0..n) in place; returns the new count (or n, unmerged, when out of memory). */
static int merge_tokens(const model *m, int *tokens, int n) {
    if (n < 2) return n;
    merger g = {tokens, malloc((size_t)n * sizeof(int)), malloc((size_t)n * sizeof(int)),
                calloc((size_t)n, sizeof(unsigned)), malloc((size_t)n * 3 * sizeof(candidate_pair)), 0,
                malloc((size_t)m->max_piece_len * 2 + 1)};
    int count = n;
    if (g.next && g.prev && g.ver && g.heap && g.scratch) {
        for (int i = 0; i < n; i++) {
            g.next[i] = i + 1 < n ? i + 1 : -1;
            g.prev[i] = i - 1;
        }
        for (int i = 0; i + 1 < n; i++) offer_pair(m, &g, i, i + 1);
        while (g.size) {
            candidate_pair c = heap_pop(&g);
            if (g.next[c.left] != c.right || g.ver[c.left] != c.left_ver || g.ver[c.right] != c.right_ver) continue;
            g.tok[c.left] = c.id; /* the left node takes the merged piece, the right one leaves the list */
            g.ver[c.left]++;
            g.ver[c.right]++;
            g.next[c.left] = g.next[c.right];
            if (g.next[c.right] >= 0) g.prev[g.next[c.right]] = c.left;
            g.next[c.right] = -2; /* not in the list */
            count--;
            offer_pair(m, &g, g.prev[c.left], c.left);
            offer_pair(m, &g, c.left, g.next[c.left]);
        }
        int k = 0;
        for (int i = 0; i >= 0; i = g.next[i]) tokens[k++] = g.tok[i];
    }
    free(g.next);
    free(g.prev);
    free(g.ver);
    free(g.heap);
    free(g.scratch);
    return count;
}

/* llama2.c's encoding: BOS, then a dummy space and the text's characters (or their bytes + 3), merged.
   `tokens` has room for n + 2. */
static int encode(const model *m, const uint8_t *text, size_t n, int bos, int *tokens) {
    int start = bos ? 1 : 0, count = start;
    if (bos) tokens[0] = 1;
    if (n) {
        int space = lookup(m, " ", 1);
        if (space >= 0) tokens[count++] = space;
    }
    for (size_t i = 0; i < n;) {
        int len = utf8_length(text + i, n - i), id = lookup(m, (const char *)text + i, len);
        if (id >= 0) tokens[count++] = id;
        else
            for (int k = 0; k < len; k++) tokens[count++] = text[i + k] + 3;
        i += (size_t)len;
    }
    return start + merge_tokens(m, tokens + start, count - start);
}

static int hex_digit(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Appends the bytes token `tok` stands for after `prev`. */
static void decode_piece(const model *m, int prev, int tok, qmt_buf *out) {
    const char *p = m->pieces[tok];
    int len = m->piece_len[tok];
    if (prev == 1 && len && p[0] == ' ') {
        p++;
        len--;
    }
    if (len == 6 && p[0] == '<' && p[1] == '0' && p[2] == 'x' && p[5] == '>' && hex_digit(p[3]) >= 0 &&
        hex_digit(p[4]) >= 0) {
        qmt_buf_putc(out, (char)(hex_digit(p[3]) * 16 + hex_digit(p[4])));
        return;
    }
    qmt_buf_put(out, p, (size_t)len);
}

/* ---- the forward pass ------------------------------------------------------------------------------- */

static void rmsnorm(float *out, const float *x, const float *w, int n) {
    float ss = dot_f32(x, x, n) / n + 1e-5f;
    float scale = 1.0f / sqrtf(ss); /* sqrt is correctly rounded everywhere */
    for (int i = 0; i < n; i++) out[i] = w[i] * (scale * x[i]);
}

static void softmax(float *x, int n) {
    float max = x[0];
    for (int i = 1; i < n; i++)
        if (x[i] > max) max = x[i];
    const f32x8 shift = {max, max, max, max, max, max, max, max};
    for (int i = 0; i < n; i += 8) store_upto8(x + i, exp8(load_upto8(x + i, n - i) - shift), n - i);
    float sum = 0;
    for (int i = 0; i < n; i++) sum += x[i];
    for (int i = 0; i < n; i++) x[i] /= sum;
}

/* h = silu(h) * g, SwiGLU's gate: silu(z) = z / (1 + e^-z). */
static void silu_mul(float *h, const float *g, int n) {
    for (int i = 0; i < n; i += 8) {
        f32x8 z = load_upto8(h + i, n - i);
        store_upto8(h + i, z / (1.0f + exp8(-z)) * load_upto8(g + i, n - i), n - i);
    }
}

/* x quantised for the int8 products that read it (once per input, however many matrices it meets). */
static void prepare(const model *m, qtensor *xq, const float *x, int n) {
    if (!m->c.group_size) return;
    quantize(xq, x, n, m->c.group_size);
#if defined(__wasm_relaxed_simd__)
    if (!by_group(m->c.group_size)) return;
    for (int i = 0; i < n; i += 16) { /* n is a multiple of the group size, so of 16 */
        v128_t v = wasm_v128_load(xq->q + i), zero = wasm_i8x16_splat(0);
        wasm_v128_store(xq->pos + i, wasm_i8x16_max(v, zero));
        wasm_v128_store(xq->neg + i, wasm_i8x16_max(wasm_i8x16_neg(v), zero));
    }
#endif
}

/* out (rows) = W (rows x n) . x; an int8 W reads x as prepare() left it in xq. */
static void matmul(const model *m, float *out, const float *x, const qtensor *xq, const matrix *w, int n, int rows) {
    matmul_job job = {.out = out, .n = n, .gs = m->c.group_size, .w = w->w, .x = x, .wq = w->w ? NULL : &w->q, .xq = xq};
#if defined(__wasm_relaxed_simd__)
    job.lanes = m->lanes;
    job.rows = rows;
#endif
    matmul_run(&job, rows);
}

static void rope(const model *m, float *v, int n, int pos) {
    int head = m->c.dim / m->c.n_heads, half = head / 2;
    const float *co = m->rope_cos + (size_t)pos * half, *si = m->rope_sin + (size_t)pos * half;
    for (float *h = v; h < v + n; h += head) /* head by head: no division per pair */
        for (int pair = 0; pair < half; pair++) {
            float a = h[2 * pair], b = h[2 * pair + 1];
            h[2 * pair] = a * co[pair] - b * si[pair];
            h[2 * pair + 1] = a * si[pair] + b * co[pair];
        }
}

/* out[i] = the sum over t < len of w[t] * v[t * stride + i], added in the order of t. Sixteen outputs at a
   time stay in registers while t runs (a loop over t outside would load and store them for every t). */
static void weighted_sum(float *out, const float *w, const float *v, size_t stride, int n, int len) {
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        f32x8 lo = {0}, hi = {0};
        for (int t = 0; t < len; t++) {
            const float *vt = v + (size_t)t * stride + i;
            const f32x8 wt = {w[t], w[t], w[t], w[t], w[t], w[t], w[t], w[t]};
            lo += wt * load8(vt);
            hi += wt * load8(vt + 8);
        }
        store8(out + i, lo);
        store8(out + i + 8, hi);
    }
    for (; i < n; i++) {
        float sum = 0;
        for (int t = 0; t < len; t++) sum += w[t] * v[(size_t)t * stride + i];
        out[i] = sum;
    }
}

static void attention(model *m, int layer, int pos) {
    const model_config *c = &m->c;
    int head = c->dim / c->n_heads, kv_dim = c->dim * c->n_kv_heads / c->n_heads, group = c->n_heads / c->n_kv_heads;
    size_t base = (size_t)layer * c->seq_len * kv_dim;
    float inv_sqrt = 1.0f / sqrtf((float)head);
    for (int h = 0; h < c->n_heads; h++) {
        const float *q = m->q + h * head;
        float *att = m->att + (size_t)h * c->seq_len;
        size_t kv = base + (size_t)(h / group) * head;
        for (int t = 0; t <= pos; t++) att[t] = dot_f32(q, m->key_cache + kv + (size_t)t * kv_dim, head) * inv_sqrt;
        softmax(att, pos + 1);
        weighted_sum(m->xb + h * head, att, m->value_cache + kv, kv_dim, head, pos + 1);
    }
}

/* Runs token at pos through the model; leaves the final normalised state in xb and, if want_logits,
   the logits in m->logits. */
static void forward(model *m, int token, int pos, int want_logits) {
    const model_config *c = &m->c;
    int dim = c->dim, hidden = c->hidden_dim, kv_dim = dim * c->n_kv_heads / c->n_heads;
    memcpy(m->x, m->embedding + (size_t)token * dim, (size_t)dim * sizeof(float));
    for (int l = 0; l < c->n_layers; l++) {
        size_t at = ((size_t)l * c->seq_len + pos) * kv_dim;
        float *k = m->key_cache + at, *v = m->value_cache + at;
        rmsnorm(m->xb, m->x, m->rms_att + (size_t)l * dim, dim);
        prepare(m, &m->xq, m->xb, dim);
        matmul(m, m->q, m->xb, &m->xq, &m->wq[l], dim, dim);
        matmul(m, k, m->xb, &m->xq, &m->wk[l], dim, kv_dim);
        matmul(m, v, m->xb, &m->xq, &m->wv[l], dim, kv_dim);
        rope(m, m->q, dim, pos);
        rope(m, k, kv_dim, pos);
        attention(m, l, pos);
        prepare(m, &m->xq, m->xb, dim);
        matmul(m, m->xb2, m->xb, &m->xq, &m->wo[l], dim, dim);
        for (int i = 0; i < dim; i++) m->x[i] += m->xb2[i];
        rmsnorm(m->xb, m->x, m->rms_ffn + (size_t)l * dim, dim);
        prepare(m, &m->xq, m->xb, dim);
        matmul(m, m->hb, m->xb, &m->xq, &m->w1[l], dim, hidden);
        matmul(m, m->hb2, m->xb, &m->xq, &m->w3[l], dim, hidden);
        silu_mul(m->hb, m->hb2, hidden);
        prepare(m, &m->hq, m->hb, hidden);
        matmul(m, m->xb, m->hb, &m->hq, &m->w2[l], hidden, dim);
        for (int i = 0; i < dim; i++) m->x[i] += m->xb[i];
    }
    rmsnorm(m->xb, m->x, m->rms_final, dim);
    if (want_logits) {
        prepare(m, &m->xq, m->xb, dim);
        matmul(m, m->logits, m->xb, &m->xq, &m->wcls, dim, c->vocab_size);
    }
}

/* ---- sampling --------------------------------------------------------------------------------------- */

typedef struct {
    uint64_t state;
} rng;

static uint32_t rng_next(rng *r) { /* xorshift64* */
    r->state ^= r->state >> 12;
    r->state ^= r->state << 25;
    r->state ^= r->state >> 27;
    return (uint32_t)((r->state * 0x2545F4914F6CDD1Dull) >> 32);
}

static float rng_float(rng *r) { return (rng_next(r) >> 8) / 16777216.0f; }

typedef struct {
    float p;
    int id;
} candidate;

static int by_probability(const void *x, const void *y) {
    const candidate *a = x, *b = y;
    if (a->p != b->p) return a->p < b->p ? 1 : -1;
    return (a->id > b->id) - (a->id < b->id); /* a total order: the same result from every qsort */
}

static int argmax(const float *v, int n) {
    int best = 0;
    float top = v[0];
    for (int i = 1; i < n; i++)
        if (v[i] > top) top = v[best = i];
    return best;
}

typedef struct {
    float temperature, top_p;
    rng rng;
    candidate *candidates;
} sampler;

static int sample(sampler *s, float *logits, int n) {
    if (s->temperature == 0) return argmax(logits, n);
    for (int i = 0; i < n; i++) logits[i] /= s->temperature;
    softmax(logits, n);
    float coin = rng_float(&s->rng);
    if (s->top_p <= 0 || s->top_p >= 1 || !s->candidates) {
        float cdf = 0;
        for (int i = 0; i < n; i++) {
            cdf += logits[i];
            if (coin < cdf) return i;
        }
        return n - 1;
    }
    /* Nucleus: the most likely tokens whose mass first exceeds top_p. Tokens below the cutoff cannot be in
       it (n-1 of them could not reach 1 - top_p together), which keeps the sort short. */
    float cutoff = (1.0f - s->top_p) / (float)(n - 1);
    int k = 0;
    for (int i = 0; i < n; i++)
        if (logits[i] >= cutoff) s->candidates[k++] = (candidate){logits[i], i};
    qsort(s->candidates, (size_t)k, sizeof(candidate), by_probability);
    float mass = 0;
    int last = k - 1;
    for (int i = 0; i < k; i++) {
        mass += s->candidates[i].p;
        if (mass > s->top_p) {
            last = i;
            break;
        }
    }
    float r = coin * mass, cdf = 0;
    for (int i = 0; i <= last; i++) {
        cdf += s->candidates[i].p;
        if (r < cdf) return s->candidates[i].id;
    }
    return s->candidates[last].id;
}

/* ---- config --------------------------------------------------------------------------------------- */

typedef struct {
    const char *checkpoint;
    char *tokenizer; /* owned */
    const char *model_name;
    int max_tokens, threads, stop_at_eos, has_seed;
    float temperature, top_p;
    uint64_t seed;
    const qmt_json *system;
} llm_cfg;

static const qmt_field FIELDS[] = {
    {"model", QMT_FIELD_STRING, 0, 0, "a string", NULL},
    {"checkpoint", QMT_FIELD_STRING, 0, 0, "the path of a llama2.c checkpoint (.bin)", NULL},
    {"tokenizer", QMT_FIELD_STRING, 0, 0, "the path of a llama2.c tokenizer.bin", NULL},
    {"system", QMT_FIELD_STRINGS, 0, 0, "an array of strings", NULL},
    {"max_tokens", QMT_FIELD_INTEGER, 1, 1048576, "an integer from 1 to 1048576", NULL},
    {"temperature", QMT_FIELD_NUMBER, 0, 2, "a number from 0 (greedy) to 2", NULL},
    {"top_p", QMT_FIELD_NUMBER, 0, 1, "a number from 0 to 1", NULL},
    {"seed", QMT_FIELD_INTEGER, 0, 9007199254740991.0, "a non-negative integer", NULL},
    {"threads", QMT_FIELD_INTEGER, 1, MAX_THREADS, "an integer from 1 to 16", NULL},
    {"stop_at_eos", QMT_FIELD_BOOLEAN, 0, 0, "a boolean", NULL},
    {"stream", QMT_FIELD_BOOLEAN, 0, 0, "a boolean", NULL},
};

static const char CONFIG_SCHEMA[] =
    "{\"$schema\":\"http://json-schema.org/draft-07/schema#\",\"title\":\"TinyLLMConfig\",\"type\":\"object\","
    "\"properties\":{"
    "\"model\":{\"description\":\"Model id shown in answers; defaults to the checkpoint's file name.\","
    "\"type\":\"string\"},"
    "\"checkpoint\":{\"description\":\"A llama2.c checkpoint: legacy fp32, fp32 v1 or int8 v2. A Wasm build reads "
    "it only from a directory granted with allowed_paths.\",\"type\":\"string\"},"
    "\"tokenizer\":{\"description\":\"The checkpoint's tokenizer.bin (default: tokenizer.bin beside the "
    "checkpoint).\",\"type\":\"string\"},"
    "\"system\":{\"description\":\"Text put before the conversation.\",\"type\":\"array\","
    "\"items\":{\"type\":\"string\"}},"
    "\"max_tokens\":{\"description\":\"Tokens to generate at most.\",\"type\":\"integer\",\"minimum\":1,"
    "\"maximum\":1048576,\"default\":128},"
    "\"temperature\":{\"description\":\"Sampling temperature; 0 always takes the most likely token.\","
    "\"type\":\"number\",\"minimum\":0,\"maximum\":2,\"default\":0.8},"
    "\"top_p\":{\"description\":\"Nucleus sampling: draw from the smallest set of tokens whose probability "
    "exceeds top_p (1: all tokens).\",\"type\":\"number\",\"minimum\":0,\"maximum\":1,\"default\":0.9},"
    "\"seed\":{\"description\":\"Random seed; the same seed gives the same text in both builds. Unset: a new "
    "seed per call.\",\"type\":\"integer\",\"minimum\":0},"
    "\"threads\":{\"description\":\"Threads for the native build (the Wasm build uses one).\","
    "\"type\":\"integer\",\"minimum\":1,\"maximum\":16},"
    "\"stop_at_eos\":{\"description\":\"Stop at the end-of-text token (benchmarks turn this off to generate "
    "exactly max_tokens).\",\"type\":\"boolean\",\"default\":true},"
    "\"stream\":{\"description\":\"Set by the host for streaming calls.\",\"type\":\"boolean\"}"
    "},\"required\":[\"checkpoint\"],\"additionalProperties\":false}";

/* tokenizer.bin in the checkpoint's directory. */
static char *default_tokenizer(const char *checkpoint) {
    const char *slash = strrchr(checkpoint, '/');
    size_t dir = slash ? (size_t)(slash - checkpoint) + 1 : 0;
    char *path = malloc(dir + sizeof "tokenizer.bin");
    if (path) {
        memcpy(path, checkpoint, dir);
        memcpy(path + dir, "tokenizer.bin", sizeof "tokenizer.bin");
    }
    return path;
}

static int32_t read_cfg(const qmt_json *cfg, llm_cfg *c, qmt_buf *out) {
    memset(c, 0, sizeof *c);
    int32_t rc = qmt_check_fields(cfg, FIELDS, sizeof FIELDS / sizeof FIELDS[0], out);
    if (rc) return rc;
    c->checkpoint = qmt_json_string(qmt_json_get(cfg, "checkpoint"), NULL);
    if (!c->checkpoint || !*c->checkpoint)
        return qmt_fail(out, "invalid_request",
                        "cfg.checkpoint is not set: give the path of a llama2.c checkpoint in the provider's "
                        "[providers.config] (the bundled one is ${QUERYMT_JUPYTER_MODELS}/tinyllm-kjv.bin)");
    const char *tokenizer = qmt_json_string(qmt_json_get(cfg, "tokenizer"), NULL);
    c->tokenizer = tokenizer ? strdup(tokenizer) : default_tokenizer(c->checkpoint);
    c->model_name = qmt_json_string(qmt_json_get(cfg, "model"), NULL);
    c->max_tokens = (int)qmt_json_number(qmt_json_get(cfg, "max_tokens"), DEFAULT_MAX_TOKENS);
    c->temperature = (float)qmt_json_number(qmt_json_get(cfg, "temperature"), 0.8);
    c->top_p = (float)qmt_json_number(qmt_json_get(cfg, "top_p"), 0.9);
    c->threads = (int)qmt_json_number(qmt_json_get(cfg, "threads"), default_threads());
    c->stop_at_eos = qmt_json_boolean(qmt_json_get(cfg, "stop_at_eos"), 1);
    const qmt_json *seed = qmt_json_get(cfg, "seed");
    c->has_seed = !qmt_json_is_null(seed);
    c->seed = (uint64_t)qmt_json_number(seed, 0);
    c->system = qmt_json_get(cfg, "system");
    return 0;
}

/* ---- the loaded model, kept between calls --------------------------------------------------------- */

static model *loaded;

static long long mtime_of(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long long)st.st_mtime : -1;
}

/* The model for this cfg: the one already loaded when nothing changed, else a fresh load. */
static model *get_model(const llm_cfg *c, qmt_buf *out) {
    long long mtime = mtime_of(c->checkpoint);
    if (loaded && strcmp(loaded->checkpoint, c->checkpoint) == 0 && strcmp(loaded->tokenizer_path, c->tokenizer) == 0 &&
        loaded->checkpoint_mtime == mtime) {
        pool_resize(c->threads);
        return loaded;
    }
    model_free(loaded);
    loaded = NULL;
    model *m = calloc(1, sizeof *m);
    load_error e = {{0}};
    if (!m) {
        qmt_fail(out, "plugin_error", "out of memory");
        return NULL;
    }
    m->checkpoint = strdup(c->checkpoint);
    m->tokenizer_path = strdup(c->tokenizer);
    m->checkpoint_mtime = mtime;
    if (load_checkpoint(m, c->checkpoint, &e) || load_tokenizer(m, c->tokenizer, &e)) {
        qmt_fail(out, "invalid_request", "%s", e.text);
        model_free(m);
        return NULL;
    }
    qmt_log(3, "tinyllm", "loaded %s: dim %d, %d layers, %d heads, vocab %d, context %d, %s", c->checkpoint, m->c.dim,
            m->c.n_layers, m->c.n_heads, m->c.vocab_size, m->c.seq_len, m->c.group_size ? "int8" : "fp32");
    pool_resize(c->threads);
    return loaded = m;
}

/* ---- generation ---------------------------------------------------------------------------------- */

static uint64_t fresh_seed(void) {
    static uint64_t calls;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ((uint64_t)ts.tv_sec * 1000000007ull) ^ (uint64_t)ts.tv_nsec ^ (++calls * 0x9E3779B97F4A7C15ull);
}

/* Holds back the bytes of an unfinished UTF-8 character so every piece sent is valid text. */
static size_t complete_utf8_prefix(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        int len = utf8_lead_length(s[i]);
        if (i + (size_t)len > n) return i;
        i += (size_t)len;
    }
    return n;
}

/* Appends s to out with invalid UTF-8 replaced by U+FFFD. */
static void put_valid_utf8(qmt_buf *out, const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n;) {
        int len = utf8_length(s + i, n - i);
        if (len == 1 && s[i] >= 0x80) qmt_buf_puts(out, "\xef\xbf\xbd");
        else qmt_buf_put(out, s + i, (size_t)len);
        i += (size_t)len;
    }
}

typedef void (*on_text_fn)(void *ctx, const uint8_t *text, size_t n);

typedef struct {
    qmt_buf text; /* the whole continuation, valid UTF-8 */
    int input_tokens, output_tokens;
    int hit_length; /* stopped by max_tokens or the context, not by end of text */
} generation;

/* Encodes the prompt, runs it through the model and samples up to max_tokens tokens, handing each
   finished piece of text to on_text as it is produced. */
static int32_t generate(model *m, const llm_cfg *c, const uint8_t *prompt, size_t prompt_len, on_text_fn on_text,
                        void *ctx, generation *g, qmt_buf *out) {
    int seq = m->c.seq_len;
    size_t max_bytes = (size_t)seq * 16; /* more than the context holds: keep the prompt's end */
    if (prompt_len > max_bytes) {
        prompt += prompt_len - max_bytes;
        prompt_len = max_bytes;
        while (prompt_len && (*prompt & 0xc0) == 0x80) prompt++, prompt_len--; /* start on a character */
    }
    int cap = (int)prompt_len + 3;
    int *tokens = malloc((size_t)cap * sizeof(int));
    candidate *candidates = malloc((size_t)m->c.vocab_size * sizeof(candidate));
    if (!tokens || !candidates) {
        free(tokens);
        free(candidates);
        return qmt_fail(out, "plugin_error", "out of memory");
    }
    int n = encode(m, prompt, prompt_len, 1, tokens);
    if (n >= seq) { /* keep BOS and the prompt's end, leaving room to answer */
        int keep = seq / 2;
        qmt_log(2, "tinyllm", "the prompt is %d tokens, the context %d: keeping its last %d", n, seq, keep);
        memmove(tokens + 1, tokens + n - keep, (size_t)keep * sizeof(int));
        n = keep + 1;
    }
    g->input_tokens = n;
    sampler s = {c->temperature, c->top_p, {c->has_seed ? c->seed : fresh_seed()}, candidates};
    if (!s.rng.state) s.rng.state = 0x853c49e6748fea9bull; /* xorshift must not start at 0 */
    qmt_buf pending = {0};
    int token = tokens[0], pos = 0;
    for (; pos < seq; pos++) {
        int prompt_token = pos + 1 < n;
        if (!prompt_token && g->output_tokens >= c->max_tokens) {
            g->hit_length = 1;
            break;
        }
        forward(m, token, pos, !prompt_token); /* inside the prompt only the cache matters */
        if (prompt_token) {
            token = tokens[pos + 1];
            continue;
        }
        int next = sample(&s, m->logits, m->c.vocab_size);
        if (c->stop_at_eos && (next == 1 || next == 2)) break;
        decode_piece(m, token, next, &pending);
        g->output_tokens++;
        token = next;
        size_t ready = complete_utf8_prefix(pending.data, pending.len);
        if (ready) {
            size_t before = g->text.len;
            put_valid_utf8(&g->text, pending.data, ready);
            if (on_text) on_text(ctx, g->text.data + before, g->text.len - before);
            memmove(pending.data, pending.data + ready, pending.len - ready);
            pending.len -= ready;
        }
    }
    if (pos == seq) g->hit_length = 1;
    if (pending.len) {
        size_t before = g->text.len;
        put_valid_utf8(&g->text, pending.data, pending.len);
        if (on_text) on_text(ctx, g->text.data + before, g->text.len - before);
    }
    qmt_buf_free(&pending);
    free(tokens);
    free(candidates);
    return 0;
}

/* ---- requests ------------------------------------------------------------------------------------- */

static int32_t parse_input(qmt_slice in, qmt_json_doc *doc, const qmt_json **root, qmt_buf *out) {
    char err[128];
    *root = qmt_json_parse(in, doc, err, sizeof err);
    return *root ? 0 : qmt_fail(out, "json_error", "invalid JSON: %s", err);
}

/* Parses {"cfg": {...}, ...} and loads the model; the caller frees doc and cfg (also on failure). */
static int32_t open_request(qmt_slice in, qmt_json_doc *doc, const qmt_json **root, llm_cfg *c, model **m, qmt_buf *out) {
    memset(c, 0, sizeof *c);
    int32_t rc = parse_input(in, doc, root, out);
    if (rc) return rc;
    if ((*root)->type != QMT_JSON_OBJECT) return qmt_fail(out, "json_error", "expected a JSON object");
    rc = read_cfg(qmt_json_get(*root, "cfg"), c, out);
    if (rc) return rc;
    *m = get_model(c, out);
    return *m ? 0 : 1;
}

static void close_request(qmt_json_doc *doc, llm_cfg *c) {
    qmt_json_doc_free(doc);
    free(c->tokenizer);
}

/* The chat template of a base model: system texts, then each message's text blocks, one per line; the
   model continues the last line. */
static int32_t chat_prompt(const qmt_json *root, const llm_cfg *c, qmt_buf *prompt, qmt_buf *out) {
    const qmt_json *messages = qmt_json_get(root, "messages");
    if (!messages || messages->type != QMT_JSON_ARRAY)
        return qmt_fail(out, "json_error", messages ? "`messages` must be an array" : "missing field `messages`");
    qmt_json_foreach(system, c->system) {
        qmt_buf_put(prompt, system->str, system->len);
        qmt_buf_putc(prompt, '\n');
    }
    size_t index = 0;
    qmt_json_foreach(msg, messages) {
        const qmt_json *content = qmt_json_get(msg, "content");
        if (msg->type != QMT_JSON_OBJECT || !content || content->type != QMT_JSON_ARRAY)
            return qmt_fail(out, "json_error", "messages[%zu]: expected an object with a `content` array", index);
        if (index++) qmt_buf_putc(prompt, '\n');
        qmt_json_foreach(block, content) {
            const qmt_json *text = qmt_json_get(block, "text");
            if (strcmp(qmt_json_string(qmt_json_get(block, "type"), ""), "text") == 0 && text &&
                text->type == QMT_JSON_STRING)
                qmt_buf_put(prompt, text->str, text->len);
        }
    }
    return 0;
}

static const char *model_id(const llm_cfg *c, qmt_buf *scratch) {
    if (c->model_name) return c->model_name;
    const char *slash = strrchr(c->checkpoint, '/'), *name = slash ? slash + 1 : c->checkpoint;
    size_t len = strlen(name);
    if (len > 4 && strcmp(name + len - 4, ".bin") == 0) len -= 4;
    qmt_buf_put(scratch, name, len);
    return (const char *)scratch->data;
}

static qmt_usage usage_of(const generation *g) {
    return (qmt_usage){(size_t)g->input_tokens, (size_t)g->output_tokens};
}

static const char *finish_reason(const generation *g) { return g->hit_length ? "Length" : "Stop"; }

static int32_t run_chat(qmt_slice in, on_text_fn on_text, void *ctx, generation *g, qmt_buf *out) {
    qmt_json_doc doc = {0};
    const qmt_json *root;
    llm_cfg c;
    model *m;
    qmt_buf prompt = {0};
    int32_t rc = open_request(in, &doc, &root, &c, &m, out);
    if (!rc) rc = chat_prompt(root, &c, &prompt, out);
    if (!rc) rc = generate(m, &c, prompt.data, prompt.len, on_text, ctx, g, out);
    qmt_buf_free(&prompt);
    close_request(&doc, &c);
    return rc;
}

static int32_t op_chat(qmt_slice in, qmt_buf *out) {
    generation g = {0};
    int32_t rc = run_chat(in, NULL, NULL, &g, out);
    if (!rc) {
        qmt_json_write_chat_response(out, (const char *)g.text.data, g.text.len, usage_of(&g), finish_reason(&g));
    }
    qmt_buf_free(&g.text);
    return rc;
}

/* on_text for chat_stream: each finished piece becomes a text chunk. */
static void stream_text(void *scratch, const uint8_t *text, size_t n) { qmt_yield_text(scratch, (const char *)text, n); }

static int32_t op_chat_stream(qmt_slice in, qmt_buf *out) {
    generation g = {0};
    qmt_buf chunk = {0};
    int32_t rc = run_chat(in, stream_text, &chunk, &g, out);
    if (!rc) qmt_yield_end(&chunk, usage_of(&g), finish_reason(&g));
    qmt_buf_free(&chunk);
    qmt_buf_free(&g.text);
    return rc;
}

static int32_t op_complete(qmt_slice in, qmt_buf *out) {
    qmt_json_doc doc = {0};
    const qmt_json *root;
    llm_cfg c;
    model *m;
    generation g = {0};
    int32_t rc = open_request(in, &doc, &root, &c, &m, out);
    const qmt_json *req = rc ? NULL : qmt_json_get(root, "req");
    const qmt_json *prompt = qmt_json_get(req, "prompt");
    if (!rc && (!prompt || prompt->type != QMT_JSON_STRING))
        rc = qmt_fail(out, "json_error", "req: missing string field `prompt`");
    if (!rc) {
        const qmt_json *max = qmt_json_get(req, "max_tokens"), *temperature = qmt_json_get(req, "temperature");
        if (!qmt_json_is_null(max) && !qmt_json_is_integer(max, 0, 1048576))
            rc = qmt_fail(out, "json_error", "req.max_tokens: expected an integer from 0 to 1048576 or null");
        else if (!qmt_json_is_null(temperature) && (temperature->type != QMT_JSON_NUMBER || temperature->num < 0))
            rc = qmt_fail(out, "json_error", "req.temperature: expected a non-negative number or null");
        if (!rc && !qmt_json_is_null(max)) c.max_tokens = (int)max->num;
        if (!rc && !qmt_json_is_null(temperature)) c.temperature = (float)temperature->num;
    }
    if (!rc) rc = generate(m, &c, (const uint8_t *)prompt->str, prompt->len, NULL, NULL, &g, out);
    if (!rc) {
        qmt_buf_puts(out, "{\"text\":");
        qmt_json_write_string(out, (const char *)g.text.data, g.text.len);
        qmt_buf_putc(out, '}');
    }
    qmt_buf_free(&g.text);
    close_request(&doc, &c);
    return rc;
}

/* Mean of the final hidden states over the text's tokens (BOS included), L2-normalised. */
static int embed_text(model *m, const qmt_json *text, float *v) {
    int dim = m->c.dim, *tokens = malloc((text->len + 3) * sizeof(int));
    if (!tokens) return 1;
    int n = encode(m, (const uint8_t *)text->str, text->len, 1, tokens);
    if (n > m->c.seq_len) n = m->c.seq_len; /* the context's worth of the text */
    memset(v, 0, (size_t)dim * sizeof(float));
    for (int pos = 0; pos < n; pos++) {
        forward(m, tokens[pos], pos, 0);
        for (int i = 0; i < dim; i++) v[i] += m->xb[i];
    }
    free(tokens);
    float norm = sqrtf(dot_f32(v, v, dim));
    for (int i = 0; i < dim; i++) v[i] = norm > 0 ? v[i] / norm : 0;
    return 0;
}

static int32_t op_embed(qmt_slice in, qmt_buf *out) {
    qmt_json_doc doc = {0};
    const qmt_json *root;
    llm_cfg c;
    model *m;
    int32_t rc = open_request(in, &doc, &root, &c, &m, out);
    const qmt_json *inputs = rc ? NULL : qmt_json_get(root, "inputs");
    if (!rc && (!inputs || inputs->type != QMT_JSON_ARRAY))
        rc = qmt_fail(out, "json_error", inputs ? "`inputs` must be an array of strings" : "missing field `inputs`");
    size_t index = 0;
    qmt_json_foreach(item, inputs) {
        if (!rc && item->type != QMT_JSON_STRING) rc = qmt_fail(out, "json_error", "inputs[%zu]: expected a string", index);
        index++;
    }
    float *v = rc ? NULL : malloc((size_t)m->c.dim * sizeof(float));
    if (!rc && !v) rc = qmt_fail(out, "plugin_error", "out of memory");
    if (!rc) qmt_buf_putc(out, '[');
    qmt_json_foreach(item, rc ? NULL : inputs) {
        if (embed_text(m, item, v)) {
            rc = qmt_fail(out, "plugin_error", "out of memory");
            break;
        }
        qmt_buf_puts(out, item == inputs->child ? "[" : ",[");
        for (int d = 0; d < m->c.dim; d++) {
            if (d) qmt_buf_putc(out, ',');
            qmt_json_write_float(out, v[d]);
        }
        qmt_buf_putc(out, ']');
    }
    if (!rc) qmt_buf_putc(out, ']');
    free(v);
    close_request(&doc, &c);
    return rc;
}

/* {"cfg", "text"} -> the token ids of text (with BOS), as the model sees a prompt. */
static int32_t op_tokenize(qmt_slice in, qmt_buf *out) {
    qmt_json_doc doc = {0};
    const qmt_json *root;
    llm_cfg c;
    model *m;
    int32_t rc = open_request(in, &doc, &root, &c, &m, out);
    const qmt_json *text = rc ? NULL : qmt_json_get(root, "text");
    if (!rc && (!text || text->type != QMT_JSON_STRING)) rc = qmt_fail(out, "json_error", "missing string field `text`");
    if (!rc) {
        int *tokens = malloc((text->len + 3) * sizeof(int));
        if (!tokens) rc = qmt_fail(out, "plugin_error", "out of memory");
        else {
            int n = encode(m, (const uint8_t *)text->str, text->len, 1, tokens);
            qmt_buf_putc(out, '[');
            for (int i = 0; i < n; i++) qmt_buf_printf(out, i ? ",%d" : "%d", tokens[i]);
            qmt_buf_putc(out, ']');
        }
        free(tokens);
    }
    close_request(&doc, &c);
    return rc;
}

/* {"cfg", "tokens": [...]} -> the logits after each token, one array per position. */
static int32_t op_logits(qmt_slice in, qmt_buf *out) {
    qmt_json_doc doc = {0};
    const qmt_json *root;
    llm_cfg c;
    model *m;
    int32_t rc = open_request(in, &doc, &root, &c, &m, out);
    const qmt_json *tokens = rc ? NULL : qmt_json_get(root, "tokens");
    if (!rc && (!tokens || tokens->type != QMT_JSON_ARRAY || tokens->len > (size_t)m->c.seq_len))
        rc = qmt_fail(out, "json_error", "`tokens` must be an array of at most %d token ids", m->c.seq_len);
    qmt_json_foreach(t, rc ? NULL : tokens) {
        if (!qmt_json_is_integer(t, 0, m->c.vocab_size - 1)) {
            rc = qmt_fail(out, "json_error", "tokens: %.*s is not a token id below %d", (int)t->raw.len,
                          (const char *)t->raw.data, m->c.vocab_size);
            break;
        }
    }
    if (!rc) {
        int pos = 0;
        qmt_buf_putc(out, '[');
        qmt_json_foreach(t, tokens) {
            forward(m, (int)t->num, pos, 1);
            qmt_buf_puts(out, pos++ ? ",[" : "[");
            for (int i = 0; i < m->c.vocab_size; i++) {
                if (i) qmt_buf_putc(out, ',');
                qmt_json_write_float(out, m->logits[i]);
            }
            qmt_buf_putc(out, ']');
        }
        qmt_buf_putc(out, ']');
    }
    close_request(&doc, &c);
    return rc;
}

/* ---- the small operations -------------------------------------------------------------------------- */

QMT_TEXT_OP(op_name, "tinyllm")
QMT_TEXT_OP(op_config_schema, CONFIG_SCHEMA)

/* Checks the cfg and loads the model, so a bad checkpoint is reported when the provider is built. */
static int32_t check_cfg_input(qmt_slice in, qmt_buf *out) {
    qmt_json_doc doc = {0};
    const qmt_json *root;
    llm_cfg c = {0};
    int32_t rc = parse_input(in, &doc, &root, out);
    if (!rc) rc = read_cfg(root, &c, out);
    if (!rc && !get_model(&c, out)) rc = 1;
    close_request(&doc, &c);
    return rc;
}

static int32_t op_from_config(qmt_slice in, qmt_buf *out) {
    int32_t rc = check_cfg_input(in, out);
    if (!rc) qmt_buf_put(out, in.data, in.len);
    return rc;
}

QMT_TEXT_OP(op_supports_streaming, "true")

static int32_t op_list_models(qmt_slice in, qmt_buf *out) {
    qmt_json_doc doc = {0};
    const qmt_json *root;
    llm_cfg c = {0};
    qmt_buf name = {0};
    int32_t rc = parse_input(in, &doc, &root, out);
    if (!rc) rc = read_cfg(root, &c, out);
    if (!rc) {
        qmt_buf_putc(out, '[');
        qmt_json_write_cstr(out, model_id(&c, &name));
        qmt_buf_putc(out, ']');
    }
    qmt_buf_free(&name);
    close_request(&doc, &c);
    return rc;
}

#define TINYLLM_OPS(X)                                                                                         \
    X(name, op_name)                                                                                           \
    X(api_key_name, qmt_op_empty) /* no key */                                                                 \
    X(config_schema, op_config_schema)                                                                         \
    X(init_logging, qmt_op_init_logging)                                                                       \
    X(from_config, op_from_config)                                                                             \
    X(supports_streaming, op_supports_streaming)                                                               \
    X(chat, op_chat)                                                                                           \
    X(chat_stream, op_chat_stream)                                                                             \
    X(complete, op_complete)                                                                                   \
    X(embed, op_embed)                                                                                         \
    X(list_models, op_list_models)                                                                             \
    X(tokenize, op_tokenize)                                                                                   \
    X(logits, op_logits)
QMT_PLUGIN(TINYLLM_OPS)
