"""Tests for the ingest stage: adapters, leakage groups, splits, reports and the CLI."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pandas as pd
import pytest
import yaml

from deepfake_detector import records
from deepfake_detector.core import config
from deepfake_detector.pipeline.ingest import (
    ADAPTERS,
    IngestError,
    IngestParams,
    SourceParams,
    build_manifest,
    ingest,
    load_ffpp_splits,
    split_groups,
)
from deepfake_detector.stages import ingest as ingest_stage
from full_params import full, params_file

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _touch(root: Path, *rels: str) -> None:
    """Create tiny dummy files (ingest never decodes them)."""
    for rel in rels:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\x00dummy")


def _params(*sources: SourceParams, **kwargs) -> IngestParams:
    return full(IngestParams, sources=sources, **kwargs)


def _assert_no_leak(df: pd.DataFrame) -> None:
    splits_per_group = df.groupby("group")["split"].nunique()
    assert (splits_per_group == 1).all(), splits_per_group[splits_per_group > 1]


def _shared(name: str) -> Path:
    path = SHARED / name
    if not path.is_dir():
        pytest.skip(f"real sample media not found at {path} (expected ../shared/data next to the repo)")
    return path


def _write_sample(root: Path, n_pairs: int = 6) -> None:
    """Sample layout: reals r{i} (identities alternate A/B) and fakes made from r{i} and r{i+1}
    for even i, so origin links make n_pairs groups of 3 videos while identity would make 2."""
    lines = ["file,label,manipulation,identity,origin"]
    for i in range(2 * n_pairs):
        lines.append(f"real/r{i}.mp4,real,,{'AB'[i % 2]},")
        _touch(root, f"real/r{i}.mp4")
    for i in range(0, 2 * n_pairs, 2):
        lines.append(f"fake/f{i}.mp4,fake,swap,{'AB'[i % 2]},real/r{i}.mp4;real/r{i + 1}.mp4")
        _touch(root, f"fake/f{i}.mp4")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")


# ----------------------------------------------------------------------------- params


@pytest.mark.parametrize("kwargs, key", [
    ({"val_fraction": 1.2}, "val_fraction"),
    ({"test_fraction": -0.1}, "test_fraction"),
    ({"val_fraction": 0.5, "test_fraction": 0.5}, "val_fraction + test_fraction"),
    ({"seed": -1}, "seed"),
    ({"sources": []}, "sources"),
])
def test_params_reject_bad_values(kwargs, key):
    with pytest.raises(ValueError, match=key.replace("+", r"\+")):
        full(IngestParams, **kwargs)


def test_source_params_label_only_for_folder():
    with pytest.raises(ValueError, match="only for format: folder"):
        SourceParams(format="ffpp", root="x", label="real")
    assert SourceParams(format="folder", root="x", label="real").label == "real"


def test_params_from_yaml_mapping():
    params = full(IngestParams, sources=[{"format": "folder", "root": "a", "label": "real", "split": "test"}], seed=3)
    assert params.sources == (SourceParams(format="folder", root="a", label="real", split="test"),)
    with pytest.raises(config.ConfigError, match="ingest.sources"):
        full(IngestParams, sources=[{"format": "youtube", "root": "a"}])
    with pytest.raises(config.ConfigError, match="lable"):
        full(IngestParams, sources=[{"format": "folder", "root": "a", "lable": "real"}])


def test_adapters_cover_every_format():
    assert set(ADAPTERS) == {"sample", "folder", "ffpp", "dfdc", "celebdf"}


# ----------------------------------------------------------------------------- splits


def test_split_groups_meets_fractions_and_is_deterministic():
    sizes = {f"g{i:02d}": 1 + i % 4 for i in range(40)}
    total = sum(sizes.values())
    first = split_groups(sizes, 0.2, 0.25, seed=0)
    assert first == split_groups(sizes, 0.2, 0.25, seed=0)
    assert set(first) == set(sizes)
    counts = {s: sum(sizes[g] for g, sp in first.items() if sp == s) for s in records.SPLITS}
    largest = max(sizes.values())
    assert abs(counts["test"] - 0.25 * total) <= largest
    assert abs(counts["val"] - 0.2 * total) <= largest
    assert split_groups(sizes, 0.2, 0.25, seed=1) != first


def test_split_groups_three_groups_fill_every_split():
    # One big group would take train and the greedy rule alone could leave a split empty.
    sizes = {"a": 10, "b": 1, "c": 1}
    for seed in range(10):
        assigned = split_groups(sizes, 0.2, 0.25, seed)
        assert sorted(assigned.values()) == sorted(records.SPLITS)


def test_split_groups_warns_with_fewer_groups_than_splits(caplog):
    with caplog.at_level(logging.WARNING, logger="deepfake_detector.pipeline.ingest"):
        assigned = split_groups({"a": 2, "b": 3}, 0.2, 0.25, seed=0)
    assert set(assigned) == {"a", "b"}
    assert "some split stays empty" in caplog.text


def test_split_groups_without_test_fraction_uses_train_val_only():
    assigned = split_groups({f"g{i}": 1 for i in range(10)}, 0.3, 0.0, seed=0)
    assert set(assigned.values()) == {"train", "val"}


# ----------------------------------------------------------------------------- sample


def test_sample_groups_by_origin_not_identity(tmp_path):
    root = tmp_path / "sample"
    _write_sample(root, n_pairs=6)
    _touch(root, "notes.txt", "extra/stray.avi")
    df, report = build_manifest(_params(SourceParams(format="sample", root=str(root))))
    assert len(df) == 18
    assert df["group"].nunique() == 6  # identity grouping would give 2
    assert (df.groupby("group").size() == 3).all()
    _assert_no_leak(df)
    assert set(df["split"]) == set(records.SPLITS)
    assert dict(df["label"].value_counts()) == {"real": 12, "fake": 6}
    assert set(df.loc[df["label"] == "real", "manipulation"]) == {"original"}
    assert set(df.loc[df["label"] == "fake", "manipulation"]) == {"swap"}
    assert df["video_id"].str.startswith("sample-").all()
    assert df["path"].str.startswith(f"{root.as_posix()}/").all()
    skipped = [p for p in report["problems"] if p["kind"] == "skipped"]
    assert [p["file"] for p in skipped] == [f"{root.as_posix()}/extra/stray.avi"]  # not notes.txt
    assert report["leakage_check"]["groups_in_multiple_splits"] == 0


def test_sample_missing_and_bad_records_are_reported(tmp_path):
    root = tmp_path / "sample"
    _write_sample(root, n_pairs=3)
    (root / "fake" / "f0.mp4").unlink()
    with (root / "labels.csv").open("a") as fh:
        fh.write("real/r0.mp4,real,,A,\n")  # duplicate
        fh.write("../outside.mp4,real,,A,\n")  # escapes the root
        fh.write("real/x.mp4,real\n")  # too few fields
    df, report = build_manifest(_params(SourceParams(format="sample", root=str(root))))
    row = df.set_index("video_id").loc["sample-fake-f0"]
    assert row["status"] == records.MISSING
    assert row["reason"] == f"listed in {root.as_posix()}/labels.csv but not found"
    kinds = report["counts"]["problems_by_kind"]
    assert kinds == {"invalid_record": 3, "missing": 1}
    assert report["counts"]["by_source"]["sample"]["skipped"] == 3
    assert len(df) == 9


@pytest.mark.parametrize("content, match", [
    ("file,label,identity,origin\na.mp4,real,A,\n", r"missing column\(s\) \['manipulation'\]"),
    ("file,label,manipulation,identity,origin\na.mp4,genuine,,A,\n", "unknown label.*line 2: 'genuine'"),
    (b"\xff\xfe\x00\x81 not text", "cannot read as UTF-8 CSV"),
    ("", "empty file"),
])
def test_sample_bad_labels_file_fails_naming_it(tmp_path, content, match):
    root = tmp_path / "sample"
    root.mkdir()
    path = root / "labels.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(IngestError, match=match) as info:
        build_manifest(_params(SourceParams(format="sample", root=str(root))))
    assert str(path.as_posix()) in str(info.value)


# ----------------------------------------------------------------------------- folder


def test_folder_real_fake_subfolders(tmp_path):
    root = tmp_path / "clips"
    _touch(root, "real/a.MP4", "real/sub/b.jpeg", "fake/c.webm", "fake/readme.txt", "stray.mp4")
    df, report = build_manifest(_params(SourceParams(format="folder", root=str(root))))
    assert dict(zip(df["path"].str.rsplit("/", n=1).str[-1], df["label"])) == {
        "a.MP4": "real", "b.jpeg": "real", "c.webm": "fake"}
    assert df["group"].nunique() == 3  # one group per file
    reasons = {Path(p["file"]).name: p["reason"] for p in report["problems"]}
    assert reasons == {"readme.txt": "not a video or image (extension '.txt')",
                       "stray.mp4": "not under real/ or fake/ (set label: for a single-class folder)"}


def test_folder_entries_that_are_not_files_are_counted_with_a_reason(tmp_path):
    """Broken symlinks, a symlink loop and a FIFO named .mp4 are skipped and say why (never silently)."""
    root = tmp_path / "clips"
    _touch(root, "real/a.mp4")
    os.symlink("gone.mp4", root / "real" / "dangling.mp4")
    os.symlink("loop.mp4", root / "real" / "loop.mp4")
    os.mkfifo(root / "real" / "fifo.mp4")
    os.symlink("..", root / "real" / "up")  # a folder link back up: walked once, not forever
    df, report = build_manifest(_params(SourceParams(format="folder", root=str(root))))
    assert [Path(p).name for p in df["path"]] == ["a.mp4"]
    reasons = {Path(p["file"]).name: p["reason"] for p in report["problems"]}
    assert set(reasons) == {"dangling.mp4", "loop.mp4", "fifo.mp4"}
    assert "dangling symlink" in reasons["dangling.mp4"] and "symlink loop" in reasons["loop.mp4"]
    assert "FIFO" in reasons["fifo.mp4"] and report["counts"]["by_source"]["folder"]["skipped"] == 3


def test_folder_groups_csv_joins_files(tmp_path):
    root = tmp_path / "clips"
    _touch(root, *[f"real/r{i}.mp4" for i in range(4)], *[f"fake/f{i}.mp4" for i in range(4)])
    (root / "groups.csv").write_text(
        "file,group\n" + "".join(f"real/r{i}.mp4,p{i}\nfake/f{i}.mp4,p{i}\n" for i in range(4))
        + "fake/gone.mp4,p9\n"
    )
    df, report = build_manifest(_params(SourceParams(format="folder", root=str(root))))
    assert df["group"].nunique() == 4
    _assert_no_leak(df)
    assert [p["reason"] for p in report["problems"]] == ["lists fake/gone.mp4, which is not an ingested video"]


def test_folder_groups_option_names_index_and_column(tmp_path):
    # real_talking's layout: one folder of clips and identities.csv (file, identity).
    root = tmp_path / "talking"
    _touch(root, "a1.mp4", "a2.mp4", "b.mp4", "c.mov")
    (root / "identities.csv").write_text("file,identity\na1.mp4,alice\na2.mp4,alice\nb.mp4,bob\n,carol\n")
    source = SourceParams(format="folder", root=str(root), label="real", groups="identities.csv", group_column="identity")
    df, report = build_manifest(_params(source))
    assert sorted(Path(p).name for p in df["path"]) == ["a1.mp4", "a2.mp4", "b.mp4", "c.mov"]  # the index is no video
    by_file = dict(zip(df["path"].map(lambda p: Path(p).name), df["group"]))
    assert by_file["a1.mp4"] == by_file["a2.mp4"] != by_file["b.mp4"] != by_file["c.mov"]
    _assert_no_leak(df)
    assert [p["reason"] for p in report["problems"]] == ["line 5: empty file name"]


def test_folder_limit_samples_files_deterministically_and_nested(tmp_path):
    # A big photo folder run small: `limit` keeps a sample keyed on (seed, path), counted in the report.
    root = tmp_path / "photos"
    names = [f"p{i:02d}.jpg" for i in range(30)]
    _touch(root, *names)

    def used(limit, seed=0, listing_reversed=False):
        source = SourceParams(format="folder", root=str(root), label="real", limit=limit)
        df, report = build_manifest(_params(source, seed=seed))
        assert report["counts"]["by_source"]["folder"]["not_used_by_limit"] == 30 - len(df)
        return {Path(p).name for p in df["path"]}

    small, large = used(5), used(12)
    assert len(small) == 5 and len(large) == 12
    assert small < large  # raising the limit only adds files
    assert used(5) == small  # deterministic
    assert used(5, seed=1) != small  # the seed draws another sample
    assert used(None) == set(names) and used(100) == set(names)
    with pytest.raises(ValueError, match="limit"):
        SourceParams(format="folder", root="x", label="real", limit=0)


def test_folder_groups_option_errors(tmp_path):
    root = tmp_path / "talking"
    _touch(root, "a.mp4")
    with pytest.raises(IngestError, match="ids.csv: group index not found"):
        build_manifest(_params(SourceParams(format="folder", root=str(root), label="real", groups="ids.csv")))
    (root / "ids.csv").write_text("file,group\na.mp4,x\n")
    with pytest.raises(IngestError, match=r"missing column\(s\) \['identity'\]"):
        build_manifest(_params(SourceParams(format="folder", root=str(root), label="real", groups="ids.csv",
                                            group_column="identity")))
    with pytest.raises(ValueError, match="only for format: folder"):
        SourceParams(format="ffpp", root=str(root), groups="ids.csv")


def test_folder_forced_label_and_split(tmp_path):
    root = tmp_path / "reals"
    _touch(root, "x/a.mp4", "b.avi", "c.doc")
    df, report = build_manifest(_params(
        SourceParams(format="folder", root=str(root), label="real", split="test")))
    assert list(df["label"]) == ["real", "real"]
    assert set(df["split"]) == {"test"}
    assert report["counts"]["by_source"]["folder"]["skipped"] == 1


def test_folder_label_with_opposite_subfolder_fails(tmp_path):
    root = tmp_path / "mixed"
    _touch(root, "fake/a.mp4")
    with pytest.raises(IngestError, match="label: real is set but .*fake/ exists"):
        build_manifest(_params(SourceParams(format="folder", root=str(root), label="real")))
    with pytest.raises(IngestError, match="needs real/ and/or fake/"):
        build_manifest(_params(SourceParams(format="folder", root=str(tmp_path / "mixed" / "fake"))))


# ----------------------------------------------------------------------------- ffpp


def test_ffpp_real_sample_labels_and_groups():
    root = _shared("ffpp_c23_sample")
    df, report = build_manifest(_params(SourceParams(format="ffpp", root=str(root))))
    _assert_no_leak(df)
    originals = df["path"].str.contains("/original_sequences/")
    assert originals.sum() == 3 and len(df) == 7
    assert (df.loc[originals, "label"] == "real").all()
    assert (df.loc[~originals, "label"] == "fake").all()
    by_id = df.set_index("video_id")
    assert by_id.loc["ffpp-Deepfakes-c23-519_515", "manipulation"] == "Deepfakes"
    # A fake shares a group with its target original.
    for fake, real in [("Deepfakes-c23-519_515", "youtube-c23-519"),
                       ("NeuralTextures-c23-004_982", "youtube-c23-004"),
                       ("FaceSwap-c23-634_660", "youtube-c23-634")]:
        assert by_id.loc[f"ffpp-{fake}", "group"] == by_id.loc[f"ffpp-{real}", "group"]
    assert report["problems"] == []


def _write_ffpp(root: Path) -> None:
    _touch(root, *[f"original_sequences/youtube/c23/videos/{i:03d}.mp4" for i in range(6)],
           "manipulated_sequences/Deepfakes/c23/videos/000_001.mp4",
           "manipulated_sequences/Deepfakes/c40/videos/000_001.mp4",
           "manipulated_sequences/Face2Face/c23/videos/002_003.mp4",
           "manipulated_sequences/FaceSwap/c23/videos/004_005.mp4",
           "manipulated_sequences/Deepfakes/masks/videos/000_001.mp4",
           "manipulated_sequences/DeepFakeDetection/c23/videos/01_02__walk_down_hall__ABCD1234.mp4",
           "original_sequences/actors/c23/videos/01__walk_down_hall.mp4",
           "manipulated_sequences/Deepfakes/c23/videos/badname.mp4",
           "manipulated_sequences/Deepfakes/c23/videos/notes.txt")


def test_ffpp_layout_details(tmp_path):
    root = tmp_path / "ffpp"
    _write_ffpp(root)
    df, report = build_manifest(_params(SourceParams(format="ffpp", root=str(root))))
    by_id = df.set_index("video_id")
    # The same fake at two qualities, and both of its originals, share one group.
    group = by_id.loc["ffpp-Deepfakes-c23-000_001", "group"]
    assert by_id.loc["ffpp-Deepfakes-c40-000_001", "group"] == group
    assert by_id.loc["ffpp-youtube-c23-001", "group"] == group
    dfd = by_id.loc["ffpp-DeepFakeDetection-c23-01_02__walk_down_hall__ABCD1234"]
    assert (dfd["label"], dfd["manipulation"]) == ("fake", "DeepFakeDetection")
    assert dfd["group"] == by_id.loc["ffpp-actors-c23-01__walk_down_hall", "group"]
    skipped = {Path(p["file"]).name: p["reason"] for p in report["problems"]}
    assert set(skipped) == {"000_001.mp4", "badname.mp4", "notes.txt"}
    assert skipped["000_001.mp4"] == "manipulation mask, not a sample video"
    _assert_no_leak(df)


def _write_splits(folder: Path, train, val, test) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, pairs in (("train", train), ("val", val), ("test", test)):
        (folder / f"{name}.json").write_text(json.dumps(pairs))


def test_ffpp_official_splits_and_conflicts(tmp_path):
    root = tmp_path / "ffpp"
    _write_ffpp(root)
    splits = tmp_path / "splits"
    # 002/003 are a pair in train, but 004 (test) and 005 (train) are split apart on purpose:
    # fake 004_005 ties them, so the whole group must go to test and be reported.
    _write_splits(splits, [["000", "001"], ["002", "003"], ["005", "999"]], [], [["004", "998"]])
    df, report = build_manifest(_params(SourceParams(format="ffpp", root=str(root)),
                                        ffpp_splits=str(splits)))
    by_id = df.set_index("video_id")
    assert by_id.loc["ffpp-youtube-c23-000", "split"] == "train"
    assert by_id.loc["ffpp-Face2Face-c23-002_003", "split"] == "train"
    for vid in ("youtube-c23-004", "youtube-c23-005", "FaceSwap-c23-004_005"):
        assert by_id.loc[f"ffpp-{vid}", "split"] == "test"
    conflicts = [p for p in report["problems"] if p["kind"] == "split_conflict"]
    assert len(conflicts) == 1 and "goes to test" in conflicts[0]["reason"]
    not_covered = sorted(Path(p["file"]).name for p in report["problems"] if p["kind"] == "not_covered")
    assert not_covered == ["01_02__walk_down_hall__ABCD1234.mp4", "01__walk_down_hall.mp4"]
    assert report["counts"]["by_source"]["ffpp"]["forced_videos"] == {"ffpp official splits": len(df) - 2}
    _assert_no_leak(df)


def test_ffpp_splits_files_are_validated(tmp_path):
    _write_splits(tmp_path / "a", [["000", "001"]], [["001", "002"]], [])
    with pytest.raises(IngestError, match="id 001 is also in train.json"):
        load_ffpp_splits(tmp_path / "a")
    _write_splits(tmp_path / "b", [[0, 1]], [], [])
    with pytest.raises(IngestError, match=r"train.json: item 0 is \[0, 1\]"):
        load_ffpp_splits(tmp_path / "b")
    _write_splits(tmp_path / "c", [["000", "001"]], [], [])
    (tmp_path / "c" / "test.json").unlink()
    with pytest.raises(IngestError, match="test.json not found"):
        load_ffpp_splits(tmp_path / "c")


# ----------------------------------------------------------------------------- dfdc


def test_dfdc_real_sample_labels_and_missing():
    root = _shared("dfdc_sample")
    df, report = build_manifest(_params(SourceParams(format="dfdc", root=str(root))))
    _assert_no_leak(df)
    expected = {}
    for meta in sorted(root.rglob("metadata.json")):
        for name, entry in json.loads(meta.read_text()).items():
            expected[(meta.parent / name).as_posix()] = entry["label"].lower()
    assert dict(zip(df["path"], df["label"])) == expected
    for path, status, reason in zip(df["path"], df["status"], df["reason"]):
        exists = Path(path).is_file()
        assert status == (records.OK if exists else records.MISSING)
        assert (reason == "") == exists
        if not exists:
            assert reason == f"listed in {Path(path).parent.as_posix()}/metadata.json but not found"
    missing = {p["file"] for p in report["problems"] if p["kind"] == "missing"}
    assert missing == set(df.loc[df["status"] == records.MISSING, "path"])
    assert report["counts"]["by_source"]["dfdc"]["missing"] == len(missing) > 0


def test_dfdc_groups_malformed_and_unlisted(tmp_path):
    root = tmp_path / "dfdc"
    meta = {"f1.mp4": {"label": "FAKE", "original": "r.mp4", "split": "train"},
            "f2.mp4": {"label": "FAKE", "original": "r.mp4", "split": "train"},
            "r.mp4": {"label": "REAL", "original": None, "split": "train"},
            "s.mp4": {"label": "REAL", "original": None, "split": "train"}}
    (root / "part_0").mkdir(parents=True)
    (root / "part_0" / "metadata.json").write_text(json.dumps(meta))
    _touch(root, "part_0/f1.mp4", "part_0/f2.mp4", "part_0/s.mp4", "part_0/extra.mp4")  # r.mp4 absent
    (root / "part_1").mkdir()
    (root / "part_1" / "metadata.json").write_text('{"x.mp4": {"label": "MAYBE"}}')
    _touch(root, "part_1/x.mp4", "part_2/y.mp4")
    (root / "part_3").mkdir()
    (root / "part_3" / "metadata.json").write_text('{"z.mp4": ')
    df, report = build_manifest(_params(SourceParams(format="dfdc", root=str(root))))
    by_name = df.assign(name=df["path"].str.rsplit("/", n=1).str[-1]).set_index("name")
    # The missing original still holds its fakes together.
    assert by_name.loc["r.mp4", "status"] == records.MISSING
    assert by_name.loc["f1.mp4", "group"] == by_name.loc["f2.mp4", "group"] == by_name.loc["r.mp4", "group"]
    assert by_name.loc["s.mp4", "group"] != by_name.loc["r.mp4", "group"]
    assert dict(zip(by_name.index, by_name["label"])) == {
        "f1.mp4": "fake", "f2.mp4": "fake", "r.mp4": "real", "s.mp4": "real"}
    problems = {(Path(p["file"]).name, p["kind"]): p["reason"] for p in report["problems"]}
    errors = [p["reason"] for p in report["problems"] if p["kind"] == "index_error"]
    assert len(errors) == report["counts"]["by_source"]["dfdc"]["index_errors"] == 2
    assert "part_1/metadata.json: entry 'x.mp4' has unknown label 'MAYBE'" in errors[0]
    assert "part_3/metadata.json: not valid JSON" in errors[1]
    assert problems[("x.mp4", "skipped")].endswith("part_1/metadata.json is malformed")
    assert problems[("extra.mp4", "skipped")].startswith("not listed in")
    assert problems[("y.mp4", "skipped")] == "no metadata.json in its folder"
    _assert_no_leak(df)


# ----------------------------------------------------------------------------- celebdf


def _write_celebdf(root: Path) -> None:
    reals = [f"Celeb-real/id{i}_{n:04d}.mp4" for i in range(6) for n in range(2)]
    fakes = ["Celeb-synthesis/id0_id1_0000.mp4", "Celeb-synthesis/id1_id0_0001.mp4",
             "Celeb-synthesis/id2_id3_0000.mp4", "Celeb-synthesis/id4_id5_0001.mp4"]
    youtube = [f"YouTube-real/{n:05d}.mp4" for n in range(4)]
    _touch(root, *reals, *fakes, *youtube, "Celeb-synthesis/weird.mp4")
    # Celeb-DF's convention: 1 = real, 0 = fake. id3's video is mislabelled on purpose and
    # id2_0009 is listed but absent.
    (root / "List_of_testing_videos.txt").write_text(
        "1 Celeb-real/id2_0000.mp4\n0 Celeb-synthesis/id2_id3_0000.mp4\n1 YouTube-real/00000.mp4\n"
        "0 Celeb-real/id3_0001.mp4\n1 Celeb-real/id2_0009.mp4\nnot a valid line\n\n"
    )


def test_celebdf_synthetic_tree(tmp_path):
    root = tmp_path / "celeb"
    _write_celebdf(root)
    df, report = build_manifest(_params(SourceParams(format="celebdf", root=str(root))))
    _assert_no_leak(df)
    by_id = df.set_index("video_id")
    assert (df.loc[df["path"].str.contains("/Celeb-synthesis/"), "label"] == "fake").all()
    assert (df.loc[~df["path"].str.contains("/Celeb-synthesis/"), "label"] == "real").all()
    # Identity groups: id0 and id1 are joined by their swaps, id2 and id3 by theirs.
    assert by_id.loc["celebdf-Celeb-real-id0_0000", "group"] == by_id.loc["celebdf-Celeb-real-id1_0001", "group"]
    assert by_id.loc["celebdf-Celeb-real-id0_0000", "group"] != by_id.loc["celebdf-Celeb-real-id2_0000", "group"]
    # Listed videos are test, and so is every video of their groups (id2+id3).
    for vid in ("Celeb-real-id2_0000", "Celeb-synthesis-id2_id3_0000", "Celeb-real-id3_0000",
                "YouTube-real-00000"):
        assert by_id.loc[f"celebdf-{vid}", "split"] == "test"
    missing = by_id.loc["celebdf-Celeb-real-id2_0009"]
    assert (missing["status"], missing["split"]) == (records.MISSING, "test")
    # The rest goes to train/val only: the official test set is the test set.
    rest = df[~df["group"].isin(df.loc[df["split"] == "test", "group"])]
    assert set(rest["split"]) == {"train", "val"}
    kinds = report["counts"]["problems_by_kind"]
    assert kinds == {"invalid_record": 1, "label_mismatch": 1, "missing": 1, "skipped": 1}
    mismatch = next(p for p in report["problems"] if p["kind"] == "label_mismatch")
    assert mismatch["file"].endswith("Celeb-real/id3_0001.mp4")


def test_celebdf_unknown_test_label_fails(tmp_path):
    root = tmp_path / "celeb"
    _touch(root, "Celeb-real/id0_0000.mp4")
    (root / "List_of_testing_videos.txt").write_text("2 Celeb-real/id0_0000.mp4\n")
    with pytest.raises(IngestError, match=r"List_of_testing_videos.txt: unknown label.*line 1: '2'"):
        build_manifest(_params(SourceParams(format="celebdf", root=str(root))))


# ----------------------------------------------------------------------------- combined + CLI


def test_multiple_sources_have_unique_prefixed_ids(tmp_path):
    for name in ("a", "b"):
        _touch(tmp_path / name, "real/x.mp4", "fake/x.mp4", "real/y.mp4")
    sample = tmp_path / "sample"
    _write_sample(sample, n_pairs=3)
    df, report = build_manifest(_params(
        SourceParams(format="folder", root=str(tmp_path / "a")),
        SourceParams(format="folder", root=str(tmp_path / "b"), split="test"),
        SourceParams(format="sample", root=str(sample)),
    ))
    assert df["video_id"].is_unique
    assert set(df["video_id"].str.split("-").str[0]) == {"folder1", "folder2", "sample"}
    assert set(df.loc[df["video_id"].str.startswith("folder2-"), "split"]) == {"test"}
    assert set(report["counts"]["by_source"]) == {"folder1", "folder2", "sample"}
    assert report["counts"]["by_source"]["folder2"]["forced_videos"] == {"source split": 3}
    assert report["counts"]["by_source"]["folder1"]["forced_videos"] == {}
    _assert_no_leak(df)


def test_missing_root_fails(tmp_path):
    with pytest.raises(IngestError, match="is not a folder"):
        build_manifest(_params(SourceParams(format="dfdc", root=str(tmp_path / "nope"))))


def test_stage_main_writes_deterministic_outputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write_sample(Path("data/sample"), n_pairs=4)
    params_file(Path("params.yaml"), ingest={"sources": [{"format": "sample", "root": "data/sample"}], "seed": 0})
    outputs = []
    for run in range(2):
        manifest, report = Path(f"m{run}.csv"), Path(f"out{run}/report.json")
        ingest_stage.main(["--params", "params.yaml", "--manifest", str(manifest), "--report", str(report)])
        outputs.append((manifest.read_bytes(), report.read_bytes()))
    assert outputs[0] == outputs[1]
    df = records.read_manifest(Path("m0.csv"))
    assert list(df.columns) == records.MANIFEST_COLUMNS
    assert df["path"].str.startswith("data/sample/").all()  # relative root stays relative
    report = json.loads(outputs[0][1])
    assert report["leakage_check"]["groups_in_multiple_splits"] == 0
    assert report["counts"]["by_split"] == df["split"].value_counts().sort_index().to_dict()


def test_stage_main_reports_bad_file_without_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("data/sample").mkdir(parents=True)
    Path("data/sample/labels.csv").write_text("file,label\n")
    params_file(Path("params.yaml"), ingest={"sources": [{"format": "sample", "root": "data/sample"}]})
    with pytest.raises(SystemExit) as exc:
        ingest_stage.main(["--params", "params.yaml", "--manifest", "m.csv", "--report", "r.json"])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("ingest: error: data/sample/labels.csv: missing column") and "Traceback" not in err
    assert not Path("m.csv").exists()


@pytest.mark.parametrize("layout, source, reasons", [
    # A DFDC download whose only metadata.json is cut off: its videos cannot be labelled.
    ({"dfdc/part_0/metadata.json": '{"a.mp4": {"label": "FAKE", "orig', "dfdc/part_0/a.mp4": None},
     "{format: dfdc, root: dfdc}",
     ["dfdc/part_0/metadata.json: not valid JSON", "dfdc/part_0/a.mp4: dfdc/part_0/metadata.json is malformed"]),
    # A folder with the right sub-folders and no media in them.
    ({"ds/real/readme.txt": "notes", "ds/fake/list.csv": "a,b"}, "{format: folder, root: ds}",
     ["source folder (folder at ds): no video listed", "ds/real/readme.txt: not a video or image"]),
    # An empty folder.
    ({"ds/real/": None}, "{format: folder, root: ds, label: real}",
     ["source folder (folder at ds): no video listed; no video or image files (.avi .flv"]),
    # Every video the index lists is absent.
    ({"dfdc/metadata.json": '{"a.mp4": {"label": "REAL"}}'}, "{format: dfdc, root: dfdc}",
     ["1 video(s) listed, 1 of them missing", "dfdc/a.mp4: listed in dfdc/metadata.json but not found"]),
], ids=["broken-metadata", "no-media", "empty-folder", "all-missing"])
def test_stage_main_fails_with_the_reason_when_no_video_is_usable(tmp_path, monkeypatch, capsys, layout, source, reasons):
    monkeypatch.chdir(tmp_path)
    for rel, text in layout.items():
        Path(rel).parent.mkdir(parents=True, exist_ok=True)
        if not rel.endswith("/"):
            Path(rel).write_bytes(b"\x00dummy" if text is None else text.encode())
    params_file(Path("params.yaml"), ingest={"sources": [yaml.safe_load(source)]})
    with pytest.raises(SystemExit) as exc:
        ingest_stage.main(["--params", "params.yaml", "--manifest", "data/manifest.csv", "--report", "r.json"])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    line = err.strip().splitlines()[-1]
    assert line.startswith("ingest: error: no usable video in any source, so no manifest was written (details in r.json)")
    assert all(reason in line for reason in reasons), line
    assert "Traceback" not in err and not Path("data/manifest.csv").exists()
    assert "ok" not in json.loads(Path("r.json").read_text())["counts"]["by_status"]  # the report is there, for the details


def test_ingest_writes_report_with_leakage_entry(tmp_path):
    root = tmp_path / "sample"
    _write_sample(root, n_pairs=3)
    manifest = ingest(_params(SourceParams(format="sample", root=str(root))),
                      tmp_path / "m.csv", tmp_path / "r.json")
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["n_videos"] == len(manifest) == 9
    assert report["leakage_check"]["n_groups"] == manifest["group"].nunique() == 3


def test_replaced_file_changes_only_its_signature(tmp_path):
    """A file replaced under the same name changes its manifest row, so DVC reruns what
    depends on the manifest; the other rows stay byte-identical."""
    root = tmp_path / "ds"
    _touch(root, "real/a.mp4", "real/b.mp4", "fake/c.mp4")
    (root / "real" / "big.mp4").write_bytes(bytes(range(256)) * 2000)  # > 3 signature chunks
    manifest_path, report = tmp_path / "m.csv", tmp_path / "r.json"
    params = _params(SourceParams(format="folder", root=str(root)))
    ingest(params, manifest_path, report)
    before = records.read_manifest(manifest_path).set_index("video_id")
    assert (before["signature"].str.len() == 32).all()
    assert before["size_bytes"].astype(int).min() > 0

    (root / "real" / "a.mp4").write_bytes(b"\x00other")  # same size, other content
    big = bytearray((root / "real" / "big.mp4").read_bytes())
    big[len(big) // 2] ^= 0xFF  # one byte in the middle of a large file
    (root / "real" / "big.mp4").write_bytes(bytes(big))
    ingest(params, manifest_path, report)
    after = records.read_manifest(manifest_path).set_index("video_id")

    changed = sorted(after.index[after["signature"] != before["signature"]])
    assert changed == sorted(i for i in after.index if i.endswith(("-a", "-big")))
    unchanged = [i for i in after.index if i not in changed]
    assert (after.loc[unchanged] == before.loc[unchanged]).all().all()
