# C declarations of the packet path: one .pxd per C header (family).
