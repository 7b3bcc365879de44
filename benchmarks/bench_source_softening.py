"""Does softening a crop (what training and checkpoint selection do) act as softening the photo does?

Usage:
    python benchmarks/bench_source_softening.py [--model release/detector.pt]
        [--manifest release/data/manifest.csv] [--splits val test] [--max-photos 100] [--seed 0] [--threads 1]

Training degrades stored face crops (``train.augment``, sizes at the source's scale) and
checkpoint selection scores validation reals softened the same way
(:func:`model.transforms.perturb_at_source`, ``train.val_perturb``); the invariance benchmark
(``bench_invariance.py``) softens the photo itself and lets MTCNN find the face again. If the
two disagree, training teaches invariance to something no real photo shows, and selection
measures it. For the photos of ``--splits`` (bench_invariance's seeded sample), top face
only, each perturbation of :data:`bench_invariance.PERTURBATIONS` that has a crop-level twin
(blur sigma 1.2, bilateral d 9, downscale x0.5) is scored four ways against the original
crop's P(fake):

- ``photo``: the photo perturbed, cropped with the ORIGINAL box (the pixels' effect alone);
- ``photo, new box``: the photo perturbed and detected again (what bench_invariance measures);
- ``box only``: the original photo cropped with the perturbed photo's box (the box's effect);
- ``crop``: the original crop perturbed by ``perturb_at_source`` at its window's side (what
  training and selection do).

Printed: the share of crop pixels outside the frame (black padding of a window that overhangs
a small photo); per perturbation, the mean change of P(fake) for each way and the median IoU
of the two boxes. Each photo is decoded, detected, cropped and scored once as it is. The
crop-level figure should be close to the ``photo`` one; on v3's code it was half of it
(+0.062 against +0.129 for blur), because the crop's padding edge was blurred with the face,
which a real blur never does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_invariance as bi  # noqa: E402  (its photo sample and perturbations, so both benchmarks agree)
from deepfake_detector.faces.detection import FaceDetector  # noqa: E402
from deepfake_detector.media.imaging import crop_window, cut_window  # noqa: E402
from deepfake_detector.media.probe import VideoReadError  # noqa: E402
from deepfake_detector.media.video import read_frames  # noqa: E402
from deepfake_detector.model.data import ArrayDataset  # noqa: E402
from deepfake_detector.model.engine import predict_logits, prepare_model, setup_runtime  # noqa: E402
from deepfake_detector.model.transforms import build_eval_transform, perturb_at_source, picture_rect  # noqa: E402
from deepfake_detector.scoring.aggregate import sigmoid  # noqa: E402
from deepfake_detector.verdicts.calibration import load_detector  # noqa: E402

# bench_invariance's perturbation -> perturb_at_source's twin of it (noise and JPEG have none).
CROP_TWIN = {"blur": "blur", "bilateral": "bilateral", "down0.5": "downscale"}
WAYS = ("photo", "photo, new box", "box only", "crop")


def padding_share(crop: np.ndarray) -> float:
    """The share of a crop's pixels outside the frame (:func:`picture_rect`'s padding)."""
    rect = picture_rect(crop)
    if rect is None:
        return 0.0
    top, bottom, left, right = rect
    return 1.0 - (bottom - top) * (right - left) / (crop.shape[0] * crop.shape[1])


def main(argv: list[str] | None = None) -> None:
    """Score every photo four ways per perturbation; print the mean changes."""
    import torch
    from torchvision.ops import box_iou

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=bi.REPO / "release" / "detector.pt")
    parser.add_argument("--manifest", type=Path, default=bi.REPO / "release" / "data" / "manifest.csv")
    parser.add_argument("--splits", nargs="+", default=["val", "test"])
    parser.add_argument("--max-photos", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    detector = load_detector(args.model)
    cal = detector.calibration
    faces = FaceDetector(cal.crop)
    rt = setup_runtime("auto")
    model = prepare_model(detector.model, rt)
    transform = build_eval_transform(detector.meta.input_size, tuple(detector.meta.mean), tuple(detector.meta.std))
    items, _ = bi.items_from_manifest(args.manifest, args.manifest.resolve().parent.parent, args.splits,
                                      args.max_photos, args.seed)
    photos = [i for i in items if i.kind == "image"]
    images, skipped = [], []
    for item in photos:
        try:
            images.append(read_frames(item.path, 1)[1][0].image)
        except VideoReadError as exc:
            skipped.append(f"{item.path}: {exc}")

    def top_box(image: np.ndarray) -> tuple[float, ...] | None:
        found = faces.detect([image])[0]
        return tuple(found[0].box) if found else None

    def crop(image: np.ndarray, box: tuple[float, ...]) -> np.ndarray:
        return cut_window(image, crop_window(box, cal.crop.margin), cal.crop.crop_size)

    def probs(crops: list[np.ndarray], desc: str) -> np.ndarray:
        return sigmoid(np.asarray(predict_logits(model, ArrayDataset(crops, transform), rt, batch_size=32, desc=desc),
                                  np.float64))

    # Each photo's box, crop and score once; every perturbation is compared with them.
    boxes = [top_box(image) for image in images]
    found = [k for k, box in enumerate(boxes) if box is not None]
    originals = {k: crop(images[k], boxes[k]) for k in found}
    base = dict(zip(found, probs(list(originals.values()), "original"))) if found else {}
    padded = [padding_share(c) for c in originals.values()]
    print(f"{args.model}: {len(images)} photos of {'/'.join(args.splits)} ({len(skipped)} unreadable, "
          f"{len(images) - len(found)} without a face); padding {np.mean(padded or [0.0]):.0%} of a crop")
    rng = np.random.default_rng(args.seed)
    for name, twin in CROP_TWIN.items():
        crops: list[np.ndarray] = []
        kept, new_boxes = [], []
        for k in found:
            box = boxes[k]
            perturbed = bi.PERTURBATIONS[name].apply(images[k], rng)
            new_box = top_box(perturbed)
            if new_box is None:
                continue
            side = crop_window(box, cal.crop.margin)[2]
            crops += [crop(perturbed, box), crop(perturbed, new_box), crop(images[k], new_box),
                      perturb_at_source(originals[k], twin, side)]
            kept.append(k)
            new_boxes.append(new_box)
        if not kept:
            print(f"{name}: no photo with a face before and after")
            continue
        prob = probs(crops, name).reshape(-1, len(WAYS))
        before = np.array([base[k] for k in kept])
        ious = box_iou(torch.tensor([boxes[k] for k in kept]), torch.tensor(new_boxes)).diagonal().numpy()
        shifts = ", ".join(f"{way} {np.mean(prob[:, j] - before):+.3f}" for j, way in enumerate(WAYS))
        print(f"{name} ({len(kept)} photos, {len(found) - len(kept)} without a face after; mean P(fake) "
              f"{before.mean():.3f}; median box IoU {np.median(ious):.3f}): mean change: {shifts}")
    for line in skipped:
        print("unreadable:", line)


if __name__ == "__main__":
    main()
