#!/usr/bin/env bash
# Table A2's setting by default: VFHQ-mild/medium/heavy made with the release's degradation
# (`keep degrade --protocol release`), restored with the keep-v0.1 weights (the ECCV release), the
# state reset every 20-frame window as the release does, plus the image-baseline and bicubic rows;
# metrics with the paper's backends only (`keep eval --require-backends`: a missing ArcFace/GMFlow/
# LPIPS/I3D file is an error, never a silent dlib/Farneback substitute).
#
#   scripts/reproduce_vfhq_tables.sh GT_DIR WORK_DIR [--ours] [extra `keep restore` flags, e.g. --device cuda]
#
# --ours adds the carried-state row (our `keep restore` default, unproven until real weights show it).
# WORK_DIR/<level>/{lq,keep_reset,keep_carried,image_baseline,eval}; every setting is in each summary.
set -euo pipefail
if [ "$#" -lt 2 ]; then
    sed -n '2,12p' "$0"
    exit 2
fi
GT=$1
WORK=$2
shift 2
OURS=0
if [ "${1:-}" = "--ours" ]; then OURS=1; shift; fi
WEIGHTS=keep-v0.1
WINDOW=20
PROTOCOL=release
for level in mild medium heavy; do
    dir="$WORK/$level"
    keep degrade --gt "$GT" --level "$level" -o "$dir/lq" --seed 0 --protocol "$PROTOCOL"
    common=(--aligned --save-faces --weights "$WEIGHTS" --window "$WINDOW")
    keep restore "$dir/lq" "${common[@]}" --reset-state-per-window -o "$dir/keep_reset" "$@"
    keep restore "$dir/lq" "${common[@]}" --image-baseline -o "$dir/image_baseline" "$@"
    preds=("$dir/keep_reset" "$dir/image_baseline" "$dir/lq")
    names=("KEEP (reset per window)" "KEEP image baseline" "Bicubic")
    if [ "$OURS" = 1 ]; then
        keep restore "$dir/lq" "${common[@]}" -o "$dir/keep_carried" "$@"
        preds+=("$dir/keep_carried")
        names+=("KEEP (carried state)")
    fi
    keep eval --pred "${preds[@]}" --names "${names[@]}" --gt "$GT" -o "$dir/eval" --title "VFHQ-$level" \
        --require-backends --overwrite --window "$WINDOW" \
        --setting "weights=$WEIGHTS" --setting "window=$WINDOW" --setting "degradation=keep degrade --protocol $PROTOCOL --level $level --seed 0" \
        --setting "state=reset every window (carried-state row only with --ours: $OURS)" \
        --setting "Bicubic=the LQ clip resized to the GT size (bicubic) by keep eval" \
        --setting "extra restore flags=${*:-none}"
done
