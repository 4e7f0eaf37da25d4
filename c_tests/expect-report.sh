#!/bin/sh
# expect-report.sh PATTERN PROGRAM ARG...: run PROGRAM (a sanitizer_proof case)
# and pass only if it both printed PATTERN (the sanitizer's report) and exited
# non-zero (the report failed the process, as it must in every other test).
# A case that exits 0, or fails without the report, fails this test.
pattern=$1
shift
out=$("$@" 2>&1)
rc=$?
printf '%s\n' "$out"
if [ "$rc" -eq 0 ]; then
  echo "expect-report: $* exited 0: the sanitizer did not stop it" >&2
  exit 1
fi
if ! printf '%s\n' "$out" | grep -qF -- "$pattern"; then
  echo "expect-report: $* exited $rc without the report '$pattern'" >&2
  exit 1
fi
echo "expect-report: '$pattern' and exit status $rc, as expected"
