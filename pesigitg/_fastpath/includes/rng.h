/* A worker's random numbers for Retries (token numbers, Retry source CIDs): AES-128 in
 * counter mode under a key drawn from the kernel's CSPRNG when the engine starts, so
 * the loop never makes a system call for them. */
#ifndef PESIGITG_RNG_H
#define PESIGITG_RNG_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "aesni.h"

typedef struct {
    pes_aes128_key key;
    uint64_t counter;
    uint8_t pool[16];
    uint32_t left;          /* unused octets at the end of pool */
} pes_rng;

static inline void pes_rng_seed(pes_rng *r, const uint8_t key[16])
{
    pes_aes128_expand(key, &r->key);
    r->counter = 0;
    r->left = 0;
}

static inline void pes_rng_bytes(pes_rng *r, uint8_t *out, size_t n)
{
    uint8_t block[16] = {0};

    while (n) {
        size_t take;

        if (r->left == 0) {
            memcpy(block, &r->counter, sizeof(r->counter));
            r->counter++;
            pes_aes128_encrypt(&r->key, block, r->pool);
            r->left = 16;
        }
        take = n < r->left ? n : r->left;
        memcpy(out, r->pool + 16 - r->left, take);
        r->left -= (uint32_t)take;
        out += take;
        n -= take;
    }
}

#endif /* PESIGITG_RNG_H */
