/* Name tables expanded from the X-macro lists of pesigitg_abi.h, for the fast path's
 * Python surface (pesigitg._fastpath): names are derived here, never restated. */
#ifndef PESIGITG_ABI_NAMES_H
#define PESIGITG_ABI_NAMES_H

#include "pesigitg_abi.h"
#include "pesigitg_parse.h"
#include "routetable.h"

#define PES_STR_(x) #x
#define PES_STR(x) PES_STR_(x)

typedef struct {
    const char *name;
    const char *doc;
} pes_name;

typedef struct {
    const char *name;
    long long value;
    const char *doc;
} pes_limit_entry;

typedef struct {
    const char *name;
    int width;
    int label;
    const char *unit;
    const char *doc;
} pes_family;

typedef struct {
    const char *name;
    int drop;
    int xdp;
    const char *doc;
} pes_outcome;

typedef struct {
    const char *role;
    const char *name;
    const char *doc;
} pes_map_name;

#define PES_NAME_ENTRY(name, doc) {#name, doc},
#define PES_LIMIT_ENTRY(name, value, doc) {#name, (value), doc},
#define PES_FAMILY_ENTRY(name, width, label, unit, doc) \
    {#name, (width), PES_LABEL_##label, #unit, doc},
#define PES_OUTCOME_ENTRY(name, drop, xdp, doc) {#name, PES_DROP_##drop, PES_XDP_##xdp, doc},
#define PES_MAP_ENTRY(role, doc) {#role, PES_STR(PES_MAP_##role), doc},

static const pes_limit_entry pes_limit_table[] = {PES_LIMITS(PES_LIMIT_ENTRY)};
static const pes_name pes_xdp_verdict_table[] = {PES_XDP_VERDICTS(PES_NAME_ENTRY)};
static const pes_outcome pes_outcome_table[] = {PES_PARSE_OUTCOMES(PES_OUTCOME_ENTRY)};
static const pes_name pes_route_table_names[] = {PES_ROUTES(PES_NAME_ENTRY)};
static const pes_name pes_unroutable_table[] = {PES_UNROUTABLE(PES_NAME_ENTRY)};
static const pes_name pes_drop_table[] = {PES_DROPS(PES_NAME_ENTRY)};
static const pes_family pes_family_table[] = {PES_COUNTERS(PES_FAMILY_ENTRY)};
static const pes_map_name pes_map_table[] = {PES_MAPS(PES_MAP_ENTRY)};
static const char pes_settings_var[] = PES_STR(PES_SETTINGS_VAR);
static const pes_name pes_knob_table[] = {PES_TABLE_KNOBS(PES_NAME_ENTRY)};
static const pes_name pes_retry_mode_table[] = {PES_RETRY_MODES(PES_NAME_ENTRY)};

#define PES_COUNT(table) ((int)(sizeof(table) / sizeof((table)[0])))
static const int pes_limit_count = PES_COUNT(pes_limit_table);
static const int pes_family_count = PES_COUNT(pes_family_table);
static const int pes_map_count = PES_COUNT(pes_map_table);

#endif /* PESIGITG_ABI_NAMES_H */
