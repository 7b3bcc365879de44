#!/usr/bin/env bash
# Smoke run of every benchmark on tiny inputs (CI runs it after the metric gate's `dvc repro`):
# each must run to the end and print its figures. No time, ratio or target is asserted (the
# machines are shared; the figures of a smoke run mean nothing); what it catches is a benchmark
# broken by an API change. Every file in benchmarks/ needs an entry below (or a reason to be
# skipped): a new one without it fails the run.
#
# Usage: benchmarks/smoke.sh    (needs the sample pipeline's outputs: `dvc repro` or `dvc pull`)
# Uses `python` from PATH (the project's .venv/bin) unless $PYTHON says otherwise.
set -euo pipefail
cd "$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel)"
PYTHON="${PYTHON:-python}"
export TQDM_DISABLE=1  # progress bars would only clutter the log

clip=data/sample/astronaut_00.mp4  # a real clip of the embedded sample: 36 frames, 320x320
for f in "$clip" data/manifest.csv data/frames.csv data/faces.parquet data/crops models/model.pt models/detector.pt \
    outputs/extract_report.csv; do
  if [[ ! -e "$f" ]]; then
    echo "benchmarks/smoke.sh: $f is missing: run \`dvc repro\` (or \`dvc pull\`) first" >&2
    exit 2
  fi
done

# release_outputs NAME FILE...: true when the release pipeline's DVC outputs FILE... exist (data/
# is not in git: a clean clone lacks them), else says why NAME is skipped.
release_outputs() {
  local name="$1" missing=() f
  shift
  for f in "$@"; do [[ -e "$f" ]] || missing+=("$f"); done
  (( ${#missing[@]} == 0 )) && return 0
  echo "== $name: skipped: needs ${missing[*]}, outputs of the release pipeline that git does not hold" \
    "(\`cd release && dvc pull\`, or \`dvc repro\` there)"
  return 1
}

failed=()
start=$SECONDS
for bench in benchmarks/*.py benchmarks/*.sh; do
  name="$(basename "$bench")"
  case "$name" in
    smoke.sh) continue ;;
    bench_setup.sh)
      echo "== $name: skipped: it clones the repository and installs everything with empty caches" \
        "(a ~6 GB download, minutes): run it by hand"
      continue ;;
    release_report.py)
      # release/outputs is in git, but the manifest and the face scores are DVC outputs of the
      # release pipeline (data/ is not in git): absent from a clean clone.
      release_outputs "$name" release/data/manifest.csv release/data/face_scores.parquet || continue
      args=(--release release) ;;
    val_compare.py)
      release_outputs "$name" release/data/faces.parquet release/data/landmarks.parquet release/data/crops || continue
      args=(--release release --models release/detector.pt --limit 3) ;;
    bench_source_softening.py)
      release_outputs "$name" release/data/manifest.csv || continue
      args=(--max-photos 2 --threads 1) ;;  # the release's photos (../shared/data)
    bench_autoencoder.py) args=(--train-items 32 --val-items 8 --fake-items 4 --epochs 1) ;;
    bench_box_rounding.py) args=(--faces 5 --trials 2 --threads 1) ;;
    bench_crop_faces.py) args=(--videos 1 --repeats 1) ;;
    bench_decode.py) args=(--video "$clip" --frames 4 --repeats 1) ;;
    bench_gradcam.py) args=(--size 64 --batch 2 --images 2 --repeats 1 --threads 1) ;;
    bench_hit_rate.py) args=(--clips "$clip" --frames 4) ;;
    bench_invariance.py) args=(--files "$clip" --threads 1) ;;  # --smoke needs ../shared/data
    bench_predict.py) args=(--video "$clip" --frames 4 --repeats 1 --threads 1) ;;
    bench_scale_out.py) args=(--no-real --tiny 3 --workers 1) ;;
    bench_serve_start.py) args=(--repeats 1) ;;
    bench_startup.py) args=(--unreadable 2 --repeats 1 --video "$clip") ;;
    # --images: one batch (params.yaml's train.batch_size is 32; fewer images give no full batch);
    # --models: the sample's own and a second architecture at another size.
    bench_train.py) args=(--images 32 --repeats 1 --threads 1 --workers 0 --precision fp32
                          --models resnet18@160 efficientnet_lite0@128) ;;
    *)
      echo "== $name: FAILED: no smoke arguments for it: add an entry to benchmarks/smoke.sh"
      failed+=("$name")
      continue ;;
  esac
  echo "== $name ${args[*]}"
  t0=$SECONDS
  if [[ "$name" == *.sh ]]; then run=(bash "$bench"); else run=("$PYTHON" "$bench"); fi
  if "${run[@]}" "${args[@]}"; then
    echo "-- $name: ran in $((SECONDS - t0)) s"
  else
    echo "-- $name: FAILED (exit status $?) after $((SECONDS - t0)) s"
    failed+=("$name")
  fi
done
echo "== benchmark smoke run: $((SECONDS - start)) s in all; failed: ${failed[*]:-none}"
(( ${#failed[@]} == 0 ))
