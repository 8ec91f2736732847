/*
 * Tapedeck: WebAssembly SIMD (simd128) versions of LAME hot loops.
 *
 * LAME ships SSE versions of these (xmm_quantize_sub.c) that its build never selects
 * without NASM; natively gcc/clang vectorise the C loops well enough. For wasm32, clang's
 * scalar code runs through Cranelift 2-3x slower than native, so these kernels spell the
 * vector code out. Results equal the C versions' up to float rounding order.
 *
 * Licensed like the rest of LAME (LGPL-2.0-or-later).
 */
#ifdef HAVE_CONFIG_H
# include <config.h>
#endif

#ifdef __wasm_simd128__

#include <wasm_simd128.h>

#include "lame.h"
#include "machine.h"
#include "encoder.h"
#include "util.h"
#include "wasm_simd.h"

/* init_xrpow_core_c: xrpow[i] = |xr[i]|^(3/4) for i <= upper, their sum of |xr|, their max. */
void
init_xrpow_core_wasm_simd(gr_info * const cod_info, FLOAT xrpow[576], int upper, FLOAT * sum)
{
    int const n = upper + 1;    /* the C version includes index `upper` */
    int     i = 0;
    v128_t  vsum = wasm_f32x4_splat(0), vmax = wasm_f32x4_splat(0);
    float   tsum, tmax;
    for (; i + 4 <= n; i += 4) {
        v128_t const x = wasm_f32x4_abs(wasm_v128_load(&cod_info->xr[i]));
        v128_t const p = wasm_f32x4_sqrt(wasm_f32x4_mul(x, wasm_f32x4_sqrt(x)));
        vsum = wasm_f32x4_add(vsum, x);
        vmax = wasm_f32x4_pmax(vmax, p);
        wasm_v128_store(&xrpow[i], p);
    }
    tsum = wasm_f32x4_extract_lane(vsum, 0) + wasm_f32x4_extract_lane(vsum, 1)
        + wasm_f32x4_extract_lane(vsum, 2) + wasm_f32x4_extract_lane(vsum, 3);
    tmax = cod_info->xrpow_max;
    for (int l = 0; l < 4; l++) {
        float const m = l == 0 ? wasm_f32x4_extract_lane(vmax, 0)
            : l == 1 ? wasm_f32x4_extract_lane(vmax, 1)
            : l == 2 ? wasm_f32x4_extract_lane(vmax, 2) : wasm_f32x4_extract_lane(vmax, 3);
        if (m > tmax)
            tmax = m;
    }
    for (; i < n; i++) {
        FLOAT const x = fabs(cod_info->xr[i]);
        tsum += x;
        xrpow[i] = sqrt(x * sqrt(x));
        if (xrpow[i] > tmax)
            tmax = xrpow[i];
    }
    cod_info->xrpow_max = tmax;
    *sum = tsum;
}

/* One stage of fft.c's fht: the butterflies for i = 1, 2, ... four i at a time while
 * i + 3 < kx. Returns the first i left to fft.c's scalar loop and that i's twiddles in
 * *c1, *s1. The twiddles (c1, s1, c2, s2) of every i follow fft.c's recurrence exactly;
 * they are computed once per stage into tables. Lanes i..i+3 touch fi = fz+i..
 * (ascending) and gi = fz+k1-i.. (descending, so loaded and stored reversed); for
 * i + 3 < kx the two ranges never overlap. */
#define FHT_STAGES 4            /* fft.c's TRI_SIZE */
#define FHT_MAX_KX 512
static float tw_c1[FHT_STAGES][FHT_MAX_KX];
static float tw_s1[FHT_STAGES][FHT_MAX_KX];
static float tw_c2[FHT_STAGES][FHT_MAX_KX];
static float tw_s2[FHT_STAGES][FHT_MAX_KX];
static int tw_ready[FHT_STAGES];

static void
fht_twiddles(int st, FLOAT const *tri, int kx)
{
    FLOAT   c1 = tri[0], s1 = tri[1];
    int     i;
    for (i = 1; i < kx; i++) {
        FLOAT   c2 = 1 - (2 * s1) * s1;
        FLOAT   s2 = (2 * s1) * c1;
        tw_c1[st][i] = c1;
        tw_s1[st][i] = s1;
        tw_c2[st][i] = c2;
        tw_s2[st][i] = s2;
        c2 = c1;
        c1 = c2 * tri[0] - s1 * tri[1];
        s1 = c2 * tri[1] + s1 * tri[0];
    }
    tw_ready[st] = 1;
}

#define REV(v) wasm_i32x4_shuffle((v), (v), 3, 2, 1, 0)
#define LOADR(p) REV(wasm_v128_load(p))
#define STORER(p, v) wasm_v128_store((p), REV(v))

int
fht_stage_wasm_simd(FLOAT * fz, FLOAT const *fn, int st, FLOAT const *tri, int kx, int k1,
                    int k2, int k3, int k4, FLOAT * c1_out, FLOAT * s1_out)
{
    int     i = 1;
    if (st >= FHT_STAGES || kx > FHT_MAX_KX)
        return 1;               /* not for LAME's sizes (n <= BLKSIZE): all scalar */
    if (!tw_ready[st])
        fht_twiddles(st, tri, kx);
    for (; i + 3 < kx; i += 4) {
        v128_t const c1 = wasm_v128_load(&tw_c1[st][i]);
        v128_t const s1 = wasm_v128_load(&tw_s1[st][i]);
        v128_t const c2 = wasm_v128_load(&tw_c2[st][i]);
        v128_t const s2 = wasm_v128_load(&tw_s2[st][i]);
        FLOAT  *f = fz + i;
        FLOAT  *g = fz + k1 - i - 3;
        do {
            v128_t  a, b, f0, f1, f2, f3, g0, g1, g2, g3;
            v128_t const fk1 = wasm_v128_load(f + k1), gk1 = LOADR(g + k1);
            v128_t const fk3 = wasm_v128_load(f + k3), gk3 = LOADR(g + k3);
            v128_t const f00 = wasm_v128_load(f), g00 = LOADR(g);
            v128_t const fk2 = wasm_v128_load(f + k2), gk2 = LOADR(g + k2);
            b = wasm_f32x4_sub(wasm_f32x4_mul(s2, fk1), wasm_f32x4_mul(c2, gk1));
            a = wasm_f32x4_add(wasm_f32x4_mul(c2, fk1), wasm_f32x4_mul(s2, gk1));
            f1 = wasm_f32x4_sub(f00, a);
            f0 = wasm_f32x4_add(f00, a);
            g1 = wasm_f32x4_sub(g00, b);
            g0 = wasm_f32x4_add(g00, b);
            b = wasm_f32x4_sub(wasm_f32x4_mul(s2, fk3), wasm_f32x4_mul(c2, gk3));
            a = wasm_f32x4_add(wasm_f32x4_mul(c2, fk3), wasm_f32x4_mul(s2, gk3));
            f3 = wasm_f32x4_sub(fk2, a);
            f2 = wasm_f32x4_add(fk2, a);
            g3 = wasm_f32x4_sub(gk2, b);
            g2 = wasm_f32x4_add(gk2, b);
            b = wasm_f32x4_sub(wasm_f32x4_mul(s1, f2), wasm_f32x4_mul(c1, g3));
            a = wasm_f32x4_add(wasm_f32x4_mul(c1, f2), wasm_f32x4_mul(s1, g3));
            wasm_v128_store(f + k2, wasm_f32x4_sub(f0, a));
            wasm_v128_store(f, wasm_f32x4_add(f0, a));
            STORER(g + k3, wasm_f32x4_sub(g1, b));
            STORER(g + k1, wasm_f32x4_add(g1, b));
            b = wasm_f32x4_sub(wasm_f32x4_mul(c1, g2), wasm_f32x4_mul(s1, f3));
            a = wasm_f32x4_add(wasm_f32x4_mul(s1, g2), wasm_f32x4_mul(c1, f3));
            STORER(g + k2, wasm_f32x4_sub(g0, a));
            STORER(g, wasm_f32x4_add(g0, a));
            wasm_v128_store(f + k3, wasm_f32x4_sub(f1, b));
            wasm_v128_store(f + k1, wasm_f32x4_add(f1, b));
            f += k4;
            g += k4;
        } while (f < fn);
    }
    if (i < kx) {
        *c1_out = tw_c1[st][i];
        *s1_out = tw_s1[st][i];
    }
    return i;
}

#else
/* Native builds: nothing here (an empty translation unit is not ISO C). */
typedef int lame_wasm_simd_unused;
#endif /* __wasm_simd128__ */
