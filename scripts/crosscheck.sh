#!/bin/sh
# Cross-checks `fastinfer bench` against an independent load generator
# (wrk, from Debian): both drive the same image at the same concurrency
# against a running server, one after the other, and print req/s.
#
#   make run &   # or any fastinfer serve
#   scripts/crosscheck.sh [URL] [MODEL] [IMAGE] [CONNECTIONS] [SECONDS]
set -eu
URL=${1:-http://127.0.0.1:8080}
MODEL=${2:-resnet50}
IMAGE=${3:-vision/testdata/baboon.jpg}
CONNS=${4:-16}
SECS=${5:-30}
BIN=${BIN:-bin/fastinfer}

if ! command -v wrk >/dev/null 2>&1; then
	echo "installing wrk" >&2
	SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
	$SUDO apt-get install -y --no-install-recommends wrk >&2
fi

echo "== wrk: $CONNS connections, ${SECS}s"
IMAGE=$IMAGE wrk -t2 -c"$CONNS" -d"${SECS}s" --latency -s scripts/wrk-post.lua \
	"$URL/v1/models/$MODEL/classify" | tail -1

echo "== fastinfer bench: concurrency $CONNS, ${SECS}s"
"$BIN" bench --url "$URL" --model "$MODEL" --targets image --images "$IMAGE" \
	--concurrency "$CONNS" --warmup 3s --window "${SECS}s" --duration "${SECS}s" 2>/dev/null |
	awk '/^http-image/ {print "fastinfer bench: " $6 " req/s, p50 " $7 " ms, p99 " $9 " ms, errors " $12}'
