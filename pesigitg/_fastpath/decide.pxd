from libc.stdint cimport uint8_t

from pesigitg._fastpath.includes.decision cimport pes_decision
from pesigitg._fastpath.includes.routetable cimport pes_route_table


# Decide where ``frame`` goes; returns 1 to forward (d.backend), 0 to drop (d.drop).
cdef int decide(const pes_route_table *t, const uint8_t *frame, size_t len,
                pes_decision *d) noexcept nogil

# Rewrite the Ethernet header for a forwarding decision.
cdef void rewrite(const pes_route_table *t, uint8_t *frame, const pes_decision *d
                  ) noexcept nogil
