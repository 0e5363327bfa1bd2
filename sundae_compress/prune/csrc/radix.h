/* LSD radix sort shared by the grid build (knn.c) and the edge-cost argsort (merge.c). */
#ifndef SUNDAE_RADIX_H
#define SUNDAE_RADIX_H
#include <stdint.h>
#include <string.h>

/* LSD radix sort of n uint64 keys (ka, scratch kb) carrying an index array (idx, scratch ib) of
   type IDX_T, D bits per pass over the low nbits bits; hist has 2^D entries. Stable. `sorted` is
   set to whichever of ka/kb holds the sorted keys; the sorted indices always end up in idx. */
#define RADIX_SORT(IDX_T, ka, kb, idx, ib, n, nbits, D, hist, sorted) do { \
    const int64_t B_ = (int64_t)1 << (D); \
    uint64_t *ks_ = (ka), *kd_ = (kb); IDX_T *is_ = (idx), *id_ = (ib); \
    for (int shift_ = 0; shift_ < (nbits); shift_ += (D)) { \
        memset((hist), 0, sizeof(int64_t) * B_); \
        for (int64_t i_ = 0; i_ < (n); i_++) (hist)[(ks_[i_] >> shift_) & (B_ - 1)]++; \
        int64_t acc_ = 0; \
        for (int64_t b_ = 0; b_ < B_; b_++) { int64_t t_ = (hist)[b_]; (hist)[b_] = acc_; acc_ += t_; } \
        for (int64_t i_ = 0; i_ < (n); i_++) { \
            int64_t o_ = (hist)[(ks_[i_] >> shift_) & (B_ - 1)]++; \
            kd_[o_] = ks_[i_]; id_[o_] = is_[i_]; \
        } \
        uint64_t *t1_ = ks_; ks_ = kd_; kd_ = t1_; IDX_T *t2_ = is_; is_ = id_; id_ = t2_; \
    } \
    if (is_ != (idx)) memcpy((idx), is_, sizeof(IDX_T) * (n)); \
    (sorted) = ks_; \
} while (0)

#endif
