"""The kernel tier in the real daemon (xdp_decode = plaintext): plaintext CIDs are
forwarded by the XDP program itself, over IPv4 and IPv6, counted under the workers'
names with their path, and the tier follows reloads (xdp_decode, MACs, servers),
drains and a hitless restart. The sink on the peer is an XDP program, so it receives
what the balancer sends with XDP_TX."""

from __future__ import annotations

import subprocess
from typing import Any

from pesigitg.ctl.client import ask
from pesigitg.routing.quiclb import CidConfig
from pesigitg.testing.daemon import PESIGITGD, RunningDaemon
from pesigitg.testing.traffic import Traffic
from tests import frames as f
from tests.netns.peer import PeerSocket

CTL = str(PESIGITGD).replace("pesigitgd", "pesigitg-ctl")
PLAIN = CidConfig(0, 3, 4)
KEYED = CidConfig(1, 3, 4, bytes.fromhex("8f95f09245765f80256934e50c66207f"))
N = 40


def lb_toml(mac1: str = "02:be:00:00:00:01", second: bool = True) -> str:
    servers = [("000001", "10.9.0.11", mac1)] + \
        ([("000002", "10.9.0.12", "02:be:00:00:00:02")] if second else [])
    blocks = "".join(f'  [[configs.servers]]\n  id = "{sid}"\n  address = "{a}"\n'
                     f'  mac = "{m}"\n' for sid, a, m in servers)
    keyed = ('[[configs]]\nconfig_id = 1\nserver_id_length = 3\nnonce_length = 4\n'
             'key = "8f95f09245765f80256934e50c66207f"\n'
             '  [[configs.servers]]\n  id = "000001"\n  address = "10.9.0.11"\n'
             '  mac = "' + mac1 + '"\n')
    return (f"[health]\nenabled = false\n\n[fallback]\ntable_size = 5003\n\n"
            f"[[configs]]\nconfig_id = 0\nserver_id_length = 3\nnonce_length = 4\n"
            f"{blocks}\n{keyed}")


def frames(config: CidConfig, server: int) -> list[bytes]:
    """N short headers to server ``server``, half over IPv4, half over IPv6."""
    cid = config.encode(server.to_bytes(3, "big"), (7).to_bytes(4, "big"))
    return [f.udp4_frame(f.quic_short(cid), dst="10.9.0.1", sport=40000 + i)
            if i % 2 else f.udp6_frame(f.quic_short(cid), dst="2001:db8::1", sport=40000 + i)
            for i in range(N)]


def start(lab: Any, daemons: list[RunningDaemon], decode: str = "plaintext") -> RunningDaemon:
    daemon = RunningDaemon(lab.lb_ns, lab.workdir, extra_conf=f"xdp_decode = {decode}\n")
    daemon.routes.write_text(lb_toml())
    daemons.append(daemon)
    return daemon.start()


def stats(daemon: RunningDaemon) -> dict[str, Any]:
    return daemon.get("/stats")


def sent_and_counted(daemon: RunningDaemon, traffic: Traffic, peer: PeerSocket,
                     batch: list[bytes], mac_last: int) -> None:
    """Send ``batch``; wait until the sink counted every frame at that MAC."""
    before = traffic.sink_count({mac_last})
    peer.send(batch)
    daemon.wait_until(lambda: traffic.sink_count({mac_last}) == before + len(batch), 10,
                      f"{len(batch)} frames at the MAC ending {mac_last:02x}")


def reload(daemon: RunningDaemon, conf: tuple[str, str] | None = None,
           routes: str | None = None) -> None:
    """Change pesigitgd.conf (``conf``: old line, new line) or lb.toml, and reload."""
    if conf is not None:
        daemon.conf.write_text(daemon.conf.read_text().replace(*conf))
    if routes is not None:
        daemon.routes.write_text(routes)
    assert ask(daemon.status_socket, "/reload", method="POST", timeout=15)["reloaded"]


def test_plaintext_cids_are_forwarded_in_xdp_and_counted_with_their_path(lab, daemons,
                                                                        traffic):
    daemon = start(lab, daemons)
    peer = PeerSocket(lab.peer_ns, "v1", lab.lb_mac)
    try:
        sent_and_counted(daemon, traffic, peer, frames(PLAIN, 1), 1)
        sent_and_counted(daemon, traffic, peer, frames(PLAIN, 2), 2)
        sent_and_counted(daemon, traffic, peer, frames(KEYED, 1), 1)     # the workers'
    finally:
        peer.close()
    s = stats(daemon)
    assert s["kernel_tier"]["forwarded"] == 2 * N
    assert s["kernel_tier"]["cid_routed_0"] == 2 * N
    assert s["total"]["rx"] == N                       # only the keyed ones reached a worker
    assert s["total"]["forwarded"] == 3 * N
    assert s["total"]["cid_routed_0"] == 2 * N and s["total"]["cid_routed_1"] == N
    assert s["xdp"]["tx_cid"] == 2 * N
    assert s["backends"]["10.9.0.11"] == {"forwarded": 2 * N, "cid_routed": 2 * N,
                                         "kernel_tier": N}
    assert s["backends"]["10.9.0.12"]["kernel_tier"] == N
    tier = daemon.get("/health")["xdp"]["kernel_tier"]
    assert tier["xdp_decode"] == "plaintext"
    assert tier["configs"]["0"]["path"] == "xdp" and tier["configs"]["1"]["path"] == "af_xdp"
    assert daemon.get("/config")["kernel_tier"] == tier
    metrics = daemon.get("/metrics")
    assert f'pesigitg_forwarded_frames_total{{path="xdp"}} {2 * N}' in metrics
    assert f'pesigitg_cid_routed_frames_total{{config_id="0",path="xdp"}} {2 * N}' in metrics
    assert (f'pesigitg_backend_forwarded_frames_total{{backend="10.9.0.12",path="xdp"}} {N}'
            in metrics)
    assert any("QUIC-LB config 0: decoded in XDP by the kernel tier" in line
               for line in daemon.lines)
    ctl = [CTL, "-s", str(daemon.status_socket)]
    shown = subprocess.run([*ctl, "stats"], capture_output=True, text=True, check=True).stdout
    assert f"of which the kernel tier (XDP): cid_routed_0={2 * N}, forwarded={2 * N}" in shown
    watched = subprocess.run([*ctl, "watch", "-n", "0.1", "-c", "2"], capture_output=True,
                             text=True, check=True).stdout
    assert "kernel_tier_forwarded=0.0/s" in watched


def test_the_tier_follows_reloads_drains_and_a_restart(lab, daemons, traffic):
    daemon = start(lab, daemons, decode="off")
    peer = PeerSocket(lab.peer_ns, "v1", lab.lb_mac)
    try:
        sent_and_counted(daemon, traffic, peer, frames(PLAIN, 1), 1)
        assert stats(daemon)["kernel_tier"]["forwarded"] == 0      # off: the workers'
        reload(daemon, conf=("xdp_decode = off", "xdp_decode = plaintext"))
        sent_and_counted(daemon, traffic, peer, frames(PLAIN, 1), 1)
        assert stats(daemon)["kernel_tier"]["forwarded"] == N
        # A new MAC for backend 1: the tier sends there at once.
        reload(daemon, routes=lb_toml(mac1="02:be:00:00:00:03"))
        sent_and_counted(daemon, traffic, peer, frames(PLAIN, 1), 3)
        assert stats(daemon)["kernel_tier"]["forwarded"] == 2 * N
        # Draining: its connections still reach it, in the kernel tier too.
        ask(daemon.status_socket, "/drain", {"address": "10.9.0.11"}, method="POST")
        sent_and_counted(daemon, traffic, peer, frames(PLAIN, 1), 3)
        assert stats(daemon)["kernel_tier"]["forwarded"] == 3 * N
        ask(daemon.status_socket, "/undrain", {"address": "10.9.0.11"}, method="POST")
        # Server 2 leaves lb.toml: its CIDs are unroutable, the workers fall back.
        reload(daemon, routes=lb_toml(mac1="02:be:00:00:00:03", second=False))
        rx = stats(daemon)["total"]["rx"]
        before = traffic.sink_count({1, 2, 3})
        peer.send(frames(PLAIN, 2))
        daemon.wait_until(lambda: traffic.sink_count({1, 2, 3}) == before + N, 10,
                          "the fallback's frames")
        s = stats(daemon)
        assert s["kernel_tier"]["forwarded"] == 3 * N and s["total"]["rx"] == rx + N
        # A hitless restart: the successor's tier forwards, the counts carry on.
        first = daemon.pid
        answer = ask(daemon.status_socket, "/restart", method="POST", timeout=60)
        assert answer["restarted"] and answer["pid"] != first
        daemon.wait_until(lambda: daemon.pid == answer["pid"], 15, "the new pidfile")
        sent_and_counted(daemon, traffic, peer, frames(PLAIN, 1), 3)
        s = stats(daemon)
        assert s["kernel_tier"]["forwarded"] == 4 * N
        assert s["backends"]["10.9.0.11"]["kernel_tier"] == 4 * N
    finally:
        peer.close()


SINGLE = CidConfig(2, 8, 8, bytes.fromhex("00112233445566778899aabbccddeeff"))
FOUR = CidConfig(3, 3, 4, bytes.fromhex("8f95f09245765f80256934e50c66207f"))


def keyed_toml(key: str) -> str:
    """Config 2 single-pass (key ``key``), config 3 four-pass; one server each on
    10.9.0.11."""
    return (f'[health]\nenabled = false\n\n'
            f'[[configs]]\nconfig_id = 2\nserver_id_length = 8\nnonce_length = 8\n'
            f'key = "{key}"\n  [[configs.servers]]\n  id = "0000000000000001"\n'
            f'  address = "10.9.0.11"\n  mac = "02:be:00:00:00:01"\n\n'
            f'[[configs]]\nconfig_id = 3\nserver_id_length = 3\nnonce_length = 4\n'
            f'key = "8f95f09245765f80256934e50c66207f"\n  [[configs.servers]]\n'
            f'  id = "000001"\n  address = "10.9.0.11"\n  mac = "02:be:00:00:00:01"\n')


def keyed_frames(config: CidConfig) -> list[bytes]:
    cid = config.encode((1).to_bytes(config.server_id_len, "big"), (9).to_bytes(
        config.nonce_len, "big"))
    return [f.udp4_frame(f.quic_short(cid), dst="10.9.0.1", sport=41000 + i) if i % 2
            else f.udp6_frame(f.quic_short(cid), dst="2001:db8::1", sport=41000 + i)
            for i in range(N)]


def test_auto_decrypts_keyed_configs_in_xdp_on_copy_mode_sockets_and_follows_a_key(
        lab, daemons, traffic):
    daemon = RunningDaemon(lab.lb_ns, lab.workdir, extra_conf="xdp_decode = auto\n")
    daemon.routes.write_text(keyed_toml(SINGLE.key.hex()))      # type: ignore[union-attr]
    daemons.append(daemon)
    daemon.start()
    tier = daemon.get("/health")["xdp"]["kernel_tier"]
    assert tier["configs"]["2"]["path"] == "xdp"                 # veth binds copy mode
    assert "copy-mode sockets" in tier["configs"]["2"]["why"]
    assert tier["configs"]["3"]["path"] == "xdp"                 # four-pass too
    assert "copy-mode sockets" in tier["configs"]["3"]["why"]
    peer = PeerSocket(lab.peer_ns, "v1", lab.lb_mac)
    try:
        sent_and_counted(daemon, traffic, peer, keyed_frames(SINGLE), 1)
        sent_and_counted(daemon, traffic, peer, keyed_frames(FOUR), 1)
        s = stats(daemon)
        assert s["kernel_tier"]["cid_routed_2"] == s["kernel_tier"]["cid_routed_3"] == N
        assert s["kernel_tier"]["forwarded"] == 2 * N and s["total"]["rx"] == 0
        # A new key: CIDs under it are decrypted in XDP at once; the old ones no longer
        # name a server (the workers fall back, as they would).
        new = CidConfig(2, 8, 8, bytes.fromhex("ffeeddccbbaa99887766554433221100"))
        reload(daemon, routes=keyed_toml(new.key.hex()))     # type: ignore[union-attr]
        sent_and_counted(daemon, traffic, peer, keyed_frames(new), 1)
        assert stats(daemon)["kernel_tier"]["cid_routed_2"] == 2 * N
        assert not any(SINGLE.key.hex() in line or new.key.hex() in line  # type: ignore
                       for line in daemon.lines)
    finally:
        peer.close()
