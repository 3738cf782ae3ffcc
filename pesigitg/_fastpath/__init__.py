"""Compiled packet path: AES-NI, the QUIC-LB decoder and (later) the AF_XDP loop."""
