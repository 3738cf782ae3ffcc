# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The packet path, one extension module: QUIC-LB decoder, route table, decision,
AF_XDP socket and the forwarding loop.

One module (uvloop's layout: included parts) so the per-packet calls (parse, decode,
decide, rewrite) are static functions of one C file and inline into the loop. The
parts, each one concern:

    abi.pxi           names and numbers of bpf/include/pesigitg_abi.h, for Python
    cid.pxi           QUIC-LB decode (AES-NI; keyed CIDs of a batch together), CidDecoder
    table.pxi         the route-table blob packed, Maglev fill
    routetable.pxi    RouteTable: a blob validated
    flows.pxi         the fallback flow table
    decide.pxi        the routing decision over the shared parser, frame and batch
    gcm.pxi           AES-128-GCM
    retry.pxi         the Retry offload: when, and what it does with an Initial
    retry_token.pxi   its tokens, sealed and opened
    retry_packet.pxi  the Retry packet and the frame that carries it
    xsk.pxi           the AF_XDP socket
    xsk_state.pxi     its UMEM state page and rings, checked; the census
    engine.pxi        the engine: tables, counters, Python API
    stateful.pxi      what the decision leaves to the worker: flow table, fan-out
    loop.pxi          the forwarding loop
    batch.pxi         one batch through the decision, for the loop and the benchmark
    decide_entries.pxi  the decision's entries for tests and benchmarks

C declarations live in includes/*.pxd, C shims and layouts in includes/*.h.
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.errno cimport EAGAIN, EBUSY, EINTR, EINVAL, ENOPROTOOPT, EOPNOTSUPP, errno
from libc.stdint cimport int8_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcmp, memcpy, memset
from posix.mman cimport MAP_FAILED, MAP_SHARED, PROT_READ, PROT_WRITE, mmap, munmap
from posix.time cimport CLOCK_MONOTONIC, CLOCK_REALTIME, clock_gettime, timespec
from posix.unistd cimport close, ftruncate, read, write

from pesigitg._fastpath.includes.abi cimport *
from pesigitg._fastpath.includes.xskring cimport *

import mmap as _mmap
import os
import time

from pesigitg.errors import os_error

DEF NS = 1000000000
DEF MAX_BATCH = 256       # frames decided together at most (cidbatch.h allows 256)
DEFAULT_BATCH = 64

include "abi.pxi"
include "cid.pxi"
include "table.pxi"
include "routetable.pxi"
include "flows.pxi"
include "decide.pxi"
include "gcm.pxi"
include "retry.pxi"
include "retry_token.pxi"
include "retry_packet.pxi"
include "xsk.pxi"
include "xsk_state.pxi"
include "engine.pxi"
include "stateful.pxi"
include "loop.pxi"
include "batch.pxi"
include "decide_entries.pxi"
