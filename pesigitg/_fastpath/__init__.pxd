# The compiled packet path (one extension module, fastpath.pyx).
