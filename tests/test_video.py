"""Tests for deepfake_detector.media.video: sampling, bad files, stills, rotation, skipped H.264 frames."""

from __future__ import annotations

import logging
import struct
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from conftest import SHARED_DATA, portrait_frames, set_mp4_rotation, write_clip, write_h264
from deepfake_detector.core.config import ConfigError, from_mapping
from deepfake_detector.media import skipdecode, video
from deepfake_detector.media.video import (
    VideoNotFoundError,
    VideoReadError,
    check_readable,
    read_frames,
    rotate_upright,
    sample_indices,
)
from deepfake_detector.pipeline.extract_frames import ExtractParams
from full_params import full


def numbered_frames(n: int, width: int = 160, height: int = 120) -> list[np.ndarray]:
    """Frames whose grey level encodes their index (6 levels apart, so n <= 42), with a red
    marker in the top-left corner so that rotations are visible."""
    frames = []
    for i in range(n):
        frame = np.full((height, width, 3), 6 * i, dtype=np.uint8)
        frame[8:40, 8:56] = (255, 0, 0)
        frames.append(frame)
    return frames


def grey_index(image: np.ndarray) -> int:
    """Recover a numbered frame's index from its centre's grey level."""
    h, w = image.shape[:2]
    return int(round(float(image[h // 2 - 8 : h // 2 + 8, w // 2 - 8 : w // 2 + 8].mean()) / 6))


@pytest.mark.parametrize(("available", "n"), [(100, 16), (301, 16), (17, 16), (2, 1)])
def test_sample_indices_are_evenly_spaced(available: int, n: int) -> None:
    idx = sample_indices(available, n)
    assert len(idx) == n
    assert idx[0] == 0
    assert n == 1 or idx[-1] == available - 1
    gaps = np.diff(idx)
    assert gaps.size == 0 or gaps.max() - gaps.min() <= 1


def test_sample_indices_short_video_gives_all_frames() -> None:
    assert sample_indices(5, 16) == [0, 1, 2, 3, 4]
    assert sample_indices(0, 16) == []


def test_read_frames_returns_the_sampled_frames(tmp_path: Path) -> None:
    path = write_clip(tmp_path / "numbered.mp4", numbered_frames(30), fps=10)
    info, frames = read_frames(path, 8)
    expected = sample_indices(30, 8)
    assert [f.frame_index for f in frames] == expected
    # The pixels are those of the sampled frames (sequential decoding is not off by one).
    assert [grey_index(f.image) for f in frames] == expected
    assert [f.timestamp_s for f in frames] == pytest.approx([i / 10 for i in expected])
    assert (info.n_frames, info.fps, info.rotation) == (30, 10.0, 0)
    assert (info.width, info.height) == (160, 120)
    first = frames[0].image
    assert first.dtype == np.uint8 and first.shape == (120, 160, 3)
    assert first[20, 20, 0] > 200 and first[20, 20, 2] < 50, "frames must be RGB, not BGR"


def test_truncated_stream_is_sampled_over_what_decodes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # MJPG/AVI keeps its header (40 frames declared) when the file is cut in half.
    path = write_clip(tmp_path / "full.avi", numbered_frames(40), fps=10, fourcc="MJPG")
    cut = tmp_path / "cut.avi"
    data = path.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING, logger="deepfake_detector.media.video"):
        info, frames = read_frames(cut, 8)
    assert 0 < info.n_frames < 40
    expected = sample_indices(info.n_frames, 8)
    assert [f.frame_index for f in frames] == expected
    assert [grey_index(f.image) for f in frames[:-1]] == expected[:-1]  # last one may be partial
    assert "truncated" in caplog.text and "cut.avi" in caplog.text


def test_mp4_cut_in_half_is_a_clear_error(tmp_path: Path) -> None:
    path = write_clip(tmp_path / "full.mp4", numbered_frames(30))
    cut = tmp_path / "cut.mp4"
    data = path.read_bytes()
    cut.write_bytes(data[: len(data) // 2])  # mp4v puts the index (moov) at the end: lost
    with pytest.raises(VideoReadError, match=r"not a readable video.*cut\.mp4"):
        read_frames(cut, 8)


def test_zero_decodable_frames(tmp_path: Path) -> None:
    path = write_clip(tmp_path / "zeroed.mp4", numbered_frames(10))
    data = bytearray(path.read_bytes())
    at = data.find(b"mdat")  # keep the container, wipe every coded frame
    size = struct.unpack(">I", data[at - 4 : at])[0]
    data[at + 4 : at - 4 + size] = bytes(size - 8)
    path.write_bytes(bytes(data))
    with pytest.raises(VideoReadError, match=r"no decodable frame \(10 declared.*zeroed\.mp4"):
        read_frames(path, 4)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    with pytest.raises(VideoReadError, match=r"empty file \(0 bytes\).*empty\.mp4"):
        read_frames(path, 8)


def test_text_renamed_mp4(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp4"
    path.write_text("this is a text file, not a video\n" * 20)
    with pytest.raises(VideoReadError, match=r"plain text.*notes\.mp4"):
        read_frames(path, 8)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(VideoNotFoundError, match=r"file not found.*nowhere\.mp4"):
        read_frames(tmp_path / "nowhere.mp4", 8)
    assert issubclass(VideoNotFoundError, VideoReadError)


def test_directory_is_not_a_video(tmp_path: Path) -> None:
    with pytest.raises(VideoReadError, match=r"not a regular file \(a folder\)"):
        read_frames(tmp_path, 8)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_still_image_is_one_frame(tmp_path: Path, portrait: np.ndarray, suffix: str) -> None:
    path = tmp_path / f"photo{suffix}"
    cv2.imwrite(str(path), cv2.cvtColor(portrait, cv2.COLOR_RGB2BGR))
    info, frames = read_frames(path, 16)
    assert len(frames) == 1 and frames[0].frame_index == 0 and frames[0].timestamp_s == 0.0
    assert frames[0].image.shape == portrait.shape
    assert (info.n_frames, info.width, info.height) == (1, portrait.shape[1], portrait.shape[0])
    if suffix == ".png":
        assert np.array_equal(frames[0].image, portrait)


def test_broken_image(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(VideoReadError, match=r"not a decodable image.*photo\.jpg"):
        read_frames(path, 4)
    path.write_text("not an image")
    with pytest.raises(VideoReadError, match=r"plain text.*photo\.jpg"):
        read_frames(path, 4)


def test_content_not_suffix_decides_how_a_file_is_read(tmp_path: Path, portrait: np.ndarray) -> None:
    """A video named .jpg is read as a video, a JPEG named .mp4 as a still image."""
    clip = write_clip(tmp_path / "clip.mp4", numbered_frames(10))
    as_jpg = tmp_path / "clip.jpg"
    as_jpg.write_bytes(clip.read_bytes())
    info, frames = read_frames(as_jpg, 4)
    assert (info.kind, info.n_frames, len(frames)) == ("video", 10, 4)
    ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(portrait, cv2.COLOR_RGB2BGR))
    as_mp4 = tmp_path / "photo.mp4"
    as_mp4.write_bytes(jpg.tobytes())
    info, frames = read_frames(as_mp4, 4)
    assert (info.kind, info.n_frames_expected, len(frames)) == ("image", 1, 1)


def test_decode_errors_are_counted_and_described(tmp_path: Path) -> None:
    """Frames that fail mid-stream and a stream cut short count as decode errors; a whole clip has none."""
    whole = write_clip(tmp_path / "whole.mp4", numbered_frames(40))
    info, _ = read_frames(whole, 8)
    assert (info.decode_errors, info.notes, info.n_frames_expected) == (0, (), 8)
    data = bytearray(whole.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 2000):
        data[i] ^= 0xFF
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(bytes(data))
    info, frames = read_frames(corrupt, 8)
    assert info.decode_errors >= 1 and "failed to decode mid-stream" in info.notes[0]
    avi = write_clip(tmp_path / "full.avi", numbered_frames(40), fourcc="MJPG")
    cut = tmp_path / "cut.avi"
    cut.write_bytes(avi.read_bytes()[: avi.stat().st_size // 2])
    info, frames = read_frames(cut, 8)
    assert info.decode_errors == 40 - info.n_frames > 0 and len(frames) == info.n_frames_expected == 8
    assert "ends after" in info.notes[0]


def test_truncated_jpeg_is_decoded_but_counted(tmp_path: Path, portrait: np.ndarray) -> None:
    ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(portrait, cv2.COLOR_RGB2BGR))
    path = tmp_path / "cut.jpg"
    path.write_bytes(jpg.tobytes()[: len(jpg) // 2])
    info, frames = read_frames(path, 4)
    assert len(frames) == 1 and info.decode_errors == 1 and "truncated JPEG" in info.notes[0]


def test_decoding_is_bounded(tmp_path: Path) -> None:
    path = write_clip(tmp_path / "long.mp4", numbered_frames(30))
    info, frames = read_frames(path, 4, max_frames=10)
    assert info.n_frames == 10 and [f.frame_index for f in frames] == sample_indices(10, 4)
    assert info.decode_errors == 0 and "only the first 10 of 30 frames decoded" in info.notes[0]


def test_check_readable_refuses_what_read_frames_refuses(tmp_path: Path) -> None:
    good = write_clip(tmp_path / "good.mp4", numbered_frames(5))
    assert check_readable(good).kind == "video"
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(range(256)) * 64)
    for call in (check_readable, lambda p: read_frames(p, 2)):
        with pytest.raises(VideoReadError, match=r"not a readable video.*bad\.mp4"):
            call(bad)


@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_rotation_metadata_is_applied_once(tmp_path: Path, degrees: int) -> None:
    plain = write_clip(tmp_path / "plain.mp4", numbered_frames(10))
    rotated = tmp_path / "rotated.mp4"
    rotated.write_bytes(plain.read_bytes())
    set_mp4_rotation(rotated, degrees)

    _, stored = read_frames(plain, 3)
    info, upright = read_frames(rotated, 3)
    assert info.rotation == degrees
    for s, u in zip(stored, upright):
        # Same decoded pixels, turned exactly once (twice would be 180/0 degrees off).
        assert np.array_equal(u.image, rotate_upright(s.image, degrees))
    h, w = upright[0].image.shape[:2]
    assert (info.width, info.height) == (w, h)
    assert (w, h) == ((120, 160) if degrees in (90, 270) else (160, 120))


def test_rotate_upright_turns_clockwise() -> None:
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    assert rotate_upright(image, 0) is image
    assert np.array_equal(rotate_upright(image, 90), np.rot90(image, k=-1))
    assert np.array_equal(rotate_upright(image, 180), np.rot90(image, k=2))
    assert np.array_equal(rotate_upright(image, 270), np.rot90(image, k=1))
    assert np.array_equal(rotate_upright(image, -90), rotate_upright(image, 270))
    with pytest.raises(ValueError, match="multiple of 90"):
        rotate_upright(image, 45)


def test_extract_params_validation() -> None:
    params = from_mapping(ExtractParams, {"frames_per_video": 8, "image_format": "jpg", "videos_per_shard": 64})
    assert params == full(ExtractParams, frames_per_video=8, image_format="jpg", videos_per_shard=64)
    with pytest.raises(ConfigError, match="frames_per_video"):
        full(ExtractParams, frames_per_video=0)
    with pytest.raises(ConfigError, match="image_format"):
        full(ExtractParams, image_format="gif")
    with pytest.raises(ConfigError, match="extract_frames.fps"):
        full(ExtractParams, fps=5)


# --- H.264: frames nothing refers to are not decoded unless sampled (skipdecode) ---------------


@pytest.fixture
def every_frame(monkeypatch: pytest.MonkeyPatch) -> callable:
    """Read a file the way it was read before skipdecode: OpenCV decodes every frame."""

    def read(path: Path, n: int, **kwargs: object) -> tuple:
        with monkeypatch.context() as patch:
            patch.setattr(video.skipdecode, "decode_sampled", lambda *args, **kwargs: None)
            return read_frames(path, n, **kwargs)

    return read


@pytest.fixture
def fast_calls(monkeypatch: pytest.MonkeyPatch) -> list:
    """What each call of skipdecode.decode_sampled returned (None: the file went to OpenCV)."""
    calls: list = []
    real = skipdecode.decode_sampled

    def spy(*args: object, **kwargs: object) -> object:
        calls.append(real(*args, **kwargs))
        return calls[-1]

    monkeypatch.setattr(video.skipdecode, "decode_sampled", spy)
    return calls


@pytest.fixture(scope="module")
def portrait_clip_frames() -> list:
    """A moving face: colours and motion that exercise chroma conversion, unlike flat grey frames."""
    return portrait_frames(20, 160, 120)


def _same(a: tuple, b: tuple) -> bool:
    (info_a, frames_a), (info_b, frames_b) = a, b
    return info_a == info_b and [f.frame_index for f in frames_a] == [f.frame_index for f in frames_b] and all(
        np.array_equal(x.image, y.image) for x, y in zip(frames_a, frames_b))


def _unreferenced(path: Path) -> set[int]:
    """Presentation indices of an MP4's non-reference H.264 pictures (PyAV's demuxer, our parser)."""
    import av

    with av.open(str(path)) as container:
        packets = [(p.pts, skipdecode.is_non_reference(bytes(p))) for p in container.demux(video=0) if p.size]
    order = {pts: i for i, pts in enumerate(sorted(pts for pts, _ in packets))}
    return {order[pts] for pts, unreferenced in packets if unreferenced}


def test_non_reference_pictures_are_recognised() -> None:
    def nal(header: int, payload: bytes = b"\x88\x84", size_bytes: int = 4) -> bytes:
        return (len(payload) + 1).to_bytes(size_bytes, "big") + bytes([header]) + payload

    sei, b_slice, p_slice, idr = 0x06, 0x01, 0x41, 0x65  # nal_ref_idc in bits 5-6, type in bits 0-4
    assert skipdecode.is_non_reference(nal(sei) + nal(b_slice) + nal(b_slice))
    assert skipdecode.is_non_reference(nal(b_slice, size_bytes=2), length_size=2)
    assert not skipdecode.is_non_reference(nal(b_slice) + nal(p_slice))  # one referenced slice is enough
    assert not skipdecode.is_non_reference(nal(idr))
    assert not skipdecode.is_non_reference(nal(sei))  # no picture at all: decode it, whatever it is
    assert not skipdecode.is_non_reference(nal(b_slice) + nal(0x14))  # MVC extension: not followed
    assert not skipdecode.is_non_reference(nal(b_slice)[:-1])  # length runs past the end
    assert not skipdecode.is_non_reference(nal(b_slice) + b"\x00")  # trailing bytes that do not parse
    assert not skipdecode.is_non_reference(b"")


def test_h264_sample_skips_unreferenced_frames_and_matches_decoding_every_frame(
        tmp_path: Path, every_frame: callable, fast_calls: list) -> None:
    path = write_h264(tmp_path / "numbered.mp4", numbered_frames(40))
    info, frames = read_frames(path, 8)
    expected = sample_indices(40, 8)
    assert [f.frame_index for f in frames] == expected
    assert [grey_index(f.image) for f in frames] == expected  # the pixels of the sampled frames
    assert (info.n_frames, info.decode_errors, info.notes) == (40, 0, ())
    fast = fast_calls[-1]
    assert fast is not None and fast.packets == 40
    skippable = _unreferenced(path) - set(expected)
    assert skippable and fast.decoded <= 40 - len(skippable)
    assert _same((info, frames), every_frame(path, 8))


@pytest.mark.parametrize("degrees", [90, 270])
def test_h264_rotation_matches_decoding_every_frame(tmp_path: Path, degrees: int, every_frame: callable,
                                                    fast_calls: list) -> None:
    path = write_h264(tmp_path / "rotated.mp4", numbered_frames(20))
    set_mp4_rotation(path, degrees)
    got = read_frames(path, 5)
    assert fast_calls[-1] is not None and got[0].rotation == degrees and got[1][0].image.shape == (160, 120, 3)
    assert _same(got, every_frame(path, 5))


@pytest.mark.parametrize("pix_fmt", [*skipdecode.SAME_AS_OPENCV[::2], "yuv420p10le"])
def test_h264_pixel_formats_give_opencvs_frames(tmp_path: Path, pix_fmt: str, portrait_clip_frames: list,
                                                every_frame: callable, fast_calls: list) -> None:
    """8-bit formats take the fast path with OpenCV's colours to the bit; 10-bit goes to OpenCV."""
    path = write_h264(tmp_path / f"{pix_fmt}.mp4", portrait_clip_frames, pix_fmt=pix_fmt)
    got = read_frames(path, 6)
    assert (fast_calls[-1] is not None) == (pix_fmt in skipdecode.SAME_AS_OPENCV)
    assert _same(got, every_frame(path, 6))


def test_h264_beginning_of_a_long_file_matches_decoding_every_frame(tmp_path: Path, every_frame: callable,
                                                                     fast_calls: list) -> None:
    path = write_h264(tmp_path / "long.mp4", numbered_frames(40) * 3)  # 120 frames
    got = read_frames(path, 4, max_frames=10)
    assert got[0].n_frames == 10 and [grey_index(f.image) for f in got[1]] == sample_indices(10, 4)
    fast = fast_calls[-1]
    assert fast is not None and fast.packets == 10 and fast.decoded <= 10 + skipdecode._MAX_REORDER
    assert _same(got, every_frame(path, 4, max_frames=10))


def test_plan_reads_a_long_file_only_as_far_as_the_sample_needs() -> None:
    """The first pass stops _MAX_REORDER packets past the sample's last frame, and orders what it read."""
    read: list[int] = []

    def demux(_stream: object) -> object:
        for pts in [0, 3, 1, 2, 6, 4, 5] + list(range(7, 1000)):  # decode order, B-frames reordered
            read.append(pts)
            yield SimpleNamespace(size=100, pts=pts, is_discard=False, is_corrupt=False)

    stream = SimpleNamespace(codec_context=SimpleNamespace(name="h264", pix_fmt="yuv420p",
                                                           extradata=bytes([1, 100, 0, 10, 0xFF, 0xE1, 0])))
    container = SimpleNamespace(streams=SimpleNamespace(video=[stream]), format=SimpleNamespace(name="mov,mp4,m4a"),
                                demux=demux)
    assert skipdecode._plan(container, 1000, 5) == (4, [0, 1, 2, 3, 4])
    assert len(read) == 5 + skipdecode._MAX_REORDER
    read.clear()
    assert skipdecode._plan(container, 1000, 1000)[1] == list(range(1000)) and len(read) == 1000
    assert skipdecode._plan(container, 1001, 1001) is None  # fewer packets than declared: not regular


def test_files_the_fast_path_does_not_handle_go_to_opencv(tmp_path: Path, every_frame: callable,
                                                          fast_calls: list) -> None:
    """mp4v, H.264 outside MP4, a truncated H.264 MP4: OpenCV decodes every frame and reports as before."""
    mp4v = write_clip(tmp_path / "mp4v.mp4", numbered_frames(20))
    mkv = write_h264(tmp_path / "h264.mkv", numbered_frames(20))
    whole = write_h264(tmp_path / "whole.mp4", numbered_frames(40), faststart=True)  # index first: a cut copy opens
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 6 // 10])
    for path in (mp4v, mkv, cut):
        fast_calls.clear()
        got = read_frames(path, 6)
        assert fast_calls in ([], [None]), path.name
        assert _same(got, every_frame(path, 6))
    info, _ = got
    assert 0 < info.n_frames < 40 and info.decode_errors > 0 and "ends after" in info.notes[0]


def test_corrupt_h264_falls_back_and_is_reported(tmp_path: Path, fast_calls: list) -> None:
    data = bytearray(write_h264(tmp_path / "whole.mp4", numbered_frames(40), faststart=True).read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 300):
        data[i] ^= 0xFF
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(bytes(data))
    info, frames = read_frames(corrupt, 8)
    assert fast_calls == [None]  # FFmpeg's error ends the fast path; OpenCV's pass counts the damage
    assert info.decode_errors >= 1 and "failed to decode mid-stream" in info.notes[0] and frames


def test_frames_a_failed_fast_path_handed_out_are_not_handed_out_twice(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_h264(tmp_path / "numbered.mp4", numbered_frames(30))
    real = skipdecode.decode_sampled

    def gives_up(path: Path, wanted: list[int], declared: int, rotate: callable, on_image: callable,
                 stop: int) -> None:
        done = real(path, wanted, declared, rotate)
        for index in wanted[:3]:  # as if FFmpeg failed after three frames
            on_image(index, done.images[index])

    monkeypatch.setattr(video.skipdecode, "decode_sampled", gives_up)
    seen: list[int] = []
    _, frames = read_frames(path, 8, on_frame=lambda frame: seen.append(frame.frame_index))
    assert seen == [f.frame_index for f in frames] == sample_indices(30, 8)


def test_frame_stream_on_h264_yields_the_sampled_frames(tmp_path: Path) -> None:
    path = write_h264(tmp_path / "numbered.mp4", numbered_frames(40))
    stream = video.FrameStream(path, 8)
    yielded = [grey_index(frame.image) for frame in stream]
    _, frames = stream.result()
    assert yielded == [f.frame_index for f in frames] == sample_indices(40, 8) and not stream.replanned


DATASET_CLIPS = sorted((SHARED_DATA / "ffpp_c23_sample").glob("**/*.mp4")) + sorted(
    (SHARED_DATA / "dfdc_sample").glob("*/*.mp4"))


@pytest.mark.skipif(not DATASET_CLIPS, reason=f"no FF++/DFDC sample clips under {SHARED_DATA}")
def test_dataset_clips_decode_to_the_same_frames(every_frame: callable, fast_calls: list) -> None:
    """FF++ c23 and DFDC files (H.264 with B-frames): the same 16 frames, bit for bit, from far fewer decodes."""
    for path in DATASET_CLIPS:
        fast_calls.clear()
        got = read_frames(path, 16)
        assert fast_calls and fast_calls[0] is not None, path
        assert fast_calls[0].decoded < 0.7 * fast_calls[0].packets, path
        assert _same(got, every_frame(path, 16)), path
