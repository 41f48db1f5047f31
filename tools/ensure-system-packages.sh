#!/usr/bin/env bash
# Make sure the Debian packages named on the command line are installed.
# As root, installs the missing ones (no recommends); otherwise prints the exact line to run and fails.
set -euo pipefail
missing=()
for pkg in "$@"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
line="apt-get install -y --no-install-recommends ${missing[*]}"
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "installing system packages: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $line
else
  echo "error: missing system packages: ${missing[*]}" >&2
  echo "       run as root: sudo $line" >&2
  exit 1
fi
