#!/usr/bin/env bash
# The main job, end to end: model a recorded trajectory, then learn a live
# workload, seal its model and enforce it.
set -euo pipefail
cd "$(dirname "$0")/.."
ST=.venv/bin/semtrust
OUT=$(mktemp -d /tmp/semtrust-demo.XXXXXX)
chmod 755 "$OUT"
trap 'rm -rf "$OUT"' EXIT
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "1. Replay a recorded TSEM trajectory (75 events) and write its model"
$ST replay examples/sample-trajectory.json --output-model "$OUT/recorded.model"
$ST model show "$OUT/recorded.model"

say "2. Learn a live workload in free modeling mode"
$ST run --name demo-learn --output "$OUT/workload.model" -- sh -c 'cat /etc/hostname; ls / >/dev/null'
$ST model show "$OUT/workload.model"

say "3. Enforce the learned model: the same workload runs unchanged"
$ST run --name demo-enforce --model "$OUT/workload.model" --enforce \
    -- sh -c 'cat /etc/hostname; ls / >/dev/null'
echo "exit code: $?"

say "4. Enforce it on a workload that also reads /etc/passwd: denied before it happens"
set +e
$ST run --name demo-deny --model "$OUT/workload.model" --enforce \
    --output "$OUT/forensics.json" --trajectory \
    -- sh -c 'cat /etc/hostname; ls / >/dev/null; cat /etc/passwd'
rc=$?
set -e
echo "exit code: $rc (non-zero: the workload was stopped at the event outside its model)"

say "5. Sign the model and check the signature"
$ST model keygen "$OUT/signer"
$ST model sign "$OUT/workload.model" --key "$OUT/signer" -o "$OUT/workload.signed"
$ST model verify "$OUT/workload.signed" --key "$OUT/signer.pub"
