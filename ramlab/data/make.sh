#!/usr/bin/env bash
# Re-record the small real captures of data/ (see MANIFEST.md). Needs qemu-system-x86_64
# (Debian: qemu-system-x86) and, for postcopy-hugepages, root (hugetlbfs mount).
# Page counts are timing dependent: each folder's meta.json is the truth for its bytes.
set -euo pipefail
cd "$(dirname "$0")"
CAPTURE=${CAPTURE:-"python -m ramlab.capture"}
rm -rf plain q35-plain xbzrle compress multifd-zstd postcopy postcopy-hugepages steer
# --exec: these four were recorded with exec:cat (before the recorder's socket and its chunk log were the default)
$CAPTURE plain --ram 16M --exec
$CAPTURE q35-plain --ram 16M --machine q35 --exec
$CAPTURE xbzrle --ram 16M --xbzrle --cache-size 4M --exec
$CAPTURE compress --ram 16M --compress --exec
$CAPTURE multifd-zstd --ram 16M --multifd 2 --multifd-compression zstd
$CAPTURE postcopy --ram 16M --postcopy
$CAPTURE postcopy-hugepages --ram 16M --postcopy --hugepages
python ../../scripts/capture_steer.py steer   # watched live and rescued (ramlab.capture.watch)
python ../../scripts/make_traces.py
