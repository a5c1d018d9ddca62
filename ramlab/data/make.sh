#!/usr/bin/env bash
# Re-record the small real captures of data/ (see MANIFEST.md). Needs qemu-system-x86_64
# (Debian: qemu-system-x86) and, for postcopy-hugepages, root (hugetlbfs mount).
# Page counts are timing dependent: each folder's meta.json is the truth for its bytes.
set -euo pipefail
cd "$(dirname "$0")"
CAPTURE=${CAPTURE:-"python -m ramlab.capture"}
rm -rf plain q35-plain xbzrle compress multifd-zstd postcopy postcopy-hugepages
$CAPTURE plain --ram 16M
$CAPTURE q35-plain --ram 16M --machine q35
$CAPTURE xbzrle --ram 16M --xbzrle --cache-size 4M
$CAPTURE compress --ram 16M --compress
$CAPTURE multifd-zstd --ram 16M --multifd 2 --multifd-compression zstd
$CAPTURE postcopy --ram 16M --postcopy
$CAPTURE postcopy-hugepages --ram 16M --postcopy --hugepages
