/* The QUIC-LB decode table the packet path reads without the GIL.
 *
 * One slot per config id 0..6 (§3 of draft-ietf-quic-load-balancers-21). Python
 * packs it (pack_cid_table in cid.pxi); the route-table blob embeds it. Limits come
 * from pesigitg_abi.h.
 */
#ifndef PESIGITG_CIDTABLE_H
#define PESIGITG_CIDTABLE_H

#include <stdint.h>
#include "aesni.h"
#include "pesigitg_abi.h"

/* enum pes_cid_mode is in pesigitg_abi.h: the kernel tier reads it too. */

/* Negative results of a decode; 0..6 is the config id that decoded. */
enum pes_cid_result {
    PES_CID_NO_CONFIG = -1, /* config id 7 or a slot with no config */
    PES_CID_TOO_SHORT = -2, /* fewer octets than the config's CID length */
};

typedef struct {
    uint8_t mode;
    uint8_t server_id_len;
    uint8_t nonce_len;
    uint8_t cid_len;
    uint8_t reserved[12];
    pes_aes128_key key;
} pes_cid_config;

typedef struct {
    pes_cid_config conf[PES_CID_CONFIGS];
} pes_cid_table;

#endif /* PESIGITG_CIDTABLE_H */
