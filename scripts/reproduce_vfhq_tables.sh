#!/usr/bin/env bash
# Build VFHQ-mild/medium/heavy from GT clips, restore them with KEEP (and the image baseline: every
# frame alone, Kalman filter off), and print the paper's table for each level.
#
#   scripts/reproduce_vfhq_tables.sh GT_DIR WORK_DIR [extra `keep restore` flags, e.g. --device cuda]
#
# GT_DIR: aligned 512x512 VFHQ-Test clips (one frame folder or video per clip).
# WORK_DIR/<level>/lq, WORK_DIR/<level>/keep, WORK_DIR/<level>/image_baseline, WORK_DIR/<level>/eval.
set -euo pipefail
if [ "$#" -lt 2 ]; then
    sed -n '2,9p' "$0"
    exit 2
fi
GT=$1
WORK=$2
shift 2
for level in mild medium heavy; do
    dir="$WORK/$level"
    keep degrade --gt "$GT" --level "$level" -o "$dir/lq" --seed 0
    keep restore "$dir/lq" --aligned --save-faces -o "$dir/keep" "$@"
    keep restore "$dir/lq" --aligned --save-faces --image-baseline -o "$dir/image_baseline" "$@"
    keep eval --pred "$dir/keep" "$dir/image_baseline" --names KEEP "KEEP image baseline" \
        --gt "$GT" -o "$dir/eval" --title "VFHQ-$level"
done
