#!/bin/sh
# Runs every unit test binary and every fuzz corpus replay in $1 (build dir).
# Each binary prints its own cmocka summary; the last line sums them up.
O=${1:-build}
pass=0 fail=0
for t in "$O"/tests/test_*; do
	[ -x "$t" ] || continue
	out=$(CMOCKA_MESSAGE_OUTPUT=stdout "$t" 2>&1); rc=$?
	printf '%s\n' "$out" | grep -E '^\[  (FAILED|PASSED)|^\[  ERROR|FAILED|PASSED' | sed "s|^|$(basename "$t"): |"
	p=$(printf '%s\n' "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' | tail -n1)
	f=$(printf '%s\n' "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' | tail -n1)
	pass=$((pass + ${p:-0})); fail=$((fail + ${f:-0}))
	if [ "$rc" -ne 0 ] && [ -z "$f" ]; then
		printf '%s\n' "$out" | tail -n 20
		fail=$((fail + 1))
	fi
done
for r in "$O"/tests/replay_*; do
	[ -x "$r" ] || continue
	name=$(basename "$r" | sed 's/^replay_//')
	if "$r" "tests/fuzz/corpus/$name"; then
		pass=$((pass + 1)); echo "$name: corpus replay PASSED"
	else
		fail=$((fail + 1)); echo "$name: corpus replay FAILED"
	fi
done
echo "unit: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
