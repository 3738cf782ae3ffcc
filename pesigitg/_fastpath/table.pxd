from pesigitg._fastpath.includes.routetable cimport pes_route_table


cdef class RouteTable:
    cdef readonly bytes blob
    cdef const pes_route_table *table
