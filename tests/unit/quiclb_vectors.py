"""Test vectors of draft-ietf-quic-load-balancers-21 (also in shared/vectors/).

Each entry: (config_id, server_id_len, nonce_len, key, server_id, nonce, cid), all
octet strings as hex. Every CID self-encodes its length (first octet low bits).
"""

# draft-ietf-quic-load-balancers-21, Appendix B (Test Vectors)
APPENDIX_B = [
    # plaintext
    (0, 3, 4, None, "c4605e", "4504cc4f", "07c4605e4504cc4f"),
    # four-pass, odd length (7)
    (0, 3, 4, "8f95f09245765f80256934e50c66207f", "ed793a", "ee080dbf", "0720b1d07b359d3c"),
    # four-pass, odd length (15), server ID longer than nonce: all four rounds
    (1, 10, 5, "8f95f09245765f80256934e50c66207f", "ed793a51d49b8f5fab65", "ee080dbf48",
     "2fcc381bc74cb4fbad2823a3d1f8fed2"),
    # single pass (8 + 8 = 16 octets)
    (2, 8, 8, "8f95f09245765f80256934e50c66207f", "ed793a51d49b8f5f", "ee080dbf48c0d1e5",
     "504dd2d05a7b0de9b2b9907afb5ecf8cc3"),
]

# draft-ietf-quic-load-balancers-21, Section 5.4.2.4 (four-pass worked example)
WORKED_EXAMPLE = [
    (0, 3, 4, "fdf726a9893ec05c0632d3956680baf0", "31441a", "9c69c275", "0767947d29be054a"),
]

ALL = APPENDIX_B + WORKED_EXAMPLE
