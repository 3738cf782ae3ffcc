"""Hitless restart, both sides: the running daemon (O) hands its kernel objects to a
new process (N) started from the code installed now. The messages, the channel and
the steps are in daemon/handover_wire.py.

O (:func:`hand_over`): start N, give it the state once it says hello, stop our workers
once it is ready, and return once it has committed; when N fails or dies at any step,
it is gone and O puts back what N changed (Kernel.take_back) and runs on.
N (daemon/supervisor.py, with :func:`check_unchanged`, :func:`go_live`, :func:`commit`):
adopt everything, say ready, start its workers on the same sockets once O's are gone,
take the attachment over, then commit.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from pesigitg.daemon.daemonize import PidFile
from pesigitg.daemon.faults import fault
from pesigitg.daemon.handover_wire import (
    Channel,
    HandoverError,
    Inheritance,
    Message,
    PeerGone,
)
from pesigitg.daemon.kernel import Kernel
from pesigitg.daemon.sdnotify import Notifier

__all__ = ["check_unchanged", "commit", "go_live", "hand_over"]

log = logging.getLogger("pesigitg")

STDERR_LINES = 20           # of a successor that dies before it can say why


# -- the old daemon's side ----------------------------------------------------------------

async def hand_over(argv: Sequence[str], inheritance: Callable[[], Inheritance],
                    quiesce: Callable[[], Awaitable[None]]) -> int:
    """Start ``pesigitgd argv`` to take over, give it ``inheritance()`` once it says hello,
    ``quiesce()`` (stop our workers) once it is ready, and return its pid once it has
    committed. HandoverError says why not (what it said, or its exit status and last
    words); the successor is gone by then."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    stderr_r, stderr_w = os.pipe()
    # Isolated (-I: no working directory, user site or PYTHON* variables on the path)
    # and from "/": the installed code, whatever directory we were started in.
    command = [sys.executable, "-I", "-m", "pesigitg.daemon", *argv,
               "--takeover-fd", str(child.fileno())]
    try:
        proc = subprocess.Popen(command, pass_fds=(child.fileno(),),
                                stdin=subprocess.DEVNULL, stderr=stderr_w, cwd="/")
    except OSError as exc:
        parent.close()
        os.close(stderr_r)
        raise HandoverError(f"cannot start {command[0]}: {exc.strerror}") from None
    finally:
        child.close()
        os.close(stderr_w)
    # Its stderr, until it has ours: what it says if it dies before it can tell us.
    said: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
    threading.Thread(target=_collect, args=(stderr_r, said), daemon=True).start()
    channel = Channel(parent)
    try:
        await asyncio.to_thread(channel.recv, Message.HELLO)
        await asyncio.to_thread(inheritance().send, channel)
        await asyncio.to_thread(channel.recv, Message.READY)
        # From here the new process waits for our workers to be gone.
        await quiesce()
        await asyncio.to_thread(channel.send, Message.QUIESCED)
        await asyncio.to_thread(channel.recv, Message.COMMITTED)
    except (HandoverError, OSError) as exc:
        if proc.poll() is None:
            proc.kill()
        status = await asyncio.to_thread(proc.wait)
        tail = "; ".join(line for line in said if line.strip())[-600:]
        raise HandoverError(str(exc) if status in (0, -signal.SIGKILL) else
                            f"{exc} (exit status {status}{': ' + tail if tail else ''})"
                            ) from None
    finally:
        channel.close()
    return proc.pid


def _collect(fd: int, lines: collections.deque[str]) -> None:
    with open(fd, encoding="utf-8", errors="replace") as stream:
        for line in stream:
            lines.append(line.rstrip("\n"))


# -- the new daemon's side ----------------------------------------------------------------

def check_unchanged(facts: dict[str, Any], now: dict[str, Any]) -> None:
    """What a restart keeps (interface, status socket, pidfile, XDP mode, queues: None
    for as many as there are) must be configured as it was: HandoverError names what
    changed."""
    was = {**facts, "queues": len(facts["workers"])}
    now = {**now, "queues": now.get("queues") or was["queues"]}
    changed = [f"{what} ({was[what]} -> {new})" for what, new in now.items()
               if was[what] != new and not (what == "xdp_mode" and was[what] == "generic")]
    if changed:
        raise HandoverError(f"{', '.join(changed)} changed: a restart keeps those; stop and "
                            "start the daemon to change them")


async def go_live(channel: Channel, kernel: Kernel, inheritance: Inheritance) -> None:
    """Everything adopted: say ready; once the old daemon's workers are gone (or it is:
    its workers die with it), start ours on the same sockets and take the attachment
    over (a program from a new object replaces the old one on the link)."""
    await asyncio.to_thread(channel.send, Message.READY)
    try:
        await asyncio.to_thread(channel.recv, Message.QUIESCED)
    except PeerGone:
        log.warning("the previous daemon went away during the hand-over; taking over")
    facts = inheritance.facts
    try:
        fault("before-workers")
        await kernel.start_workers()
        kernel.adopt_attachment(facts, inheritance.fds)
    except BaseException:
        await kernel.pool.stop_all()        # before the old daemon restarts its own
        raise
    fault("after-link-update")
    if kernel.program_replaced(facts):
        log.info("the installed XDP object differs from the running one: replaced the "
                 "program on %s", kernel.interface)


async def commit(channel: Channel, pidfile: PidFile, notifier: Notifier) -> None:
    """Our pid in the pidfile and to systemd (which must know the main process before the
    old one exits: Type=notify), then committed: the old daemon exits."""
    pidfile.write()
    fault("after-pidfile")
    notifier.main_pid()
    if notifier.enabled:
        log.info("told systemd the main process is now pid %d", os.getpid())
    await asyncio.to_thread(channel.send, Message.COMMITTED, {"pid": os.getpid()})
    channel.close()
