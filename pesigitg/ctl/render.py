"""pesigitg-ctl's output for people: the daemon's JSON answers as short aligned text
(``--json`` prints the answers themselves)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:       # psutil is slow to import; health checks run often
    from pesigitg.ctl.instances import Instance

__all__ = ["duration", "render_config", "render_drain", "render_health", "render_list",
           "render_stats", "render_status_line", "render_version", "render_whoami", "table"]


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{s:02d}s" if minutes else f"{s}s"


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in [header, *rows]]
    return "\n".join(lines)


def render_health(h: dict[str, Any]) -> str:
    lines = [f"{h['status']}: {h['interface']}, up {duration(h.get('uptime_s'))}, "
             f"workers {h['workers']['alive']}/{h['workers']['expected']}, backends up "
             f"{h['backends']['up']}/{h['backends']['total']}, fallback pool "
             f"{h['backends']['fallback_pool']}, XDP {h['xdp']['mode']} "
             f"({h['xdp']['attach']})"]
    if h.get("fingerprint"):
        lines.append(f"  routing fingerprint {h['fingerprint']} (equal on balancers whose "
                     "configurations decide alike)")
    last = h.get("last_reload")
    if last:
        lines.append(f"  last reload {'applied' if last['ok'] else 'FAILED: ' + last['error']}"
                     f" ({last['succeeded']} applied, {last['failed']} failed since start)")
    lines += [f"  {reason}" for reason in h.get("reasons", [])]
    return "\n".join(lines)


def render_status_line(inst: Instance) -> str:
    h = inst.health
    if h is None:
        return (f"{inst.interface}: unreachable (pid {inst.pid or '-'})"
                + (f": {'; '.join(inst.problems)}" if inst.problems else ""))
    return (f"{inst.interface}: {h['status']}, pid {inst.pid}, up "
            f"{duration(h.get('uptime_s'))}, workers {h['workers']['alive']}/"
            f"{h['workers']['expected']}, backends up {h['backends']['up']}/"
            f"{h['backends']['total']}, XDP {h['xdp']['mode']}")


def render_list(instances: list[Instance]) -> str:
    rows = [[i.interface, str(i.pid or "-"), duration(i.health.get("uptime_s"))
             if i.health else "-", i.status, str(i.socket or "-"),
             "; ".join(f"{fact} from {'+'.join(src)}" for fact, src in i.sources.items())]
            for i in instances]
    text = table(rows, ["INTERFACE", "PID", "UPTIME", "HEALTH", "SOCKET", "FACTS"])
    problems = [f"{i.interface}: {p}" for i in instances for p in i.problems]
    return text + ("\n" + "\n".join(f"! {p}" for p in problems) if problems else "")


def render_stats(s: dict[str, Any]) -> str:
    total = s["total"]
    width = max(len(k) for k in total)
    lines = [f"{k.ljust(width)}  {v:>16,}" for k, v in total.items() if v]
    tier = {k: v for k, v in s.get("kernel_tier", {}).items() if v}
    if tier:
        lines.append("of which the kernel tier (XDP): "
                     + ", ".join(f"{k}={v:,}" for k, v in tier.items()))
    lines.append("")
    lines.append(table([[str(w["worker"]), str(w["queue"]), str(w["cpu"]), str(w["pid"]),
                         "alive" if w["alive"] else "DOWN", str(w["restarts"]),
                         f"{w['counters'].get('rx', 0):,}",
                         f"{w['counters'].get('forwarded', 0):,}"]
                        for w in s["workers"]],
                       ["WORKER", "QUEUE", "CPU", "PID", "STATE", "RESTARTS", "RX",
                        "FORWARDED"]))
    backends = s.get("backends", {})
    if backends:
        lines.append("")
        lines.append(table([[a, f"{b['forwarded']:,}", f"{b['cid_routed']:,}"]
                            for a, b in backends.items()],
                           ["BACKEND", "FORWARDED", "CID-ROUTED"]))
    xdp = {k: v for k, v in s.get("xdp", {}).items() if v}
    if xdp:
        lines.append("")
        lines.append("xdp: " + ", ".join(f"{k}={v:,}" for k, v in xdp.items()))
    return "\n".join(lines)


def render_config(c: dict[str, Any]) -> str:
    d = c["daemon"]
    lines = [f"interface {d['interface']}, ports {', '.join(map(str, d['ports']))}, XDP "
             f"{c.get('xdp_mode')}, route config {d['route_config']}"]
    for cfg in c["routes"]["configs"]:
        lines.append(f"config {cfg['config_id']}: {cfg['mode']}, server ID "
                     f"{cfg['server_id_length']} + nonce {cfg['nonce_length']} octets, key "
                     f"{cfg['key']}")
    retry = c["routes"].get("retry", {})
    if retry.get("mode", "off") != "off":
        sequences = sorted(k["sequence"] for k in retry.get("keys", []))
        lines.append(f"retry offload: {retry['mode']}, keys {sequences}")
    for what, age in c.get("key_ages_days", {}).items():
        lines.append(f"{what} key age: {age:.1f} days")
    lines.append("")
    rows = []
    for s in c["servers"]:
        drain = "-"
        if s["draining"]:
            drain = f"draining ({s.get('draining_source') or 'file'})"
            if s.get("fully_drained_since"):
                drain += ", fully drained"
        rows.append([str(s["config_id"]), s["server_id"], s["address"], s["mac"] or "-",
                     s["health"], drain])
    lines.append(table(rows, ["CONFIG", "SERVER ID", "ADDRESS", "MAC", "HEALTH", "DRAIN"]))
    lines.append("")
    lines.append(f"fallback pool: {', '.join(c['fallback_pool']) or 'EMPTY'}")
    fallback = c["routes"].get("fallback", {})
    if fallback.get("hash_key") == "set":
        lines.append("fallback hash: keyed (hash_key set)")
    digest = c.get("route_table", {}).get("digest")
    if digest:
        lines.append(f"route table digest: {digest} (equal on balancers that decide alike)")
    fingerprint = c.get("route_table", {}).get("fingerprint")
    if fingerprint:
        lines.append(f"routing fingerprint: {fingerprint} (configuration only: no keys, no "
                     "health)")
    return "\n".join(lines)


def render_version(v: dict[str, Any]) -> str:
    return "\n".join(f"{k}: {v[k]}" for k in ("pesigitg", "python", "kernel", "machine",
                                              "xdp_mode", "xdp_attach", "aes_ni",
                                              "pclmulqdq", "pid") if k in v)


def render_whoami(w: dict[str, Any]) -> str:
    lines = [f"CID {w['cid']}: {w['explanation']}", f"  config id   {w['config_id']}"
             + (f" ({w['config']['mode']}, server ID {w['config']['server_id_length']} "
                f"octets)" if w.get("config") else " (not configured)")]
    if w.get("server_id"):
        lines.append(f"  server ID   {w['server_id']}")
    b = w.get("backend")
    if b:
        lines.append(f"  backend     {b['address']}: {b['health']}"
                     + (", draining" if b["draining"] else "")
                     + (f", MAC {b['mac']}" if b.get("mac") else ""))
    lines.append(f"  verdict     {w['verdict']} (route: {w['route']})")
    if w.get("offline"):
        lines.append("  (from the file: every server assumed up, health and MACs unknown)")
    return "\n".join(lines)


def render_drain(answer: dict[str, Any]) -> str:
    return (f"{answer['address']}: {'draining' if answer['draining'] else 'not draining'}"
            + (f" ({answer['source']})" if answer.get("source") else "")
            + ("" if answer["changed"] else ", as it already was"))
