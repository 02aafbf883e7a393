#!/usr/bin/env bash
# Run every bench/*_bench.py (each prints its own figures). Usage: bash bench/run.sh
# A failing benchmark is reported and the others still run; exit status 1 if any failed.
set -u
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
status=0
for b in bench/*_bench.py; do
    [ -e "$b" ] || continue
    echo "=== $b ($(date -u +%H:%M:%SZ))"
    if ! "$PY" "$b"; then
        echo "=== $b FAILED" >&2
        status=1
    fi
    echo
done
exit "$status"
