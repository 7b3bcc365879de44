"""Shards as independent tasks (issue 16): stable hash partitions, incremental rebuilds, faults, Dask.

Decodes and detections are counted by wrapping the stage's own functions in this process
(serial mode); the Dask tests run a two-worker LocalCluster and compare its bytes with the
serial run's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
from pathlib import Path

import pandas as pd
import pytest

import dask_faults
from conftest import noise_frames, portrait_frames, write_clip
from deepfake_detector import records
from deepfake_detector.core.config import to_dict
from deepfake_detector.faces.detection import CropParams
from deepfake_detector.media.shards import ShardWriter, partition_count, partition_of
from deepfake_detector.pipeline import batch, crop_faces, extract_frames
from deepfake_detector.pipeline.batch import IncompleteShardsError, plan_shards, run_shards
from deepfake_detector.pipeline.extract_frames import ExtractParams, extract_videos
from full_params import full, params_file

PER_SHARD = 3  # 8 or 9 videos -> 4 partitions
PARAMS = full(ExtractParams, frames_per_video=2, videos_per_shard=PER_SHARD)
PARAMS_2 = dataclasses.replace(PARAMS, videos_per_shard=2)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ten small faceless clips n0..n9 and four with a face f0..f3."""
    folder = tmp_path_factory.mktemp("media")
    for i in range(10):
        write_clip(folder / f"n{i}.mp4", noise_frames(3, 64, 48, seed=i))
    for i in range(4):
        write_clip(folder / f"f{i}.mp4", portrait_frames(3, 160, 120, step=2 + i))
    return folder


def _manifest(paths: list[Path]) -> pd.DataFrame:
    rows = [{"video_id": p.stem, "path": str(p), "label": "real", "split": "train", "group": p.stem, "source": "folder",
             "manipulation": "original", "status": "ok", "reason": "", "size": p.stat().st_size,
             "signature": records.file_signature(p)[1]} for p in paths]
    return pd.DataFrame(rows, columns=records.MANIFEST_COLUMNS)


def _files(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _stamps(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.iterdir()}


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ids of the videos extract_frames decodes, in this process."""
    seen: list[str] = []
    read = extract_frames.read_frames

    def counting(path: Path, n: int):  # same as video.read_frames
        seen.append(Path(path).stem)
        return read(path, n)

    monkeypatch.setattr(extract_frames, "read_frames", counting)
    return seen


def _shard_mates(video_id: str, ids: list[str]) -> set[str]:
    count = partition_count(len(ids), PER_SHARD)
    return {v for v in ids if partition_of(v, count) == partition_of(video_id, count)}


def test_partitions_depend_on_the_video_id_only() -> None:
    assert [partition_count(n, 64) for n in (0, 1, 64, 65, 128, 129, 1000)] == [1, 1, 1, 2, 2, 4, 16]
    ids = [f"video{i}" for i in range(200)]
    # Doubling the count splits partition i into i and i + count: nothing else moves.
    assert all(partition_of(v, 16) % 8 == partition_of(v, 8) for v in ids)
    spread = pd.Series([partition_of(v, 8) for v in ids]).value_counts()
    assert len(spread) == 8 and spread.min() >= 10


def test_adding_or_changing_a_video_decodes_only_its_shard(tmp_path: Path, media: Path, decoded: list[str]) -> None:
    frames_dir = tmp_path / "frames"
    paths = [media / f"n{i}.mp4" for i in range(9)]
    extract_videos(_manifest(paths[:8]), PARAMS, frames_dir)
    assert sorted(decoded) == [f"n{i}" for i in range(8)]

    # One more video: only the videos of its shard are decoded; the other shards' files are not rewritten.
    ids = [p.stem for p in paths]
    before = _stamps(frames_dir)
    decoded.clear()
    frames, report = extract_videos(_manifest(paths), PARAMS, frames_dir)
    assert set(decoded) == _shard_mates("n8", ids) and len(decoded) < len(ids)
    after = _stamps(frames_dir)
    untouched = [n for n in after if not any(v in _shard_mates("n8", ids) for v in _videos_in(frames_dir, n))]
    assert untouched and all(after[n] == before[n] for n in untouched)
    assert report["video_id"].tolist() == ids and (report["status"] == "ok").all()
    assert frames["video_id"].tolist() == sorted(ids * PARAMS.frames_per_video)

    # The result is the one a run from scratch gives, byte for byte.
    fresh_frames, fresh_report = extract_videos(_manifest(paths), PARAMS, tmp_path / "fresh")
    assert _files(frames_dir) == _files(tmp_path / "fresh")
    pd.testing.assert_frame_equal(frames, fresh_frames)
    pd.testing.assert_frame_equal(report, fresh_report)

    # A video whose content changed (its manifest signature did): its shard only.
    changed = tmp_path / "n3.mp4"
    write_clip(changed, noise_frames(3, 64, 48, seed=99))
    decoded.clear()
    extract_videos(_manifest([changed if p.stem == "n3" else p for p in paths]), PARAMS, frames_dir)
    assert set(decoded) == _shard_mates("n3", ids)

    # Nothing changed: nothing decoded. Videos removed: a partition left empty loses its files.
    decoded.clear()
    extract_videos(_manifest([changed if p.stem == "n3" else p for p in paths]), PARAMS, frames_dir)
    assert decoded == []
    gone = _shard_mates("n0", ids)
    kept = [p for p in paths if p.stem not in gone]
    tasks = plan_shards(frames_dir, "frames", [{"video_id": p.stem} for p in kept], PER_SHARD, lambda part: None)
    extract_videos(_manifest(kept), PARAMS, frames_dir)
    assert sorted(os.listdir(frames_dir)) == sorted(n for t in tasks for n in (t.tar.name, t.sidecar.name))
    assert not any(set(_videos_in(frames_dir, n)) & gone for n in os.listdir(frames_dir))


def _videos_in(folder: Path, name: str) -> list[str]:
    """The videos of the shard a file belongs to (from its JSON)."""
    sidecar = batch.read_sidecar(folder / f"{name.split('.')[0]}.json")
    return sidecar["videos"] if sidecar else []


def test_a_code_change_rebuilds_every_shard(tmp_path: Path, media: Path, decoded: list[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = _manifest([media / f"n{i}.mp4" for i in range(4)])
    extract_videos(manifest, PARAMS, tmp_path)
    decoded.clear()
    monkeypatch.setattr(extract_frames, "code_fingerprint", lambda module: "edited")
    extract_videos(manifest, PARAMS, tmp_path)
    assert sorted(decoded) == ["n0", "n1", "n2", "n3"]


def test_code_fingerprint_follows_the_imports() -> None:
    crop = batch._imports("pipeline.crop_faces",
                          batch.ast.parse((batch._PACKAGE_DIR / "pipeline" / "crop_faces.py").read_text()))
    assert {"pipeline.batch", "faces", "faces.detection", "media.imaging", "records", "media.shards", "media.video"} <= crop
    assert batch.code_fingerprint("pipeline.crop_faces") != batch.code_fingerprint("pipeline.extract_frames")


def test_a_failing_video_gets_its_row_and_an_interrupted_run_resumes(tmp_path: Path, media: Path, decoded: list[str],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    paths = [media / f"n{i}.mp4" for i in range(8)]
    ids = [p.stem for p in paths]
    read = extract_frames.read_frames  # the counting wrapper

    def breaks_on_n5(path: Path, n: int):
        if Path(path).stem == "n5":
            raise RuntimeError("decoder bug")
        return read(path, n)

    # A shard that cannot be written (disk full) fails alone; the others are complete.
    close = ShardWriter.close

    def full_disk(self: ShardWriter) -> None:
        if "n1" in _shard_mates_by_name(self.path.name, ids):
            self.discard()
            raise OSError(28, "No space left on device")
        close(self)

    monkeypatch.setattr(extract_frames, "read_frames", breaks_on_n5)
    monkeypatch.setattr(ShardWriter, "close", full_disk)
    with pytest.raises(IncompleteShardsError, match="1 of 4 shards .* No space left"):
        extract_videos(_manifest(paths), PARAMS, tmp_path)
    sidecars = sorted(p.name for p in tmp_path.glob("*.json"))
    assert len(sidecars) == 3 and not list(tmp_path.glob(".*"))

    # The rerun builds only the unfinished shard; the video that raised has its row and reason.
    monkeypatch.setattr(ShardWriter, "close", close)
    decoded.clear()
    _, report = extract_videos(_manifest(paths), PARAMS, tmp_path)
    assert set(decoded) == _shard_mates("n1", ids) - {"n5"}
    row = report.set_index("video_id").loc["n5"]
    assert row["status"] == "unreadable" and "RuntimeError: decoder bug" in row["reason"]
    assert (report.set_index("video_id").drop("n5")["status"] == "ok").all()


def test_a_run_stopped_midway_resumes_where_it_stopped(tmp_path: Path, media: Path, decoded: list[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C (or a killed stage) in the middle of a shard: the shards finished before it are kept."""
    paths = [media / f"n{i}.mp4" for i in range(8)]
    ids = [p.stem for p in paths]
    count = partition_count(len(ids), PER_SHARD)
    stop_in = max(ids, key=lambda v: partition_of(v, count))  # a video of the last shard built
    read = extract_frames.read_frames

    def interrupted(path: Path, n: int):
        if Path(path).stem == stop_in:
            raise KeyboardInterrupt
        return read(path, n)

    monkeypatch.setattr(extract_frames, "read_frames", interrupted)
    with pytest.raises(KeyboardInterrupt):
        extract_videos(_manifest(paths), PARAMS, tmp_path)
    assert len(list(tmp_path.glob("*.json"))) == len({partition_of(v, count) for v in ids}) - 1
    monkeypatch.setattr(extract_frames, "read_frames", read)
    decoded.clear()
    _, report = extract_videos(_manifest(paths), PARAMS, tmp_path)
    assert set(decoded) == _shard_mates(stop_in, ids) and (report["status"] == "ok").all()


def _shard_mates_by_name(name: str, ids: list[str]) -> set[str]:
    count = partition_count(len(ids), PER_SHARD)
    index = int(name.split("-")[1])
    return {v for v in ids if partition_of(v, count) == index}


def test_crop_faces_redetects_only_the_shards_whose_frames_changed(tmp_path: Path, media: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    paths = [media / f"f{i}.mp4" for i in range(3)] + [media / f"n{i}.mp4" for i in range(3)]
    handled: list[str] = []
    call = crop_faces._Cropper.__call__

    def counting(self, video):
        handled.append(video["video_id"])
        return call(self, video)

    monkeypatch.setattr(crop_faces._Cropper, "__call__", counting)
    params = full(CropParams, videos_per_shard=2, detect_every=1)

    def run(paths: list[Path], extract_params: ExtractParams = PARAMS_2) -> tuple[list[dict], pd.DataFrame]:
        manifest = _manifest(paths)
        frames, extract = extract_videos(manifest, extract_params, tmp_path / "frames")
        return crop_faces.crop_videos(manifest, frames, extract, tmp_path / "frames", tmp_path / "crops", params)

    faces, report = run(paths)
    assert sorted(handled) == sorted(p.stem for p in paths)
    assert sorted(set(r["video_id"] for r in faces)) == ["f0", "f1", "f2"]
    handled.clear()
    faces, report = run(paths + [media / "f3.mp4"])
    ids = sorted(p.stem for p in paths) + ["f3"]
    count = partition_count(len(ids), 2)
    assert set(handled) == {v for v in ids if partition_of(v, count) == partition_of("f3", count)}
    assert report["video_id"].tolist() == sorted(ids) and "f3" in {r["video_id"] for r in faces}
    # A new split for a video: its report row says so, nothing is detected again.
    handled.clear()
    manifest = _manifest(paths + [media / "f3.mp4"])
    manifest.loc[manifest["video_id"] == "f0", "split"] = "test"
    frames, extract = extract_videos(manifest, PARAMS_2, tmp_path / "frames")
    _, resplit = crop_faces.crop_videos(manifest, frames, extract, tmp_path / "frames", tmp_path / "crops", params)
    assert handled == [] and resplit.set_index("video_id")["split"].to_dict() == {v: "test" if v == "f0" else "train"
                                                                                   for v in ids}
    # The same frames in more, renamed frame shards: nothing to detect again.
    handled.clear()
    assert run(paths + [media / "f3.mp4"], dataclasses.replace(PARAMS, videos_per_shard=1))[1].equals(report)
    assert handled == []


# --- on a Dask LocalCluster -------------------------------------------------------------


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    import cloudpickle
    import dask

    # The workers cannot import the tests: the faulty handler's module travels by value.
    cloudpickle.register_pickle_by_value(dask_faults)
    # A task whose worker dies is not retried here (the default, 3 retries, only costs time).
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \
            distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as client:
        yield client


def _serial_and_cluster(tmp_path: Path, client, stage):
    """Run ``stage(out_dir, client)`` serially and on the cluster; returns both results."""
    return [stage(tmp_path / mode, dask_client) for mode, dask_client in (("serial", None), ("cluster", client))]


def _assert_same(serial: tuple, cluster: tuple) -> None:
    for a, b in zip(serial, cluster, strict=True):
        if isinstance(a, pd.DataFrame):
            pd.testing.assert_frame_equal(a, b)
        else:
            assert a == b


def test_frame_shards_built_on_a_cluster_are_the_serial_bytes(tmp_path: Path, media: Path, client) -> None:
    manifest = _manifest([media / f"f{i}.mp4" for i in range(2)] + [media / f"n{i}.mp4" for i in range(6)])

    def stage(out: Path, dask_client) -> tuple:
        frames, extract = extract_videos(manifest, PARAMS_2, out, client=dask_client)
        return _files(out), frames, extract

    serial, cluster = _serial_and_cluster(tmp_path, client, stage)
    assert len(serial[0]) >= 4  # several shards (tar + json)
    _assert_same(serial, cluster)


@pytest.mark.slow
def test_crop_shards_built_on_a_cluster_are_the_serial_bytes(tmp_path: Path, media: Path, client) -> None:
    """MTCNN on two worker processes gives the crops, rows and parquet bytes of one process (about 35 s)."""
    manifest = _manifest([media / f"f{i}.mp4" for i in range(2)] + [media / f"n{i}.mp4" for i in range(6)])
    frames, extract = extract_videos(manifest, PARAMS_2, tmp_path / "frames")

    def stage(out: Path, dask_client) -> tuple:
        params = full(CropParams, videos_per_shard=2)
        faces, report = crop_faces.crop_videos(manifest, frames, extract, tmp_path / "frames", out / "crops",
                                               params, client=dask_client)
        records.write_faces(faces, out / "faces.parquet", to_dict(params))
        return _files(out / "crops"), report, (out / "faces.parquet").read_bytes()

    serial, cluster = _serial_and_cluster(tmp_path, client, stage)
    assert len(serial[0]) >= 2 and (serial[1]["status"] == "ok").sum() == 2
    _assert_same(serial, cluster)


def test_a_worker_that_dies_costs_its_video_only(tmp_path: Path, media: Path, client) -> None:
    paths = [media / f"n{i}.mp4" for i in range(8)]
    ids = [p.stem for p in paths]
    videos = [{"video_id": p.stem, "path": str(p), "status": "ok", "reason": "", "signature": ""} for p in paths]
    tasks = plan_shards(tmp_path, "frames", videos, PER_SHARD, lambda part: batch.shard_key("t", "c", PARAMS, part))
    reports, rows = run_shards(tmp_path, "frames", tasks, dask_faults.ExitsOn(PARAMS, victim="n2"), "test", client)
    by_id = {r["video_id"]: r for r in reports}
    assert sorted(by_id) == ids
    assert by_id["n2"]["status"] == "unreadable" and "worker process died while handling n2" in by_id["n2"]["reason"]
    assert all(by_id[v]["status"] == "ok" for v in ids if v != "n2")
    assert {r["video_id"] for r in rows} == set(ids) - {"n2"}
    # The shard that lost a video is complete but not up to date: the next run tries it again, alone.
    assert [t.name for t in tasks if not batch.is_done(t)] == [t.name for t in tasks if "n2" in {v["video_id"] for v in t.videos}]
    reports, rows = run_shards(tmp_path, "frames", tasks, extract_frames._Extractor(PARAMS), "test", None)
    assert all(r["status"] == "ok" for r in reports) and {r["video_id"] for r in rows} == set(ids)


def test_the_scheduler_comes_from_the_option_then_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from deepfake_detector.core.errors import InputError
    from deepfake_detector.pipeline import cluster

    monkeypatch.delenv(cluster.ENV_VAR, raising=False)
    assert cluster.scheduler_choice(None) == "local"
    monkeypatch.setenv(cluster.ENV_VAR, "tcp://10.0.0.5:8786")
    assert cluster.scheduler_choice(None) == "tcp://10.0.0.5:8786" and cluster.scheduler_choice("none") == "none"
    assert cluster.local_workers("local") == len(os.sched_getaffinity(0)) and cluster.local_workers("local:3") == 3
    assert cluster.local_workers("tcp://10.0.0.5:8786") is None
    with pytest.raises(InputError, match="positive integer"):
        cluster.local_workers("local:0")


@pytest.mark.slow
def test_dvc_keeps_persisted_shards_and_records_the_new_hash(tmp_path: Path, media: Path) -> None:
    """Under `dvc repro`, with the shard folder `persist: true` as in dvc.yaml: one video more rebuilds
    its shard only, dvc.lock gets the folder's new hash, and the next status is clean."""
    import subprocess

    import yaml

    def dvc(*args: str) -> str:
        # The stages' `python` must be this environment's, whatever the caller's PATH holds.
        bin_dir = str(Path(sys.executable).parent)
        env = {**os.environ, "DFD_DASK_SCHEDULER": "none", "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
        proc = subprocess.run([str(Path(sys.executable).parent / "dvc"), *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout + proc.stderr

    def frames_hash() -> str:
        lock = yaml.safe_load((tmp_path / "dvc.lock").read_text())
        return next(o["md5"] for o in lock["stages"]["extract"]["outs"] if o["path"] == "frames")

    params_file(tmp_path / "params.yaml", extract_frames={"frames_per_video": 2, "videos_per_shard": PER_SHARD})
    stage = {"cmd": "python -m deepfake_detector.stages.extract_frames --manifest manifest.csv --frames-dir frames "
                    "--frames-table frames.csv --report report.csv",
             "deps": ["manifest.csv"], "params": ["extract_frames"],
             "outs": [{"frames": {"persist": True}}, "frames.csv", "report.csv"]}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"extract": stage}}))
    dvc("init", "--no-scm", "-q")
    paths = [media / f"n{i}.mp4" for i in range(9)]
    records.write_manifest(_manifest(paths[:8]), tmp_path / "manifest.csv")
    assert "4 of 4 shards to build (8 videos)" in dvc("repro")
    first = frames_hash()
    records.write_manifest(_manifest(paths), tmp_path / "manifest.csv")
    mates = _shard_mates("n8", [p.stem for p in paths])
    assert f"1 of 4 shards to build ({len(mates)} videos)" in dvc("repro")
    assert frames_hash() != first
    assert "up to date" in dvc("status")
    assert "0 of 4 shards to build" in dvc("repro", "-f")  # forced: the stage runs, its shards are kept
    assert "up to date" in dvc("status")


def test_the_stage_runs_on_a_local_cluster_and_names_an_unreachable_scheduler(tmp_path: Path, media: Path,
                                                                              capsys: pytest.CaptureFixture) -> None:
    from deepfake_detector.stages import extract_frames as stage

    records.write_manifest(_manifest([media / "n0.mp4", media / "n1.mp4"]), tmp_path / "manifest.csv")
    args = ["--params", str(tmp_path / "params.yaml"), "--manifest", str(tmp_path / "manifest.csv"),
            "--frames-dir", str(tmp_path / "frames"), "--frames-table", str(tmp_path / "frames.csv"),
            "--report", str(tmp_path / "report.csv")]
    params_file(tmp_path / "params.yaml", extract_frames={"frames_per_video": 2})
    stage.main([*args, "--scheduler", "local:1"])
    assert records.read_extract_report(tmp_path / "report.csv")["status"].tolist() == ["ok", "ok"]
    import dask

    with pytest.raises(SystemExit) as exc, dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        stage.main([*args, "--scheduler", "tcp://127.0.0.1:9"])  # the discard port: nothing listens
    assert exc.value.code == 1
    assert "cannot reach the Dask scheduler 'tcp://127.0.0.1:9'" in capsys.readouterr().err
