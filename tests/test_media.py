"""media: the first look at a file (entry type, format from content, pixel budget, damage)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import PEAK_RSS_KB, portrait_frames, unprivileged, write_clip
from corpus import audio_only_mp4, huge_png
from deepfake_detector.media import probe as media
from deepfake_detector.media.probe import VideoNotFoundError, VideoReadError, entry_problem, list_entries, probe, sniff


def _jpeg(tmp_path: Path, name: str = "photo.jpg") -> Path:
    path = tmp_path / name
    cv2.imwrite(str(path), cv2.cvtColor(portrait_frames(1)[0], cv2.COLOR_RGB2BGR))
    return path


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"\x89PNG\r\n\x1a\n" + bytes(20), ("image", "png")),
        (b"\xff\xd8\xff\xe0" + bytes(20), ("image", "jpeg")),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", ("image", "webp")),
        (b"\x00\x00\x00\x18ftypheic" + bytes(8), ("image", "heif")),
        (b"\x00\x00\x00\x18ftypisom" + bytes(8), ("video", "iso-bmff")),
        (b"RIFF\x00\x00\x00\x00AVI LIST", ("video", "avi")),
        (b"\x1a\x45\xdf\xa3" + bytes(20), ("video", "matroska")),
        (b"hello, world\n", ("text", "text")),
        (bytes(range(256)), (None, "unknown")),
    ],
)
def test_sniff_reads_the_content_not_the_name(head: bytes, expected: tuple) -> None:
    assert sniff(head) == expected


def test_content_decides_the_kind(tmp_path: Path) -> None:
    video = write_clip(tmp_path / "clip.mp4", portrait_frames(4))
    named_jpg = tmp_path / "clip.jpg"
    named_jpg.write_bytes(video.read_bytes())
    named_mp4 = tmp_path / "photo.mp4"
    named_mp4.write_bytes(_jpeg(tmp_path).read_bytes())
    assert probe(named_jpg).kind == "video"
    found = probe(named_mp4)
    assert (found.kind, found.format, found.width, found.height) == ("image", "jpeg", 320, 240)


def test_entries_that_are_not_files_say_what_they_are(tmp_path: Path) -> None:
    os.symlink("loop.mp4", tmp_path / "loop.mp4")
    os.symlink("gone/x.mp4", tmp_path / "dangling.mp4")
    os.mkfifo(tmp_path / "fifo.mp4")
    (tmp_path / "dir.mp4").mkdir()
    (tmp_path / "empty.mp4").write_bytes(b"")
    cases = {"loop.mp4": "symlink loop", "dangling.mp4": "dangling symlink (its target gone/x.mp4",
             "fifo.mp4": "not a regular file (a FIFO", "dir.mp4": "not a regular file (a folder)", "empty.mp4": "empty file"}
    for name, fragment in cases.items():
        with pytest.raises(VideoReadError) as exc:
            probe(tmp_path / name)  # the FIFO must not block: it is never opened
        assert fragment in str(exc.value) and str(exc.value).endswith(str(tmp_path / name))
    with pytest.raises(VideoNotFoundError, match="file not found"):
        probe(tmp_path / "nowhere.mp4")
    assert entry_problem(tmp_path / "loop.mp4") and entry_problem(_jpeg(tmp_path)) is None


def test_list_entries_drops_nothing_and_follows_folder_links_once(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    _jpeg(tmp_path / "sub")
    os.symlink("loop.mp4", tmp_path / "loop.mp4")
    os.mkfifo(tmp_path / "fifo.mp4")
    os.symlink("..", tmp_path / "sub" / "up")  # a folder link back to the root: no endless walk
    entries, problems = list_entries(tmp_path)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in entries) == ["fifo.mp4", "loop.mp4", "sub/photo.jpg"]
    assert problems == []


def test_image_over_the_pixel_budget_is_refused_from_its_header(tmp_path: Path) -> None:
    """The 12000x12000 PNG (450 KB) is refused before decoding: in a fresh process, the check
    stays far below the 430 MB its pixels would take (and the 8 GB MTCNN took on it)."""
    path = huge_png(tmp_path / "huge.png")
    assert path.stat().st_size < 1_000_000
    with pytest.raises(VideoReadError, match=r"12000x12000 pixels \(144 Mpx\) is above the limit of 67 Mpx.*huge\.png"):
        probe(path)
    code = ("import sys; from deepfake_detector.media.video import read_frames, VideoReadError\n"
            "try:\n    read_frames(sys.argv[1], 4)\nexcept VideoReadError as e:\n    print(e)\n"
            f"print({PEAK_RSS_KB})")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True).stdout
    reason, peak_kb = out.strip().splitlines()
    assert "above the limit" in reason and int(peak_kb) < 300_000, (reason, peak_kb)


def test_video_over_the_pixel_budget_is_refused_before_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from deepfake_detector.media import video

    clip = write_clip(tmp_path / "clip.mp4", portrait_frames(4))
    monkeypatch.setattr(media, "MAX_PIXELS", 320 * 240 - 1)
    monkeypatch.setattr(video, "check_pixels", media.check_pixels)
    with pytest.raises(VideoReadError, match=r"320x240 pixels .* above the limit.*clip\.mp4"):
        video.read_frames(clip, 2)


def test_truncated_images_are_found_and_whole_ones_are_not(tmp_path: Path) -> None:
    jpg = _jpeg(tmp_path)
    data = jpg.read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) * 2 // 3])
    trailing = tmp_path / "motion.jpg"  # a motion photo: JPEG, then other data
    trailing.write_bytes(data + b"\x00\x00\x00\x18ftypmp42" + bytes(100))
    png = tmp_path / "photo.png"
    cv2.imwrite(str(png), np.full((64, 64, 3), 7, np.uint8))
    cut_png = tmp_path / "cut.png"
    cut_png.write_bytes(png.read_bytes()[:-20])
    assert media.image_damage(jpg, "jpeg") is None and media.image_damage(trailing, "jpeg") is None
    assert "truncated JPEG" in media.image_damage(cut, "jpeg")
    assert media.image_damage(png, "png") is None and "truncated PNG" in media.image_damage(cut_png, "png")


def test_unopenable_mp4_says_why(tmp_path: Path) -> None:
    audio = audio_only_mp4(tmp_path / "audio.mp4")
    assert media.mp4_tracks(audio) == ["audio"]
    assert "without a video track (it holds: audio)" in media.describe_unopenable(audio, "iso-bmff")
    clip = write_clip(tmp_path / "clip.mp4", portrait_frames(6))
    assert media.mp4_tracks(clip) == ["video"]
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])  # moov is at the end
    assert media.mp4_tracks(cut) is None
    assert "without a 'moov' box" in media.describe_unopenable(cut, "iso-bmff")


def test_permission_denied_is_a_reason(tmp_path: Path) -> None:
    path = _jpeg(tmp_path)
    os.chmod(path, 0)
    code = ("import sys\nfrom deepfake_detector.media.probe import probe\ntry:\n    probe(sys.argv[1])\n"
            "except Exception as e:\n    print(type(e).__name__, e)")
    out = subprocess.run([*unprivileged(), sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("VideoReadError permission denied: cannot read") and "photo.jpg" in out.stdout
