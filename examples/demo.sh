#!/usr/bin/env bash
# The main job, end to end: model a recorded trajectory, then learn a live
# workload, seal its model and enforce it.
set -euo pipefail
cd "$(dirname "$0")/.."
ST=.venv/bin/semtrust
# Everything the demo makes is kept (models, keys, the attestation) for you to
# look at; the last line says where, also when a step fails.
OUT=$(mktemp -d /tmp/semtrust-demo.XXXXXX)
chmod 755 "$OUT"
trap 'echo; echo "demo files kept in $OUT (remove with: rm -r $OUT)"' EXIT
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
echo "demo files go to $OUT"

say "1. Replay a recorded TSEM trajectory (75 events) and write its model"
$ST replay examples/sample-trajectory.json --output-model "$OUT/recorded.model"
$ST model show "$OUT/recorded.model"

WORKLOAD='cat /etc/hostname; ls / >/dev/null; sleep 2'

say "2. Learn a live workload in free modeling mode: sh -c '$WORKLOAD'"
$ST run --name demo-learn --output "$OUT/workload.model" -- sh -c "$WORKLOAD"
$ST model show "$OUT/workload.model"

say "3. Enforce the learned model: the same workload runs unchanged"
$ST run --name demo-enforce --model "$OUT/workload.model" --enforce -- sh -c "$WORKLOAD"
echo "exit code: $?"

say "4. Enforce it on a workload that also reads /etc/passwd: denied before it happens"
set +e
$ST run --name demo-deny --model "$OUT/workload.model" --enforce \
    --output "$OUT/enforced.model" -- sh -c "$WORKLOAD; cat /etc/passwd"
rc=$?
set -e
echo "exit code: $rc (cat was refused with EPERM; its process is now untrusted)"
echo "points outside the learned model:"
$ST model diff "$OUT/workload.model" "$OUT/enforced.model" || true

say "5. Sign the model and check the signature"
$ST model keygen "$OUT/signer"
$ST model sign "$OUT/workload.model" --key "$OUT/signer" -o "$OUT/workload.signed"
$ST model verify "$OUT/workload.signed" --key "$OUT/signer.pub"

say "6. Attest a running domain; verify the attestation offline, without its trajectory"
$ST model keygen "$OUT/tma"
NONCE=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
# The same programs and files, with a longer sleep so the domain is still up when we ask.
$ST run --name demo-attest --model "$OUT/workload.model" --enforce --tma-key "$OUT/tma" \
    -- sh -c "${WORKLOAD/sleep 2/sleep 60}" &
DOMAIN=$!
for _ in $(seq 300); do $ST list 2>/dev/null | grep -q demo-attest && break; sleep 0.1; done
$ST attest demo-attest --nonce "$NONCE" -o "$OUT/attestation.json"
kill "$DOMAIN"
wait "$DOMAIN" || true
$ST verify "$OUT/attestation.json" --key "$OUT/tma.pub" --model "$OUT/workload.model" \
    --nonce "$NONCE"

