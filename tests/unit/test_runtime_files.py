"""The pidfile and the status socket in the file system: no link followed, no directory
another user can write, no file that is not what it should be."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from pesigitg.daemon.daemonize import PidFile
from pesigitg.daemon.status import StatusServer


def test_a_pidfile_planted_as_a_link_is_refused_and_its_target_untouched(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (tmp_path / "pesigitgd.pid").symlink_to(victim)
    with pytest.raises(OSError, match="a symbolic link: refusing to follow it"):
        PidFile(tmp_path / "pesigitgd.pid").acquire()
    assert victim.read_text() == "precious\n"


def test_a_pidfile_that_is_not_a_regular_file_is_refused(tmp_path):
    os.mkfifo(tmp_path / "pesigitgd.pid")
    with pytest.raises(OSError, match="is not a regular file"):
        PidFile(tmp_path / "pesigitgd.pid").acquire()


@pytest.mark.parametrize("mode", [0o777, 0o1777, pytest.param(0o775, marks=pytest.mark.root)])
def test_runtime_files_in_a_directory_others_can_write_are_refused(tmp_path, mode):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(mode)
    if mode == 0o775:
        os.chown(shared, 0, 12345)          # group-writable for a group that is not ours
    with pytest.raises(OSError, match=f"{shared}, which other users can write \\(mode "
                                      f"{mode:04o}"):
        PidFile(shared / "pesigitgd.pid").acquire()
    server = StatusServer(shared / "status.sock", [])
    with pytest.raises(OSError, match=r"the status socket .* which other users can write"):
        server.bind()
    assert not any(shared.iterdir())


@pytest.mark.parametrize("planted", ["file", "link"])
def test_a_status_socket_path_that_is_not_a_socket_is_left_alone(tmp_path, planted):
    path = tmp_path / "status.sock"
    target = tmp_path / "target"
    target.write_text("keep me\n")
    if planted == "file":
        path.write_text("keep me\n")
    else:
        path.symlink_to(target)
    with pytest.raises(OSError, match="exists and is not a socket"):
        StatusServer(path, []).bind()
    assert path.is_symlink() == (planted == "link") and target.read_text() == "keep me\n"


def test_the_status_socket_is_created_0660_without_a_window(tmp_path):
    server = StatusServer(tmp_path / "status.sock", [])
    server.bind()
    try:
        assert (Path(tmp_path / "status.sock").stat().st_mode & 0o777) == 0o660
    finally:
        asyncio.run(server.close())
    assert not (tmp_path / "status.sock").exists()
