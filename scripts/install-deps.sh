#!/usr/bin/env bash
# Installs the Debian 12 packages nic needs to build, test and benchmark.
# `--check` only reports (exit 1) whether something is missing.
set -euo pipefail
PKGS=(build-essential cmake pkg-config libdnnl-dev libhdf5-dev libjson-c-dev
      libjpeg62-turbo-dev libpng-dev libopenslide-dev libvips-dev libomp-dev
      clang-format python3 python3-numpy python3-torch python3-h5py)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${1:-}" = "--check" ]; then
  [ ${#missing[@]} -eq 0 ] && exit 0
  echo "missing packages: ${missing[*]}" >&2
  exit 1
fi
[ ${#missing[@]} -eq 0 ] && { echo "all packages present"; exit 0; }
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "installing: ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
