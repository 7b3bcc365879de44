"""Face detection (MTCNN's three networks, driven here) and square face crops from full-resolution frames.

MTCNN finds faces in three stages: PNet scans an image pyramid for candidate boxes, RNet
and ONet score and refine each candidate from a 24- and a 48-px patch, ONet adding five
landmarks. Its cost is overhead, not arithmetic (docs/performance.md), so this module
drives facenet-pytorch's trained networks itself:

* **Small pyramid, sharp patches.** PNet runs on a copy of the frame whose long side is
  ``detect_long_side``; the RNet/ONet patches of its candidates are cut from the
  full-resolution frame, so boxes, landmarks and scores of small or dark faces are as good
  as a full-resolution run gives without its pyramid (which cost 3-4x more per frame).
* **Keyframes, and what lies between them.** Faces move little from one sampled frame to
  the next. The first sampled frame is a keyframe, and so is the ``detect_every``-th frame
  after a keyframe with a face (the ``detect_every_no_face``-th after one without), and the
  last frame when the keyframe before it has no face. On a keyframe the whole frame is
  searched (on the small copy), and a face of the previous keyframe that the search did not
  find is followed: looked for in a window 2.5x its size around its box, from a grid of
  shifted and rescaled boxes refined by RNet/ONet, and where the grid finds nothing, by
  PNet in a window 4x the face around it (a face that moved further, as a head turning
  quickly does). The frames between two keyframes wait for the second one and are judged
  from both: a face in both (matched by position and size) is expected on the line between
  its two boxes, a face in one of them where that one has it; ONet alone checks each
  expected box (one batch for the whole gap; its box and landmarks are a detection like any
  other), and where it finds nothing the face is followed around the box. The frames after
  the last keyframe with a face are judged from it alone in the same way (each face
  expected where it has it). Between two keyframes without a face nothing is searched:
  there, a frame without a face costs nothing, and a face seen only between two keyframes
  (or after the last one) is missed, which is why such keyframes come sooner (hit rate over
  the shared real clips: ``benchmarks/bench_hit_rate.py``).
  Frames are never searched again at full resolution unless ``full_res_retry`` asks for it.
* **One thread.** Detection runs hundreds of tiny torch ops per frame; with two intra-op
  threads on cores another process uses, each op waits for the descheduled thread (a patch
  resize took 7.8 ms instead of 0.1 ms), so detection always runs with one, and the
  callers spend the other core on decoding.

Boxes and landmarks are in full-resolution frame pixels; crops are always cut from the
full-resolution frame. "No face" is an empty list, never an exception. What is found in a
frame depends on the keyframes around it, so the stage and the single-file path feed
:func:`detect_and_crop` the same frames in the same order.

Example:
    >>> params = load_section(CropParams, "crop_faces")  # doctest: +SKIP
    >>> detector = FaceDetector(params)  # doctest: +SKIP
    >>> crops = detect_and_crop(frames, detector, params)  # doctest: +SKIP
    >>> crops[0].crop.shape  # (224, 224, 3) uint8, not normalised  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Generator, Iterable, Iterator

import cv2
import numpy as np
import torch
from facenet_pytorch import MTCNN
from torchvision.ops import batched_nms

from ..core.threads import torch_threads
from ..media.imaging import Window, crop_window, cut_window
from ..media.video import Frame

logger = logging.getLogger(__name__)

# A face box (x1, y1, x2, y2), frame pixels.
Box = tuple[float, float, float, float]

# MTCNN's pyramid cannot hold a face on images smaller than this on their short side,
# so such images are never searched.
MIN_DETECT_SIDE = 20

# The most pixels any whole-frame search scans (4K UHD): bounds memory and time on huge images.
MAX_DETECT_PIXELS = 3840 * 2160

# MTCNN's own settings (facenet-pytorch's defaults): per-stage score thresholds, pyramid
# scale step, and PNet's cell geometry.
_STAGE_THRESHOLDS = (0.6, 0.7, 0.7)
_PYRAMID_FACTOR = 0.709
_PNET_STRIDE, _PNET_CELL = 2, 12

# Following a face: candidate boxes are its last box shifted by a fifth of its side (3x3)
# and scaled by 0.85 and 1.15 (11 boxes; RNet/ONet's box regression takes them the rest
# of the way), scored from a window 2.5x the face, resized to 80 px (the face about 32 px:
# RNet's 24-px patches come from it, ONet's 48-px ones from the full-resolution frame).
# Only RNet's best few go on to ONet, which costs about 0.9 ms per patch.
_FOLLOW_WINDOW = 2.5
_FOLLOW_SIDE = 80
_FOLLOW_GRID = np.array([(dx, dy, 1.0) for dy in (-0.2, 0.0, 0.2) for dx in (-0.2, 0.0, 0.2)] + [(0, 0, 0.85), (0, 0, 1.15)])
_FOLLOW_ONET = 3

# Where the grid finds nothing (the face moved more than a fifth of its side: a quick turn of
# the head), PNet searches a window 4x the face around the expected box, resized to 128 px
# (the face about 32 px), at the pyramid scales for faces 0.6-1.6x the expected size: a
# re-detection around the lost track for about the cost of the grid, not a whole-frame search.
_LOCAL_WINDOW = 4.0
_LOCAL_SIDE = 128
_LOCAL_SCALES = (0.6, 1.6)

# Two keyframes' faces are the same face when their centres are at most a face size apart and
# their sizes within 1.5x (between keyframes the face is then expected on the line between them).
_MATCH_SHIFT = 1.0
_MATCH_SCALE = 1.5


@dataclass(frozen=True)
class CropParams:
    """Params section ``crop_faces``.

    Attributes:
        detect_long_side: The whole-frame search (PNet's pyramid) runs on a copy with this
            long side (never upscaled); candidates are refined at full resolution.
        detect_every: After a keyframe with a face, the N-th sampled frame is the next
            keyframe, searched whole; the frames between two keyframes are checked where the
            keyframes' faces are (module doc), and so are those after the last keyframe.
            1: every frame searched whole.
        detect_every_no_face: After a keyframe without a face, the N-th sampled frame is the
            next keyframe (nothing is checked between such keyframes, so a face that shows up
            there is found only by the next one: dark or distant faces, found in some frames).
        full_res_retry: Also search frames at full resolution where nothing was found
            (slow: 3-4x a frame's cost, for few extra faces).
        prob_threshold: Keep faces whose ONet probability is at least this.
        min_face_size: Smallest face the whole-frame search looks for, px on the detection copy.
        margin: Fraction of the box size added on each side before cropping.
        crop_size: Side of the square output crops, px.
        min_face_ratio: Keep faces at least this fraction of the frame's largest face.
        max_faces_per_frame: Keep at most this many faces per frame (largest first).
        videos_per_shard: Videos per crops tar shard.
    """

    detect_long_side: int
    detect_every: int
    detect_every_no_face: int
    full_res_retry: bool
    prob_threshold: float
    min_face_size: int
    margin: float
    crop_size: int
    min_face_ratio: float
    max_faces_per_frame: int
    videos_per_shard: int

    def __post_init__(self) -> None:
        rules = {  # key: (valid?, the rule, for the message)
            "detect_long_side": (self.detect_long_side >= MIN_DETECT_SIDE, f">= {MIN_DETECT_SIDE}"),
            "detect_every": (self.detect_every >= 1, ">= 1"),
            "detect_every_no_face": (self.detect_every_no_face >= 1, ">= 1"),
            "prob_threshold": (0.0 <= self.prob_threshold <= 1.0, "in [0, 1]"),
            "min_face_size": (self.min_face_size >= _PNET_CELL, f">= {_PNET_CELL}"),
            "margin": (self.margin >= 0.0, ">= 0"),
            "crop_size": (self.crop_size >= 1, ">= 1"),
            "min_face_ratio": (0.0 <= self.min_face_ratio <= 1.0, "in [0, 1]"),
            "max_faces_per_frame": (self.max_faces_per_frame >= 1, ">= 1"),
            "videos_per_shard": (self.videos_per_shard >= 1, ">= 1"),
        }
        for key, (ok, rule) in rules.items():
            if not ok:
                raise ValueError(f"{key} must be {rule}, got {getattr(self, key)!r}")


@dataclass(frozen=True, eq=False)  # eq=False: comparing ndarray fields is ambiguous
class Face:
    """One detected face, in full-resolution frame pixels.

    Attributes:
        box: ``(x1, y1, x2, y2)``; may extend past the frame border.
        prob: ONet's face probability.
        landmarks: ``(5, 2)`` float array of (x, y): eyes, nose, mouth corners.
    """

    box: tuple[float, float, float, float]
    prob: float
    landmarks: np.ndarray

    @property
    def size(self) -> float:
        """Longer side of the box, px (faces are ranked and filtered by it)."""
        x1, y1, x2, y2 = self.box
        return max(x2 - x1, y2 - y1)


@dataclass(eq=False)
class FaceCrop:
    """A face cut out of one sampled frame.

    Attributes:
        frame_index: The frame's index in its video.
        face_index: Rank of the face in its frame, 0 = largest.
        face: The detection, full-resolution pixels.
        window: The square ``(left, top, side)`` in frame pixels the crop was cut from;
            recorded so later steps map frame coordinates into crop pixels exactly.
        crop: ``(crop_size, crop_size, 3)`` RGB uint8 (not normalised).
    """

    frame_index: int
    face_index: int
    face: Face
    window: Window
    crop: np.ndarray

    def record(self) -> dict:
        """The detection fields of this crop's ``faces.parquet`` row (all but video and shard)."""
        x1, y1, x2, y2 = self.face.box
        left, top, side = self.window
        return {
            "frame_index": self.frame_index, "face_index": self.face_index,
            "x1": x1, "y1": y1, "x2": x2, "y2": y2, "det_prob": self.face.prob,
            "landmarks": [float(v) for v in np.asarray(self.face.landmarks).reshape(-1)],
            "crop_left": left, "crop_top": top, "crop_side": side,
        }


def pyramid_scales(short_side: int, min_face: float, max_face: float | None = None) -> list[float]:
    """MTCNN's pyramid: image scales at which PNet's 12-px cell sees faces from ``min_face`` px up.

    Args:
        short_side: Short side of the searched image, px.
        min_face: Smallest face looked for, px.
        max_face: Largest face looked for, px (None: as large as the image).

    Returns:
        Decreasing scales, ``12 / min_face`` times powers of 0.709, while the scaled image
        is at least 12 px and (with ``max_face``) the scale still sees faces up to it.
    """
    scale = _PNET_CELL / min_face
    scales = []
    while short_side * scale >= _PNET_CELL:
        scales.append(scale)
        if max_face is not None and scale * max_face <= _PNET_CELL:
            break
        scale *= _PYRAMID_FACTOR
    return scales


def _square(boxes: np.ndarray) -> np.ndarray:
    """MTCNN's ``rerec``: squares of the boxes' longer side, same centres."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    x1 = boxes[:, 0] + (w - side) / 2
    y1 = boxes[:, 1] + (h - side) / 2
    return np.stack([x1, y1, x1 + side, y1 + side], axis=1)


def _regress(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """MTCNN's ``bbreg``: shift box edges by ``reg`` times the box size."""
    size = np.stack([boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1] * 2, axis=1)
    return boxes + reg * size


def _patch_window(box: np.ndarray) -> Window:
    """The pixels MTCNN cuts for a (square) box: rows/columns trunc(x1)-1 .. trunc(x2)-1."""
    x1, y1, x2, y2 = (int(v) for v in box)
    return x1 - 1, y1 - 1, max(1, max(x2 - x1, y2 - y1) + 1)


def _window_search(image: np.ndarray, box: np.ndarray, ratio: float, side: int, scales: tuple[float, ...]) -> _Search:
    """A square window ``ratio`` times a square box's side around its centre, resized to ``side`` px."""
    size = box[2] - box[0]
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    window = (int(round(cx - ratio * size / 2)), int(round(cy - ratio * size / 2)), max(1, int(round(ratio * size))))
    return _Search(cut_window(image, window, side), window[0], window[1], side / window[2], scales)


def _nms_min(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy NMS where overlap is intersection over the smaller box (MTCNN's last stage)."""
    order = np.argsort(-scores, kind="stable")
    area = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        iw = np.maximum(0.0, np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]) + 1)
        ih = np.maximum(0.0, np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]) + 1)
        order = rest[iw * ih / np.minimum(area[i], area[rest]) <= threshold]
    return np.array(keep, dtype=np.int64)


def _match(before: list[Face], after: list[Face]) -> tuple[list[tuple[Face, Face]], list[Face], list[Face]]:
    """Pair the faces of two keyframes that are the same face moved: closest centres first, at most
    ``_MATCH_SHIFT`` times their mean size apart and of sizes within ``_MATCH_SCALE`` of each other.

    Returns:
        ``(pairs (before, after), faces of ``before`` without a pair, faces of ``after`` without one)``.
    """
    links = []
    for i, a in enumerate(before):
        for j, b in enumerate(after):
            shift = np.hypot((a.box[0] + a.box[2] - b.box[0] - b.box[2]) / 2, (a.box[1] + a.box[3] - b.box[1] - b.box[3]) / 2)
            size = (a.size + b.size) / 2
            if shift <= _MATCH_SHIFT * size and 1 / _MATCH_SCALE <= a.size / max(b.size, 1e-6) <= _MATCH_SCALE:
                links.append((shift / size, i, j))
    pairs, used_a, used_b = [], set(), set()
    for _, i, j in sorted(links):
        if i not in used_a and j not in used_b:
            pairs.append((before[i], after[j]))
            used_a.add(i)
            used_b.add(j)
    return pairs, [f for i, f in enumerate(before) if i not in used_a], [f for j, f in enumerate(after) if j not in used_b]


@dataclass(frozen=True, eq=False)
class _Search:
    """An image PNet scans, and where its pixels lie in the full-resolution frame.

    Attributes:
        image: What PNet sees (a downscaled frame, or a window around a followed face).
        left: Frame x of the image's left edge.
        top: Frame y of its top edge.
        scale: Image pixels per frame pixel.
        scales: The pyramid scales to scan it at.
    """

    image: np.ndarray
    left: float
    top: float
    scale: float
    scales: tuple[float, ...]

    def to_frame(self, boxes: np.ndarray) -> np.ndarray:
        """Map ``(k, 4)`` boxes from image to frame pixels."""
        return boxes / self.scale + [self.left, self.top, self.left, self.top]

    def to_image(self, boxes: np.ndarray) -> np.ndarray:
        """Map ``(k, 4)`` boxes from frame to image pixels."""
        return (boxes - [self.left, self.top, self.left, self.top]) * self.scale


class FaceDetector:
    """MTCNN's networks (facenet-pytorch weights), driven as the module doc says.

    Args:
        params: Detection and selection settings.
        device: Torch device; default CUDA when available, else CPU.
    """

    def __init__(self, params: CropParams, device: str | torch.device | None = None) -> None:
        self.params = params
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        # Only its trained networks are used; `mtcnn.detect` is facenet-pytorch's own driver
        # (kept for the benchmarks' naive baseline).
        self.mtcnn = MTCNN(keep_all=True, post_process=False, min_face_size=params.min_face_size, device=self.device)
        # Counts, for benchmarks and tests: whole-frame searches (small copy, full resolution), boxes
        # followed (RNet/ONet grid), of those searched again by PNet in a wider window, boxes checked
        # by ONet alone.
        self.searches = {"frame": 0, "full_res": 0, "follow": 0, "local": 0, "verify": 0}
        # Per frame of the last :meth:`track`, in order: this thread's CPU seconds spent on it
        # (a keyframe's own; a share of its gap's ONet batch and its own follow between keyframes).
        self.frame_cpu: list[float] = []

    # ---------------------------------------------------------------- MTCNN's stages
    def _tensor(self, images: np.ndarray) -> torch.Tensor:
        """``(N, H, W, 3)`` uint8 -> normalised float ``(N, 3, H, W)`` on the device."""
        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device).permute(0, 3, 1, 2).float()
        return (x - 127.5) * 0.0078125

    @torch.no_grad()
    def _propose(self, searches: list[_Search], limit: int | None = None) -> list[np.ndarray]:
        """PNet over each search's pyramid (equal-size images, batched): square candidate boxes
        ``(k, 4)`` per search, in frame pixels, best first; at most ``limit`` per search."""
        h, w = searches[0].image.shape[:2]
        found: list[list[np.ndarray]] = [[] for _ in searches]
        for scale in searches[0].scales:
            size = (int(w * scale + 1), int(h * scale + 1))
            batch = np.stack([cv2.resize(s.image, size, interpolation=cv2.INTER_AREA) for s in searches])
            reg, prob = self.mtcnn.pnet(self._tensor(batch))
            score = prob[:, 1]
            idx, ys, xs = torch.nonzero(score >= _STAGE_THRESHOLDS[0], as_tuple=True)
            if len(idx) == 0:
                continue
            cells = torch.stack([xs, ys], dim=1).to(torch.float64)
            q1 = torch.floor((_PNET_STRIDE * cells + 1) / scale)
            q2 = torch.floor((_PNET_STRIDE * cells + _PNET_CELL) / scale)
            boxes = torch.cat([q1, q2], dim=1)
            scores = score[idx, ys, xs].double()
            regs = reg[idx, :, ys, xs].double()
            keep = batched_nms(boxes, scores, idx, 0.5)
            for k in keep.tolist():
                found[int(idx[k])].append(np.concatenate([boxes[k].numpy(), [scores[k].item()], regs[k].numpy()]))
        out = []
        for search, rows in zip(searches, found):
            if not rows:
                out.append(np.zeros((0, 4)))
                continue
            r = np.array(rows)
            keep = batched_nms(torch.from_numpy(r[:, :4]), torch.from_numpy(r[:, 4]), torch.zeros(len(r), dtype=torch.int64), 0.7)
            r = r[keep.numpy()[:limit]]  # batched_nms returns indices by decreasing score
            size = np.stack([r[:, 2] - r[:, 0], r[:, 3] - r[:, 1]] * 2, axis=1)
            boxes = r[:, :4] + r[:, 5:9] * size
            out.append(_square(search.to_frame(boxes)))
        return out

    @torch.no_grad()
    def _net(self, net: torch.nn.Module, images: list[np.ndarray], searches: list[_Search], cand: np.ndarray,
             owner: np.ndarray, side: int) -> list[np.ndarray]:
        """Run RNet or ONet on ``side``-px patches of the candidates (frame-pixel boxes).

        A patch is cut from the search image when the box spans at least ``side`` of its
        pixels (as much detail as the network takes, and a cheap resize), else from the
        full-resolution frame (small or distant faces: the detail only it has).
        """
        patches = []
        for box, o in zip(cand, owner):
            search = searches[o]
            if (box[2] - box[0]) * search.scale >= side:
                patches.append(cut_window(search.image, _patch_window(search.to_image(box[None])[0]), side))
            else:
                patches.append(cut_window(images[o], _patch_window(box), side))
        return [t.double().cpu().numpy() for t in net(self._tensor(np.stack(patches)))]

    def _refine(self, images: list[np.ndarray], searches: list[_Search], boxes: list[np.ndarray],
                onet_limit: int | None = None) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """RNet then ONet on each search's candidate boxes (frame pixels); at most ``onet_limit``
        of RNet's best per search go on to ONet.

        Returns:
            Per search: boxes ``(k, 4)``, probabilities ``(k,)``, landmarks ``(k, 5, 2)``, frame pixels.
        """
        owner = np.concatenate([np.full(len(b), i, dtype=np.int64) for i, b in enumerate(boxes)])
        cand = np.concatenate(boxes)
        if not len(cand):
            return self._onet(images, searches, cand, owner)
        reg, prob = self._net(self.mtcnn.rnet, images, searches, cand, owner, 24)
        keep = prob[:, 1] > _STAGE_THRESHOLDS[1]
        cand, owner, reg, prob = cand[keep], owner[keep], reg[keep], prob[keep, 1]
        nms = batched_nms(torch.from_numpy(cand), torch.from_numpy(prob), torch.from_numpy(owner), 0.7).numpy()
        if onet_limit is not None:  # nms is by decreasing score: keep each search's first few
            nms = np.concatenate([nms[owner[nms] == i][:onet_limit] for i in range(len(searches))])
        return self._onet(images, searches, _square(_regress(cand[nms], reg[nms])), owner[nms])

    def _onet(self, images: list[np.ndarray], searches: list[_Search], cand: np.ndarray,
              owner: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """ONet on square candidate boxes (frame pixels), ``owner`` the search of each: MTCNN's last stage.

        Returns:
            Per search: boxes ``(k, 4)``, probabilities ``(k,)``, landmarks ``(k, 5, 2)``, frame pixels.
        """
        if not len(cand):
            return [(np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2))) for _ in searches]
        reg, marks, prob = self._net(self.mtcnn.onet, images, searches, cand, owner, 48)
        keep = prob[:, 1] > _STAGE_THRESHOLDS[2]
        cand, owner, reg, marks, prob = cand[keep], owner[keep], reg[keep], marks[keep], prob[keep, 1]
        wh = cand[:, 2:4] - cand[:, 0:2] + 1
        points = np.stack([wh[:, None, 0] * marks[:, :5] + cand[:, None, 0] - 1,
                           wh[:, None, 1] * marks[:, 5:] + cand[:, None, 1] - 1], axis=2)
        cand = _regress(cand, reg)
        results = []
        for i in range(len(searches)):
            mine = np.flatnonzero(owner == i)
            keep = mine[_nms_min(cand[mine], prob[mine], 0.7)]
            results.append((cand[keep], prob[keep], points[keep]))
        return results

    def _kept(self, results: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> list[list[Face]]:
        """Per search, its refined faces with probability at least ``prob_threshold``."""
        return [[Face(box=tuple(float(v) for v in b), prob=float(p), landmarks=pt)
                 for b, p, pt in zip(boxes, probs, points) if p >= self.params.prob_threshold]
                for boxes, probs, points in results]

    def _faces(self, images: list[np.ndarray], searches: list[_Search], limit: int | None = None) -> list[list[Face]]:
        """Candidates from the searches (one per image, ``limit`` each), refined: faces above ``prob_threshold``."""
        return self._kept(self._refine(images, searches, self._propose(searches, limit)))

    # ---------------------------------------------------------------- searches
    def _frame_search(self, image: np.ndarray, long_side: int | None) -> _Search | None:
        """The whole frame, shrunk to ``long_side`` (None: as is) and to at most MAX_DETECT_PIXELS;
        None when too small to search."""
        h, w = image.shape[:2]
        if h * w > MAX_DETECT_PIXELS:
            budget = int(max(h, w) * (MAX_DETECT_PIXELS / (h * w)) ** 0.5)
            long_side = budget if long_side is None else min(long_side, budget)
        scale = 1.0 if long_side is None or max(h, w) <= long_side else long_side / max(h, w)
        small = image if scale == 1.0 else cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                                                      interpolation=cv2.INTER_AREA)
        if min(small.shape[:2]) < max(MIN_DETECT_SIDE, self.params.min_face_size):
            return None
        scales = pyramid_scales(min(small.shape[:2]), self.params.min_face_size)
        return _Search(small, 0.0, 0.0, small.shape[1] / w, tuple(scales))

    def _search_frame(self, image: np.ndarray) -> list[Face]:
        """Whole-frame search on the small copy (and at full resolution if asked and nothing was found)."""
        search = self._frame_search(image, self.params.detect_long_side)
        if search is None:
            return []
        self.searches["frame"] += 1
        (faces,) = self._faces([image], [search])
        if not faces and self.params.full_res_retry and search.scale != 1.0:
            full = self._frame_search(image, None)
            if full is not None:
                self.searches["full_res"] += 1
                (faces,) = self._faces([image], [full])
        return faces

    def _follow(self, image: np.ndarray, expected: list[Box]) -> list[Face]:
        """Look for faces near the boxes where they are expected: RNet/ONet on a grid of
        shifted and rescaled copies of each box (no PNet pyramid); where that finds nothing,
        PNet on a wider window around the box (the face moved further than the grid reaches).

        Returns:
            The faces found (all boxes together).
        """
        squares = _square(np.array(expected, dtype=np.float64))
        searches, boxes = [], []
        for box in squares:
            searches.append(_window_search(image, box, _FOLLOW_WINDOW, _FOLLOW_SIDE, ()))
            side = box[2] - box[0]
            cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            half = side * _FOLLOW_GRID[:, 2] / 2
            x, y = cx + side * _FOLLOW_GRID[:, 0], cy + side * _FOLLOW_GRID[:, 1]
            boxes.append(np.stack([x - half, y - half, x + half, y + half], axis=1))
        self.searches["follow"] += len(searches)
        per_box = self._kept(self._refine([image] * len(searches), searches, boxes, _FOLLOW_ONET))
        lost = [box for box, faces in zip(squares, per_box) if not faces]
        if lost:
            face = _LOCAL_SIDE / _LOCAL_WINDOW  # the expected face's size in the window, px
            scales = tuple(pyramid_scales(_LOCAL_SIDE, face * _LOCAL_SCALES[0], face * _LOCAL_SCALES[1]))
            wide = [_window_search(image, box, _LOCAL_WINDOW, _LOCAL_SIDE, scales) for box in lost]
            self.searches["local"] += len(wide)
            per_box += self._kept(self._refine([image] * len(wide), wide, self._propose(wide), _FOLLOW_ONET))
        return [f for faces in per_box for f in faces]

    def _verify(self, images: list[np.ndarray], expected: list[list[Box]]) -> list[list[list[Face]]]:
        """ONet alone on each expected box (squared, cut from its full-resolution frame), all in one batch.

        Args:
            images: Frames.
            expected: Per frame, the boxes where a face is expected.

        Returns:
            Per frame, per expected box: the faces ONet confirms there (its regressed box and
            landmarks; empty where it finds none).
        """
        frame_of = [i for i, boxes in enumerate(expected) for _ in boxes]
        if not frame_of:
            return [[] for _ in images]
        self.searches["verify"] += len(frame_of)
        # One search per box (the frame itself, scale 1), so each box keeps its own result.
        searches = [_Search(images[i], 0.0, 0.0, 1.0, ()) for i in frame_of]
        cand = _square(np.array([box for boxes in expected for box in boxes], dtype=np.float64))
        found = iter(self._kept(self._onet([images[i] for i in frame_of], searches, cand, np.arange(len(cand)))))
        return [[next(found) for _ in boxes] for boxes in expected]

    def _keyframe(self, image: np.ndarray, previous: list[Face]) -> list[Face]:
        """A keyframe: the whole-frame search; the previous keyframe's faces it did not find are followed."""
        found = self._search_frame(image)
        _, missed, _ = _match(previous, found)
        return self._select(found + (self._follow(image, [f.box for f in missed]) if missed else []))

    def _between(self, images: list[np.ndarray], before: list[Face], after: list[Face]) -> list[list[Face]]:
        """The frames between two keyframes: each face expected where the keyframes put it.

        A face in both keyframes (matched by :func:`_match`) is expected on the line between
        its two boxes, a face in one of them where that one has it. ONet checks every expected
        box (one batch for the whole gap); where it finds no face, the face is followed around
        the box (:meth:`_follow`: the RNet/ONet grid, then PNet in a wider window). No
        whole-frame search: frames between two keyframes without a face cost nothing, and a
        face that shows up only between two keyframes is not seen.
        """
        if not images:
            return []
        pairs, gone, new = _match(before, after)
        expected = []
        for j in range(len(images)):
            t = (j + 1) / (len(images) + 1)  # sampled frames are evenly spaced in time
            expected.append([tuple((1 - t) * np.asarray(a.box) + t * np.asarray(b.box)) for a, b in pairs]
                            + [f.box for f in gone + new])
        start = time.thread_time()
        verified = self._verify(images, expected)
        share = (time.thread_time() - start) / len(images)
        out = []
        for image, boxes, checked in zip(images, expected, verified):
            start = time.thread_time()
            missed = [box for box, faces in zip(boxes, checked) if not faces]
            followed = self._follow(image, missed) if missed else []
            out.append(self._select([f for faces in checked for f in faces] + followed))
            self.frame_cpu.append(share + time.thread_time() - start)
        return out

    # ---------------------------------------------------------------- selection
    def _select(self, faces: list[Face]) -> list[Face]:
        """Merge duplicates, rank by size, apply the per-frame caps."""
        p = self.params
        if not faces:
            return []
        boxes = np.array([f.box for f in faces])
        keep = _nms_min(boxes, np.array([f.prob for f in faces]), 0.7)
        faces = sorted((faces[i] for i in keep), key=lambda f: (-f.size, -f.prob, f.box))
        floor = p.min_face_ratio * faces[0].size
        return [f for f in faces if f.size >= floor][: p.max_faces_per_frame]

    # ---------------------------------------------------------------- public
    def track(self, images: Iterable[np.ndarray]) -> Iterator[list[Face]]:
        """Detect faces in the sampled frames of one video, in order, as they come.

        The first frame is a keyframe (:meth:`_keyframe`), then the ``detect_every``-th frame
        after a keyframe with a face, the ``detect_every_no_face``-th after one without, and the
        last frame if the keyframe before it has no face; the frames between two keyframes wait
        for the second one and are then judged from both (:meth:`_between`), those after the
        last keyframe with a face from it alone.

        Args:
            images: ``(H, W, 3)`` RGB uint8 frames, consecutive samples of one video (any
                iterable: frames may still be decoding).

        Yields:
            Per frame, in order, its faces (largest first) in full-resolution pixels; an empty
            list when there is none, including frames too small to search.

        Raises:
            ValueError: If an image is not ``(H, W, 3)`` uint8.
        """
        self.frame_cpu = []
        key: list[Face] = []  # the last keyframe's faces
        held: list[np.ndarray] = []  # the frames since it
        for i, image in enumerate(images):
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"image {i}: expected (H, W, 3) uint8, got {image.shape} {image.dtype}")
            # With faces to check between keyframes, one may come after detect_every frames; with
            # none, a face that shows up is only found by a whole-frame search, so they come sooner.
            every = self.params.detect_every if key else self.params.detect_every_no_face
            if i and len(held) + 1 < every:
                held.append(image)
                continue
            key, held = (yield from self._next_keyframe(image, key, held)), []
        if held and key:
            # A face that shows up after the last keyframe goes unseen, as one between two keyframes
            # does; in return, one whole-frame search fewer per video (5 -> 4 at 32 frames, 3 -> 2 at 16).
            with torch_threads(1):
                tail = self._between(held, key, [])  # each face expected where the keyframe has it
            yield from tail
        elif held:  # after a keyframe without a face, the last frame is a keyframe too
            yield from self._next_keyframe(held[-1], key, held[:-1])

    def _next_keyframe(self, image: np.ndarray, key: list[Face],
                       held: list[np.ndarray]) -> Generator[list[Face], None, list[Face]]:
        """Detect keyframe ``image``, then judge the ``held`` frames between ``key`` (the faces of the
        keyframe before them) and it; yields the held frames' faces, then its own; returns its own."""
        # One thread while detecting, not while suspended: the caller's own work between frames keeps its threads.
        with torch_threads(1):
            start = time.thread_time()
            after = self._keyframe(image, key)
            cost = time.thread_time() - start
            between = self._between(held, key, after)
        yield from between
        self.frame_cpu.append(cost)
        yield after
        return after

    def detect(self, images: Iterable[np.ndarray]) -> list[list[Face]]:
        """:meth:`track` over a whole list: per frame, its faces."""
        return list(self.track(images))


def detect_and_crop(frames: Iterable[Frame], detector: FaceDetector, params: CropParams) -> list[FaceCrop]:
    """Detect faces in a video's sampled frames and crop them: the one path used by the
    ``crop_faces`` stage and by single-video prediction.

    Args:
        frames: The video's sampled frames in order (any iterable: each frame is detected
            and cropped as it arrives).
        detector: The detector (built once by the caller).
        params: Crop settings (``margin``, ``crop_size``).

    Returns:
        Crops ordered by frame, then face rank; empty when no frame has a face.
    """
    pending: list[Frame] = []

    def images() -> Iterator[np.ndarray]:
        for frame in frames:
            pending.append(frame)
            yield frame.image

    crops = []
    for faces in detector.track(images()):
        frame = pending.pop(0)  # track yields once per image taken, in order
        for k, face in enumerate(faces):
            window = crop_window(face.box, params.margin)
            crops.append(FaceCrop(frame.frame_index, k, face, window, cut_window(frame.image, window, params.crop_size)))
    return crops
