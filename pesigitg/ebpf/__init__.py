"""Pure-Python eBPF loader: ELF and BTF (pyelftools), bpf(2) (ctypes), XDP (pyroute2)."""

from pesigitg.ebpf.loader import LoadedObject, load_object
from pesigitg.ebpf.maps import Map, MapType
from pesigitg.ebpf.obj import ObjectError
from pesigitg.ebpf.program import Program, VerifierError, load_program
from pesigitg.ebpf.xdp import Verdict, XdpAttachError, XdpProgram

__all__ = ["LoadedObject", "Map", "MapType", "ObjectError", "Program", "Verdict",
           "VerifierError", "XdpAttachError", "XdpProgram", "load_object", "load_program"]
