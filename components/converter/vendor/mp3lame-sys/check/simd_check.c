/*
 * Tapedeck: checks LAME's WebAssembly SIMD kernels against LAME's scalar C.
 *
 * Built twice for wasm32-wasi, with and without -msimd128, from the same inputs (a fixed
 * pseudo-random sequence). Both builds print window_subband's and fht's outputs, which
 * tests/tests/lame_simd.rs compares; the SIMD build also checks init_xrpow_core and
 * ix_max against scalar references itself and exits 1 on a mismatch.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HAVE_CONFIG_H 1
#include "newmdct.c"
#include "vector/wasm_simd.c"
#include "fft.c"

static unsigned rs = 12345;
static float
rnd(void)
{
    rs = rs * 1103515245u + 12345u;
    return ((rs >> 8) & 0xffff) / 32768.0f - 1.0f;
}

#ifdef __wasm_simd128__
static int
ix_max_ref(const int *ix, const int *end)
{
    int     m = 0;
    for (; ix < end; ix++)
        if (*ix > m)
            m = *ix;
    return m;
}

static int
check_xrpow_and_ix_max(void)
{
    static gr_info gi;
    FLOAT   xp[576], xq[576], sum, sum2, mx;
    int     r, i, up, n, ix[576];
    for (r = 0; r < 400; r++) {
        for (i = 0; i < 576; i++)
            gi.xr[i] = rnd() * 100;
        up = r % 576;
        gi.xrpow_max = 0;
        memset(xp, 0, sizeof xp);
        init_xrpow_core_wasm_simd(&gi, xp, up, &sum);
        sum2 = 0;
        mx = 0;
        memset(xq, 0, sizeof xq);
        for (i = 0; i <= up; i++) {
            FLOAT   t = fabs(gi.xr[i]);
            sum2 += t;
            xq[i] = sqrt(t * sqrt(t));
            if (xq[i] > mx)
                mx = xq[i];
        }
        for (i = 0; i < 576; i++)
            if (fabs(xp[i] - xq[i]) > 1e-5 * (1 + fabs(xq[i]))) {
                printf("init_xrpow mismatch: upper %d, index %d: %g vs %g\n", up, i, xp[i], xq[i]);
                return 1;
            }
        if (fabs(sum - sum2) > 1e-4 * sum2 || fabs(mx - gi.xrpow_max) > 1e-5 * mx) {
            printf("init_xrpow sum/max mismatch: %g/%g vs %g/%g\n", sum, gi.xrpow_max, sum2, mx);
            return 1;
        }
        for (i = 0; i < 576; i++) {
            rs = rs * 1103515245u + 12345u;
            ix[i] = rs >> 20;
        }
        n = 2 * (1 + r % 288);
        if (ix_max_wasm_simd(ix, ix + n) != ix_max_ref(ix, ix + n)) {
            printf("ix_max mismatch over %d values\n", n);
            return 1;
        }
    }
    return 0;
}
#endif

int
main(void)
{
    static sample_t buf[4096];
    static FLOAT a[32], fz[1024];
    int     r, i;
    for (r = 0; r < 64; r++) {
        for (i = 0; i < 4096; i++)
            buf[i] = rnd() * 1000;
        window_subband(buf + 2000 + r, a);
        for (i = 0; i < 32; i++)
            printf("window_subband %d %d %.9e\n", r, i, a[i]);
        for (i = 0; i < 1024; i++)
            fz[i] = rnd();
        fht(fz, r & 1 ? BLKSIZE / 2 : BLKSIZE_s / 2);
        for (i = 0; i < 1024; i++)
            printf("fht %d %d %.9e\n", r, i, fz[i]);
    }
#ifdef __wasm_simd128__
    if (check_xrpow_and_ix_max())
        return 1;
#endif
    return 0;
}
