"""The pure-Python loader: maps of every type we use, relocations, verifier errors."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from pesigitg._fastpath import XDP_VERDICTS
from pesigitg.daemon.steering import crypto_object, kernel_has_crypto, shipped_object
from pesigitg.ebpf import Map, MapType, ObjectError, VerifierError, load_object
from pesigitg.ebpf.btf import MapDefinition
from pesigitg.ebpf.program import load_program

ROOT = Path(__file__).resolve().parents[2]
PROGS = Path(__file__).parent / "progs"
XDP = 6


def compile_bpf(source: Path, out: Path, clang_name: str = "clang-14") -> Path:
    clang = shutil.which(clang_name) or (shutil.which("clang") if clang_name == "clang-14"
                                         else None)
    if clang is None:
        pytest.fail(f"{clang_name} is not installed: `make test` installs it")
    machine = os.uname().machine
    subprocess.run([clang, "-O2", "-g", "-target", "bpf", "-Wall", "-Werror",
                    f"-I{ROOT / 'bpf' / 'include'}", f"-I/usr/include/{machine}-linux-gnu",
                    "-c", str(source), "-o", str(out)], check=True)
    return out


def u32(n: int) -> bytes:
    return struct.pack("<I", n)


def u64(n: int) -> bytes:
    return struct.pack("<Q", n)


@pytest.fixture
def make_map():
    made: list[Map] = []

    def create(map_type: int, key_size: int, value_size: int, max_entries: int) -> Map:
        m = Map.create(MapDefinition(f"test_{map_type}", map_type, key_size, value_size,
                                     max_entries, 0, 0, 0))
        made.append(m)
        return m

    yield create
    for m in made:
        m.close()


def test_hash_map_round_trip(make_map):
    m = make_map(MapType.HASH, 4, 8, 16)
    m.update(u32(1), u64(11))
    m.update(u32(2), u64(22))
    assert m.lookup(u32(1)) == u64(11)
    assert m.lookup(u32(3)) is None
    assert sorted(m.keys()) == [u32(1), u32(2)]
    assert dict(m.items()) == {u32(1): u64(11), u32(2): u64(22)}
    assert m.delete(u32(1)) is True
    assert m.delete(u32(1)) is False
    m.clear()
    assert list(m.keys()) == []


def test_array_map_round_trip(make_map):
    m = make_map(MapType.ARRAY, 4, 4, 3)
    m.update(u32(2), u32(0xDEADBEEF))
    assert m.lookup(u32(2)) == u32(0xDEADBEEF)
    assert m.lookup(u32(0)) == u32(0)
    assert len(list(m.keys())) == 3
    with pytest.raises(OSError, match="updating BPF map test_2"):
        m.update(u32(3), u32(1))  # out of range


def test_percpu_array_values_are_per_cpu_and_summed(make_map):
    m = make_map(MapType.PERCPU_ARRAY, 4, 8, 2)
    m.update(u32(1), u64(5))  # one value: written to every CPU
    values = m.lookup_per_cpu(u32(1))
    assert values is not None and set(values) == {u64(5)}
    assert m.sum_per_cpu(u32(1)) == 5 * len(values)


def test_percpu_array_sums_are_read_in_one_batch(make_map):
    """What the status socket reads of the kernel tier's counts: ranges of a per-CPU
    array, each element summed over CPUs, in one bpf() call, the same as per key."""
    m = make_map(MapType.PERCPU_ARRAY, 4, 8, 10)
    for k in range(10):
        m.update(u32(k), u64(k * 1000 + 7))
    each = [m.sum_per_cpu(u32(k)) for k in range(10)]
    assert each[3] > 0
    assert m.sums_per_cpu(0, 10) == each
    assert m.sums_per_cpu(3, 4) == each[3:7]
    assert m.sums_per_cpu(7, 3) == each[7:]          # up to the last element
    assert m.sums_per_cpu(9, 0) == []
    with pytest.raises(ValueError, match="outside its 10"):
        m.sums_per_cpu(8, 3)
    with pytest.raises(ValueError, match="per-CPU arrays"):
        make_map(MapType.ARRAY, 4, 8, 2).sums_per_cpu(0, 1)


def test_map_refuses_wrong_key_and_value_sizes(make_map):
    m = make_map(MapType.HASH, 4, 8, 4)
    with pytest.raises(ValueError, match="key is 2 octets, the map's keys are 4"):
        m.lookup(b"ab")
    with pytest.raises(ValueError, match="value is 4 octets, the map's values are 8"):
        m.update(u32(1), u32(1))


def test_xskmap_accepts_only_bound_af_xdp_sockets(xdp):
    xsks = xdp.map("xsks")
    assert xsks.map_type == MapType.XSKMAP and xsks.max_entries == 256
    r, w = os.pipe()
    try:
        with pytest.raises(OSError, match="updating BPF map xsks"):
            xdp.register_socket(0, r)
    finally:
        os.close(r)
        os.close(w)
    with pytest.raises(ValueError, match=r"queue 256 is outside 0\.\.255"):
        xdp.register_socket(256, 0)


def test_program_maps_are_named_and_typed(xdp):
    kinds = {name: m.map_type for name, m in xdp.maps.items()}
    assert kinds == {"ports": MapType.HASH, "vips4": MapType.HASH, "vips6": MapType.HASH,
                     "xsks": MapType.XSKMAP, "counters": MapType.PERCPU_ARRAY,
                     "tier": MapType.ARRAY, "tier_servers": MapType.ARRAY,
                     "tier_counts": MapType.PERCPU_ARRAY,
                     ".bss": MapType.ARRAY, ".rodata": MapType.ARRAY,
                     # The crypto variant, loaded where the kernel has the kfuncs.
                     **({"tier_keys": MapType.ARRAY, "tier_scratch": MapType.PERCPU_ARRAY}
                        if xdp.crypto else {})}
    assert xdp.crypto == kernel_has_crypto()
    assert xdp.map(".bss").name == "pesigitg.bss"


def test_ports_and_vips_are_reconciled(xdp):
    xdp.set_ports([443, 8443])
    assert xdp.ports() == {443, 8443}
    xdp.set_ports([443, 4433])
    assert xdp.ports() == {443, 4433}
    xdp.set_vips(["198.51.100.1", "2001:db8::1"])
    assert {str(v) for v in xdp.vips()} == {"198.51.100.1", "2001:db8::1"}
    xdp.set_vips([])
    assert xdp.vips() == set()
    with pytest.raises(ValueError, match="port 0 is not a UDP port number"):
        xdp.set_ports([0])
    with pytest.raises(ValueError, match="VIP 'example' is not an IPv4 or IPv6 address"):
        xdp.set_vips(["example"])
    with pytest.raises(ValueError, match="65 ports given, at most 64"):
        xdp.set_ports(range(1000, 1065))
    assert xdp.ports() == {443, 4433}


def test_counter_names_in_the_object_are_the_contracts(xdp):
    # The BTF enum of the shipped object and the fast path's table were both expanded
    # from PES_XDP_VERDICTS: same names at the same values.
    assert xdp.reasons == {name: value for value, (name, _) in enumerate(XDP_VERDICTS)}
    assert set(xdp.counters()) == set(xdp.reasons)


def test_relocations_of_maps_and_global_data(tmp_path):
    obj = compile_bpf(PROGS / "relocs.bpf.c", tmp_path / "relocs.o")
    with load_object(obj) as loaded:
        prog = loaded.programs["xdp"]
        frame = bytes(64)
        # data_b (100, at offset 8 of .data) + ro_c (1000, offset 8 of .rodata) + bss_d (0)
        assert prog.test_run(frame).retval == 1100
        loaded.maps["values"].update(u32(2), u64(5))
        loaded.maps["extra"].update(u32(2), u64(20000))
        assert prog.test_run(frame).retval == 21105
        bss = loaded.maps[".bss"]
        bss.update(u32(0), u64(3) + u64(3))   # clang orders .bss freely: set both
        data = loaded.maps[".data"]
        assert data.lookup(u32(0)) == u64(7) + u64(100)
        data.update(u32(0), u64(7) + u64(200))
        assert prog.test_run(frame).retval == 21208
        with pytest.raises(OSError, match=r"updating BPF map relocs\.rodata"):
            loaded.maps[".rodata"].update(u32(0), u64(0) + u64(0))  # frozen


def test_verifier_rejection_carries_the_log():
    exit_only = struct.pack("<BBhi", 0x95, 0, 0, 0)  # exit, r0 never written
    with pytest.raises(VerifierError) as info:
        load_program(XDP, exit_only, "GPL", "bad_prog")
    assert "R0 !read_ok" in info.value.log
    assert "the verifier rejected BPF program bad_prog" in str(info.value)
    assert "R0 !read_ok" in str(info.value)


def test_objects_that_are_not_bpf_are_refused(tmp_path):
    text = tmp_path / "text.o"
    text.write_text("not an object")
    with pytest.raises(ObjectError, match="not an ELF file"):
        load_object(text)
    with pytest.raises(ObjectError, match="ELF machine is EM_X86_64, not BPF"):
        load_object(sys.executable)


def test_missing_privileges_name_the_capability():
    # As an unprivileged user, loading must say what is missing instead of "EPERM".
    code = "from pesigitg.daemon.steering import Steering; Steering.load()"
    result = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                             sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, check=False)
    assert result.returncode != 0
    assert "needs CAP_BPF and CAP_NET_ADMIN, which this process lacks" in result.stderr


def test_shipped_objects_are_built_from_the_current_source(tmp_path):
    for clang in ("clang-14", "clang-19"):
        if shutil.which(clang) is None:
            pytest.fail(f"{clang} is not installed: `make test` installs it")
    subprocess.run(["make", "-s", "-C", str(ROOT / "bpf"), f"OUT={tmp_path}"], check=True)
    for shipped in (shipped_object(), crypto_object()):
        assert (tmp_path / shipped.name).read_bytes() == shipped.read_bytes(), (
            f"pesigitg/bpf/{shipped.name} is stale: run `make -C bpf` and commit it")


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_loading_and_closing_leaks_no_file_descriptor():
    from pesigitg.daemon.steering import Steering

    before = open_fds()
    for _ in range(5):
        with Steering.load() as xdp:
            xdp.set_ports([443])
            assert len(open_fds() - before) >= 7    # BTF, six maps, the program
    assert open_fds() == before
