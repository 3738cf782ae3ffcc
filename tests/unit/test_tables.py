"""Every list of names is one table, and the man pages and contrib/ examples say what
the tables say (as test_abi.py holds the header to its X-macros): the status
endpoints (daemon/api.py), pesigitg-ctl's commands (ctl/commands.py), the daemon's
settings (daemon/settings.py), lb.toml's keys (routing/lbtoml.py), the counters, and
the hand-over's and the worker pipe's messages."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from pesigitg._fastpath import COUNTER_FAMILIES
from pesigitg.ctl.commands import COMMANDS
from pesigitg.daemon import handover_wire, worker_messages
from pesigitg.daemon.api import ENDPOINTS
from pesigitg.daemon.settings import SETTINGS
from pesigitg.daemon.workers import WorkerPool
from pesigitg.routing.lbtoml import KEYS, REQUIRED

ROOT = Path(__file__).resolve().parents[2]
MAN = ROOT / "man"
CONTRIB = ROOT / "contrib"


def section(page: str, title: str) -> str:
    """The text of ``## title`` in man/``page``.md, up to the next section."""
    text = (MAN / f"{page}.md").read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else None]


def terms(text: str) -> list[str]:
    """The definition terms of a section: its lines that start with a backtick."""
    return [line for line in text.splitlines() if line.startswith("`")]


def test_every_endpoint_is_in_pesigitgd_8_and_only_those():
    text = section("pesigitgd.8", "STATUS SOCKET")
    named = {m.group(1) for m in re.finditer(r"`(?:GET |POST )?(/[a-z-]*)(?:\?[^`]*)?`", text)
             if not m.group(1).startswith("/run") and m.group(1) != "/path"}
    assert named == {e.path for e in ENDPOINTS}


def test_every_endpoint_that_changes_state_is_a_post_the_socket_checks():
    for e in ENDPOINTS:
        assert e.writes == (e.method == "POST"), e.path
    assert len({e.path for e in ENDPOINTS}) == len(ENDPOINTS)


def test_every_command_asks_an_endpoint_the_daemon_has():
    served = {(e.method, e.path) for e in ENDPOINTS}
    for command in COMMANDS:
        assert command.asks is None or command.asks in served, command.name
    asked = {c.asks[1] for c in COMMANDS if c.asks}
    assert {e.path for e in ENDPOINTS} - asked == {"/"}, "an endpoint no command reaches"


def test_every_command_is_in_pesigitg_ctl_8_with_its_flags_and_only_those():
    lines = terms(section("pesigitg-ctl.8", "COMMANDS"))
    documented: dict[str, str] = {}
    for line in lines:
        for name in re.findall(r"`([a-z-]+)`", line):
            if not name.startswith("-"):
                documented[name] = line
    assert set(documented) == {c.name for c in COMMANDS}
    for command in COMMANDS:
        for argument in command.arguments:
            flag = argument.flags[0]
            if flag.startswith("-"):
                assert f"`{flag}`" in documented[command.name], (command.name, flag)


def test_every_setting_is_in_pesigitgd_conf_5_and_its_flags_in_pesigitgd_8():
    keys = {line.split("`")[1] for line in terms(section("pesigitgd.conf.5", "KEYS"))}
    assert keys == {s.key for s in SETTINGS}
    options = section("pesigitgd.8", "OPTIONS")
    for setting in SETTINGS:
        for flag in setting.flags:
            assert f"`{flag}`" in options, flag


def test_the_example_daemon_config_uses_only_settings_that_exist():
    used = {line.split("=")[0].strip() for line in
            (CONTRIB / "pesigitgd.conf").read_text().splitlines()
            if "=" in line and not line.lstrip().startswith("#")}
    assert used and used <= {s.key for s in SETTINGS}


LB_SECTIONS = {"TOP LEVEL": "", "[[configs]]": "configs[].",
               "[[configs.servers]]": "configs[].servers[].", "[health]": "health.",
               "[fallback]": "fallback.", "[pmtu]": "pmtu.", "[retry]": "retry."}


def lb_toml_documented() -> dict[str, str]:
    """Each key lb.toml(5) documents, by path, with what its term says in parentheses."""
    text = (MAN / "lb.toml.5.md").read_text()
    found: dict[str, str] = {}
    for title, prefix in LB_SECTIONS.items():
        body = section("lb.toml.5", title)
        for term in terms(body):
            array = re.match(r"`\[\[([a-z.]+)\]\]`", term)
            if array:
                # An array of tables described in one entry: its keys are the first
                # names its description gives.
                sub = prefix + array.group(1).rsplit(".", 1)[-1] + "[]."
                description = body[body.index(term):].split("\n\n")[0]
                for name in re.findall(r"`([a-z_]+)`", description.split("\n", 1)[1]):
                    found.setdefault(sub + name, "")
                continue
            for name, said in re.findall(r"`([a-z_]+)` \(([^)]*)\)", term):
                found[prefix + name] = said
    assert text
    return found


def test_every_lb_toml_key_is_in_lb_toml_5_and_only_those():
    assert set(lb_toml_documented()) == {k.path for k in KEYS}


def test_lb_toml_5_gives_the_defaults_the_table_has():
    for path, said in lb_toml_documented().items():
        key = next(k for k in KEYS if k.path == path)
        default = re.match(r"default `?([\w.]+)`?", said)
        if said == "required":
            assert key.default is REQUIRED, path
        elif default:
            value = key.default
            text = str(value).lower() if isinstance(value, bool) else str(value)
            assert default.group(1) == text, (path, said, value)


def test_the_example_lb_toml_sets_every_key():
    """contrib/lb.toml "sets every key and explains it" (lb.toml(5)): every table key
    is set there, or named in a comment."""
    text = (CONTRIB / "lb.toml").read_text()
    data = tomllib.loads(text)

    def paths(tree: object, prefix: str = "") -> set[str]:
        out: set[str] = set()
        if isinstance(tree, dict):
            for name, value in tree.items():
                if isinstance(value, list) and value and isinstance(value[0], dict):
                    for item in value:
                        out |= paths(item, f"{prefix}{name}[].")
                elif isinstance(value, dict):
                    out |= paths(value, f"{prefix}{name}.")
                else:
                    out.add(prefix + name)
        return out

    set_here = paths(data)
    assert set_here <= {k.path for k in KEYS}
    for key in KEYS:
        name = key.path.rsplit(".", 1)[-1].removesuffix("[]")
        assert key.path in set_here or re.search(rf"#.*\b{name}\b", text), key.path


def test_every_counter_family_is_in_pesigitgd_8():
    text = section("pesigitgd.8", "STATUS SOCKET")
    for family, *_ in COUNTER_FAMILIES:
        shown = [f"`{family}`", f"`{family}_*`", f"`{family}_N`"]
        assert any(s in text for s in shown), family


def test_the_hand_over_messages_are_the_ones_its_description_gives():
    doc = handover_wire.__doc__ or ""
    steps = set(re.findall(r"^\s+[NO] -> [NO]\s+([a-z]+)", doc, re.M))
    assert steps == {m.value for m in handover_wire.Message} - {"failed"}
    assert "``failed``" in doc


def test_the_worker_pipe_has_one_table_of_kinds_and_the_supervisor_answers_each():
    assert worker_messages.TO_WORKER | worker_messages.FROM_WORKER == set(worker_messages.Kind)
    assert not worker_messages.TO_WORKER & worker_messages.FROM_WORKER
    pool = WorkerPool([], None, lambda: b"")     # type: ignore[arg-type]
    assert set(pool.replies) == worker_messages.FROM_WORKER
