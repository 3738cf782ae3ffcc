/* The Internet checksum (RFC 1071), for the headers of packets the worker writes
 * itself (Retries): a 32-bit running sum of 16-bit big-endian words, then folded. */
#ifndef PESIGITG_CHECKSUM_H
#define PESIGITG_CHECKSUM_H

#include <stddef.h>
#include <stdint.h>

/* Add ``len`` octets starting at an even offset of the summed data. */
static inline uint32_t pes_csum_add(uint32_t sum, const uint8_t *p, size_t len)
{
    for (; len >= 2; p += 2, len -= 2)
        sum += (uint32_t)p[0] << 8 | p[1];
    if (len)
        sum += (uint32_t)p[0] << 8;
    return sum;
}

/* The checksum of everything summed: folded, complemented (0 stays 0xffff for UDP,
 * whose zero means "no checksum"). */
static inline uint16_t pes_csum_fold(uint32_t sum)
{
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

#endif /* PESIGITG_CHECKSUM_H */
