"""Ctrl-C in a DVC stage: one line, exit status 130, no traceback, no worker process left."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import yaml

from conftest import noise_frames, write_clip
from deepfake_detector import records
from deepfake_detector.stages import EXIT_INTERRUPTED, stage_run

VIDEOS = 300  # one shard each: about 15 s of work on two workers, interrupted after the first shard


@pytest.mark.parametrize("verbose", [False, True])
def test_stage_run_turns_ctrl_c_into_one_line_and_status_130(verbose: bool, capsys: pytest.CaptureFixture[str],
                                                               caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="deepfake_detector.stages"), pytest.raises(SystemExit) as exc:
        with stage_run("some_stage", verbose):
            raise KeyboardInterrupt
    assert exc.value.code == EXIT_INTERRUPTED == 130
    assert exc.value.__suppress_context__  # `from None`: no "During handling of the above exception"
    assert capsys.readouterr().err == "some_stage: interrupted\n"
    assert ("some_stage interrupted" in caplog.text) is verbose  # --verbose: the traceback, at debug


def test_ctrl_c_stops_a_stage_and_its_dask_workers(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.mp4", noise_frames(60))
    rows = [{"video_id": f"v{i:04d}", "path": str(clip), "label": "real", "split": "train", "group": f"v{i:04d}",
             "source": "folder", "manipulation": "original", "status": "ok", "reason": ""} for i in range(VIDEOS)]
    records.write_csv(pd.DataFrame(rows), tmp_path / "manifest.csv", records.MANIFEST_COLUMNS)
    params = {"extract_frames": {"frames_per_video": 4, "image_format": "png", "videos_per_shard": 1}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    frames_dir = tmp_path / "frames"
    cmd = [sys.executable, "-m", "deepfake_detector.stages.extract_frames", "--params", str(tmp_path / "params.yaml"),
           "--manifest", str(tmp_path / "manifest.csv"), "--frames-dir", str(frames_dir),
           "--frames-table", str(tmp_path / "frames.csv"), "--report", str(tmp_path / "report.csv"),
           "--scheduler", "local:2"]
    log = tmp_path / "stderr.txt"
    with log.open("w") as stderr:
        # Its own session and process group, as a shell gives a foreground job: Ctrl-C goes to the whole group.
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=stderr, cwd=tmp_path, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not any(frames_dir.glob("*.json")):  # the first shard is done: the workers are at work
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "no shard built in 120 s"
            time.sleep(0.05)
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 2  # the two workers (and multiprocessing's resource tracker)
        start = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        returncode = proc.wait(timeout=60)
        elapsed = time.monotonic() - start
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    err = log.read_text()
    assert returncode == EXIT_INTERRUPTED, err
    assert "extract_frames: interrupted" in err and "Traceback" not in err, err
    assert "distributed" not in err, err  # nor the workers' or the cluster's logs about being stopped
    assert not (tmp_path / "report.csv").exists()  # it stopped before the end
    assert elapsed < 10, f"{elapsed:.1f} s from SIGINT to exit"
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, [p.cmdline() for p in alive]
    print(f"SIGINT to exit: {elapsed:.2f} s")


def test_a_stopped_cluster_logs_nothing_even_at_critical() -> None:
    """distributed logs a comm closed mid-stop at CRITICAL, with a traceback: after Ctrl-C that is noise."""
    from deepfake_detector.pipeline import cluster

    root, scheduler = logging.getLogger("distributed"), logging.getLogger("distributed.scheduler")
    level = root.level
    try:
        root.setLevel(logging.NOTSET)
        assert scheduler.isEnabledFor(logging.CRITICAL)
        cluster._quiet(signal.SIGINT, None)  # a worker's SIGINT handler
        assert not scheduler.isEnabledFor(logging.CRITICAL)
        root.setLevel(logging.NOTSET)
        cluster._close_local(None, None, interrupted=True)  # the stage's close after Ctrl-C
        assert not scheduler.isEnabledFor(logging.CRITICAL)
    finally:
        root.setLevel(level)  # setLevel, not the attribute: it also clears the loggers' caches
