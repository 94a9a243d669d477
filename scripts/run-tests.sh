#!/usr/bin/env bash
# Runs the test suites (arguments go to pytest). If the interpreter dies of a native fault (an
# abort or a segfault in a C extension), the output ends with the test that was running and the
# top frames of every thread: CI keeps only the last lines of a run, and faulthandler's dump of
# each thread's whole stack and of every loaded extension module would push both out of them.
set -uo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

STREAMLEARN_TEST_PROGRESS="$work/current" .venv/bin/python -m pytest "$@" 2>&1 | tee "$work/log"
rc=${PIPESTATUS[0]}

if grep -q '^Fatal Python error' "$work/log" || ((rc >= 128)); then
    echo
    echo "=== the test process died (exit $rc) while running: $(cat "$work/current" 2>/dev/null || echo '(none started)')"
    grep -m1 '^Fatal Python error' "$work/log"
    # Each thread's header and its five innermost frames ("most recent call first").
    awk '/^(Current thread|Thread) 0x/ {left = 6} left > 0 {print; left--}' "$work/log" | head -n 80
fi
exit "$rc"
