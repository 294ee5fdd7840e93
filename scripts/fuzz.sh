#!/bin/sh
# Runs every Go fuzz target in the repository, one after the other, for
# $FUZZTIME each, and stops at the first failure (go test then writes the
# failing input under the package's testdata/fuzz/<Target>/: commit it as
# a seed once the bug is fixed).
#
#   scripts/fuzz.sh                    # 30s a target
#   FUZZTIME=10m scripts/fuzz.sh       # a long run
#   FUZZ_ONLY=V2Infer scripts/fuzz.sh  # targets whose name matches a regexp
#   scripts/fuzz.sh -l                 # list the targets only
#
# Environment: FUZZTIME (30s; a duration or Nx execs), FUZZMINIMIZETIME
# (5s: Go's default of 60s stalls short runs minimising new inputs),
# FUZZPARALLEL (workers; default GOMAXPROCS), FUZZ_ONLY (regexp),
# GOTAGS (openblas, as the Makefile), GO (go).
set -eu

cd "$(dirname "$0")/.."

GO=${GO:-go}
FUZZTIME=${FUZZTIME:-30s}
FUZZMINIMIZETIME=${FUZZMINIMIZETIME:-5s}
GOTAGS=${GOTAGS:-openblas}
FUZZ_ONLY=${FUZZ_ONLY:-.}
export CGO_ENABLED=1
# Some test packages resolve ONNX Runtime at init; the Makefile exports it.
if [ -z "${ONNXRUNTIME_LIB:-}" ] && [ -f .cache/onnxruntime/1.29.0/libonnxruntime.so ]; then
	ONNXRUNTIME_LIB=$PWD/.cache/onnxruntime/1.29.0/libonnxruntime.so
	export ONNXRUNTIME_LIB
fi

list_only=0
if [ "${1:-}" = "-l" ]; then
	list_only=1
fi

# Packages with a fuzz target: a cheap grep first, so only those test
# binaries are built; then go test -list gives the exact names.
pkgs=$(grep -rl --include='*_test.go' --exclude-dir=.cache --exclude-dir=.git \
	--exclude-dir=testdata --exclude-dir=vendor --exclude-dir=node_modules \
	-E '^func Fuzz[A-Za-z0-9_]*\(' . | xargs -r -n1 dirname | sort -u)
if [ -z "$pkgs" ]; then
	echo "fuzz.sh: no fuzz targets found" >&2
	exit 1
fi

targets=""
for dir in $pkgs; do
	if ! out=$("$GO" test -tags "$GOTAGS" -list '^Fuzz' "$dir" 2>&1); then
		printf 'fuzz.sh: cannot build the tests of %s:\n%s\n' "$dir" "$out" >&2
		exit 1
	fi
	names=$(printf '%s\n' "$out" | grep '^Fuzz' | grep -E "$FUZZ_ONLY" || true)
	for name in $names; do
		targets="$targets $dir:$name"
	done
done
if [ -z "$targets" ]; then
	echo "fuzz.sh: no fuzz target matches FUZZ_ONLY=$FUZZ_ONLY" >&2
	exit 1
fi

if [ "$list_only" = 1 ]; then
	for t in $targets; do echo "$t"; done
	exit 0
fi

n=0
for t in $targets; do
	n=$((n + 1))
done
echo "fuzz.sh: $n targets, $FUZZTIME each (tags: $GOTAGS)"
i=0
for t in $targets; do
	i=$((i + 1))
	dir=${t%%:*}
	name=${t#*:}
	echo "== [$i/$n] $dir $name"
	set -- -tags "$GOTAGS" -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" -fuzzminimizetime "$FUZZMINIMIZETIME"
	if [ -n "${FUZZPARALLEL:-}" ]; then
		set -- "$@" -parallel "$FUZZPARALLEL"
	fi
	if ! "$GO" test "$@" "$dir"; then
		echo "fuzz.sh: $name in $dir failed; the input is under $dir/testdata/fuzz/$name/" >&2
		echo "fuzz.sh: rerun it with: $GO test -tags $GOTAGS -run '^$name\$' $dir" >&2
		exit 1
	fi
done
echo "fuzz.sh: all $n targets ran $FUZZTIME without a finding"
