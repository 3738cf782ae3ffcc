# The contract's names and numbers for Python, derived from the X-macro lists of
# bpf/include/pesigitg_abi.h (through includes/abi_names.h), never restated.

from pesigitg._fastpath.includes.routetable cimport PES_KNOB_COUNT, PES_RETRY_MODE_COUNT


cdef tuple _names(const pes_name *table, int count):
    return tuple((table[i].name.decode().lower(), table[i].doc.decode()) for i in range(count))


# ((name, meaning), ...) in enum order: the index of a name is its value.
XDP_VERDICTS = _names(pes_xdp_verdict_table, PES_XDP_REASONS)
ROUTES = tuple(name for name, _ in _names(pes_route_table_names, PES_ROUTE_COUNT))
UNROUTABLE_REASONS = _names(pes_unroutable_table, PES_UNR_COUNT)
DROP_REASONS = _names(pes_drop_table, PES_DROP_COUNT)
UNROUTABLE = tuple(name for name, _ in UNROUTABLE_REASONS)
DROPS = tuple(name for name, _ in DROP_REASONS)
# (outcome, worker drop reason, XDP verdict, meaning) of the shared parser
PARSE_OUTCOMES = tuple(
    (pes_outcome_table[i].name.decode().lower(), DROPS[pes_outcome_table[i].drop],
     XDP_VERDICTS[pes_outcome_table[i].xdp][0], pes_outcome_table[i].doc.decode())
    for i in range(PES_PARSE_COUNT))

LIMITS = {pes_limit_table[i].name.decode(): pes_limit_table[i].value
          for i in range(pes_limit_count)}
globals().update(LIMITS)

# role -> the map's name in the XDP object
MAPS = {pes_map_table[i].role.decode(): pes_map_table[i].name.decode()
        for i in range(pes_map_count)}
SETTINGS_VAR = pes_settings_var.decode()

_LABELS = {PES_LABEL_NONE: None, PES_LABEL_CONFIG_ID: "config_id",
           PES_LABEL_UNROUTABLE: "reason", PES_LABEL_DROP: "reason", PES_LABEL_GAUGE: None}


def _members(int label, int width):
    if label == PES_LABEL_CONFIG_ID:
        return tuple(str(i) for i in range(width))
    if label == PES_LABEL_UNROUTABLE:
        return UNROUTABLE[1:]
    if label == PES_LABEL_DROP:
        return DROPS[1:]
    return ("",)


# (family, Prometheus label or None, member label values, unit, meaning), block order.
COUNTER_FAMILIES = tuple(
    (pes_family_table[i].name.decode().lower(), _LABELS[pes_family_table[i].label],
     _members(pes_family_table[i].label, pes_family_table[i].width),
     pes_family_table[i].unit.decode(), pes_family_table[i].doc.decode())
    for i in range(pes_family_count))
# Every counter slot's name: a family of width 1 is its own name, else family_member.
COUNTER_NAMES = tuple(f"{family}_{member}" if member else family
                      for family, _, members, _, _ in COUNTER_FAMILIES for member in members)
# Families that are levels a worker sets (Prometheus gauges), not counts.
GAUGES = frozenset(pes_family_table[i].name.decode().lower() for i in range(pes_family_count)
                   if pes_family_table[i].label == PES_LABEL_GAUGE)
if len(COUNTER_NAMES) != PES_CNT_COUNT:
    raise ImportError("counter families do not add up to enum pes_counter")
# The route table's knobs (lb.toml numbers the packet path reads) and the Retry
# offload's modes, in enum order (routetable.h).
TABLE_KNOBS = tuple(name for name, _ in _names(pes_knob_table, PES_KNOB_COUNT))
RETRY_MODES = tuple(name for name, _ in _names(pes_retry_mode_table, PES_RETRY_MODE_COUNT))

# Counters the control plane reads by name (the name from the header, not restated).
CNT_RETRY_SENT = COUNTER_NAMES[PES_CNT_RETRY_SENT]
# What the kernel tier forwards, under the workers' names (forwarded, cid_routed_N).
CNT_FORWARDED = COUNTER_NAMES[PES_CNT_FORWARDED]
CNT_CID_ROUTED = COUNTER_NAMES[PES_CNT_CID_ROUTED:PES_CNT_CID_ROUTED + PES_CID_CONFIGS]
