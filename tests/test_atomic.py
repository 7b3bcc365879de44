"""Outputs that are whole or absent (atomic.py): a write that fails halfway keeps the previous
file byte for byte; a second run on a locked output path is refused with the holder's pid."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from deepfake_detector.core.atomic import OutputBusyError, OutputLock, atomic_dir, atomic_path, lock_file, write_text_atomic

OLD = b'{"videos": ["the previous run\'s results"]}\n'


class Interrupted(Exception):
    """What the tests raise halfway through a write."""


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("error", [Interrupted, KeyboardInterrupt])
def test_a_write_that_fails_halfway_keeps_the_old_file_byte_for_byte(tmp_path: Path, error: type[BaseException]) -> None:
    out = tmp_path / "results.json"
    out.write_bytes(OLD)
    with pytest.raises(error), atomic_path(out) as tmp:
        with open(tmp, "w") as fh:
            fh.write('{"videos": [')  # the serializer got this far
            fh.flush()
            raise error
    assert out.read_bytes() == OLD and _hidden(tmp_path) == []


def test_a_write_that_ends_replaces_the_file_keeping_its_mode(tmp_path: Path) -> None:
    out = tmp_path / "results.csv"
    out.write_bytes(OLD)
    os.chmod(out, 0o640)
    write_text_atomic(out, "a,b\n1,2\n")
    assert out.read_text() == "a,b\n1,2\n" and (out.stat().st_mode & 0o777) == 0o640 and _hidden(tmp_path) == []
    new = tmp_path / "sub" / "new.json"  # the folder is made, the umask applies as to any new file
    write_text_atomic(new, "{}\n")
    umask = os.umask(0)
    os.umask(umask)
    assert new.read_text() == "{}\n" and (new.stat().st_mode & 0o777) == 0o666 & ~umask


def test_a_symlinked_output_replaces_its_target(tmp_path: Path) -> None:
    target = tmp_path / "real.json"
    target.write_bytes(OLD)
    link = tmp_path / "link.json"
    link.symlink_to(target.name)
    write_text_atomic(link, "new\n")
    assert link.is_symlink() and target.read_text() == "new\n"


def test_a_report_folder_is_replaced_whole_or_not_at_all(tmp_path: Path) -> None:
    out = tmp_path / "cam" / "clip"
    out.mkdir(parents=True)
    (out / "report.html").write_bytes(OLD)
    (out / "frame_000001.jpg").write_bytes(b"old frame")
    with pytest.raises(Interrupted), atomic_dir(out) as building:
        building.mkdir()
        (building / "montage.png").write_bytes(b"half")
        raise Interrupted
    assert sorted(p.name for p in out.iterdir()) == ["frame_000001.jpg", "report.html"]
    assert (out / "report.html").read_bytes() == OLD and _hidden(out.parent) == []
    with atomic_dir(out) as building:
        assert not building.exists() and building.parent == out.parent
        building.mkdir()
        (building / "report.html").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["report.html"] and _hidden(out.parent) == []
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(NotADirectoryError), atomic_dir(tmp_path / "a_file"):
        pass


def test_a_second_lock_on_one_path_is_refused_naming_the_holder(tmp_path: Path) -> None:
    out, report = tmp_path / "results.json", tmp_path / "report"
    with OutputLock([out], folders=[report]):
        assert lock_file(out).read_text() == f"{os.getpid()}\n" == (report / ".lock").read_text()
        with pytest.raises(OutputBusyError, match=rf"results.json: another run \(pid {os.getpid()}\) is writing it"):
            with OutputLock([tmp_path / "other.json", tmp_path / "." / "results.json"]):
                pass
        assert not lock_file(tmp_path / "other.json").exists()  # nothing held after a refusal
        with pytest.raises(OutputBusyError, match=r"report: another run"):
            OutputLock(folders=[report]).acquire()
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["report"]  # the lock files go with the run
    with OutputLock([out]):  # free again
        pass


def test_a_lock_held_by_another_process_and_one_left_by_a_killed_run(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from deepfake_detector.core.atomic import OutputLock
        with OutputLock([Path({str(out)!r})]):
            print("held", flush=True)
            sys.stdin.read()
        """)
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputBusyError, match=rf"another run \(pid {holder.pid}\)"):
            OutputLock([out]).__enter__()
    finally:
        holder.kill()  # as a killed run: the kernel lets go of its lock, the file stays
        holder.wait()
    assert lock_file(out).exists()
    with OutputLock([out]):
        assert lock_file(out).read_text() == f"{os.getpid()}\n"
    assert not lock_file(out).exists()
