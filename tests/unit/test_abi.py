"""One contract: every reason, counter, limit and map name is written once, in
bpf/include/pesigitg_abi.h, and everything else derives it.

The header is read here as text, independently of the C preprocessor, and compared
with what Python sees through the compiled fast path; a source scan shows no runtime
module restates a reason name. Reordering or restating a list anywhere fails a test.
"""

from __future__ import annotations

import re
from pathlib import Path

import pesigitg._fastpath as fp

ROOT = Path(__file__).resolve().parents[2]
HEADER = (ROOT / "bpf" / "include" / "pesigitg_abi.h").read_text()


def xmacro(name: str) -> list[list[str]]:
    """The entries of ``#define NAME(X)``: each X(...) as its comma-separated fields."""
    block = re.search(rf"#define {name}\(X\)(.*?)(?<!\\)\n(?!\s*X\()", HEADER, re.S)
    assert block, f"{name} is not in the header"
    body = re.sub(r"\\\n", " ", block.group(1))
    entries = re.findall(r"X\(([^\"]*?)(?:,\s*\"[^\"]*\"\s*)?\)", body)
    return [[field.strip() for field in entry.split(",")] for entry in entries]


def names(name: str) -> list[str]:
    return [entry[0].lower() for entry in xmacro(name)]


def test_reason_lists_are_the_headers_in_its_order():
    assert [n for n, _ in fp.XDP_VERDICTS] == names("PES_XDP_VERDICTS")
    assert list(fp.DROPS) == names("PES_DROPS")
    assert list(fp.UNROUTABLE) == names("PES_UNROUTABLE")
    assert list(fp.ROUTES) == names("PES_ROUTES")
    assert [o for o, *_ in fp.PARSE_OUTCOMES] == names("PES_PARSE_OUTCOMES")


def test_parse_outcomes_map_to_the_drop_and_verdict_the_header_gives():
    for (outcome, drop, verdict, _), entry in zip(fp.PARSE_OUTCOMES,
                                                  xmacro("PES_PARSE_OUTCOMES"), strict=True):
        assert (outcome, drop, verdict) == tuple(field.lower() for field in entry[:3])


def test_limits_and_map_names_are_the_headers():
    limits = {entry[0]: int(entry[1], 0) for entry in xmacro("PES_LIMITS")}
    assert fp.LIMITS == limits
    assert all(getattr(fp, name) == value for name, value in limits.items())
    defines = dict(re.findall(r"#define PES_MAP_(\w+) (\w+)", HEADER))
    assert fp.MAPS == {role: defines[role] for role, *_ in xmacro("PES_MAPS")}


def test_counter_names_expand_the_families_in_block_order():
    families = xmacro("PES_COUNTERS")
    assert [family for family, *_ in fp.COUNTER_FAMILIES] == [e[0].lower() for e in families]
    expected = []
    for family, width, label, *_ in families:
        family = family.lower()
        members = {"NONE": [""], "CONFIG_ID": [str(i) for i in range(fp.CID_CONFIGS)],
                   "UNROUTABLE": names("PES_UNROUTABLE")[1:],
                   "DROP": names("PES_DROPS")[1:], "GAUGE": [""]}[label]
        if label in ("NONE", "GAUGE"):
            assert width == "1"
        expected += [f"{family}_{m}" if m else family for m in members]
    assert list(fp.COUNTER_NAMES) == expected
    assert fp.GAUGES == {e[0].lower() for e in families if e[2] == "GAUGE"}
    assert len(set(expected)) == len(expected)


# Runtime sources that may spell reason names: the reference decision is a deliberate,
# independent oracle (it returns the reason names the tests compare).
ORACLE = {"pesigitg/routing/decision.py"}


def test_no_runtime_module_restates_a_reason_name():
    reasons = ({n for n, _ in fp.XDP_VERDICTS} | set(fp.DROPS[1:]) | set(fp.UNROUTABLE[1:])
               | {o for o, *_ in fp.PARSE_OUTCOMES})
    counters = {n for n in fp.COUNTER_NAMES if "_" in n}
    literal = re.compile(r"""["']([a-z0-9_]+)["']""")
    offenders = []
    for path in sorted((ROOT / "pesigitg").rglob("*")):
        rel = str(path.relative_to(ROOT))
        if path.suffix not in (".py", ".pyx", ".pxi") or rel in ORACLE:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for word in literal.findall(line):
                if word in reasons or word in counters:
                    offenders.append(f"{rel}:{number}: {word!r}")
    assert not offenders, "reason names restated outside the ABI header:\n" + "\n".join(offenders)
