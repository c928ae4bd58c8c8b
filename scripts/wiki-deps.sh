#!/usr/bin/env bash
# Installs what the wiki's tests use beyond PyPI, where this machine allows
# it (root with apt-get): Debian's chromium for the browser test and
# dict-gcide, the real corpus one test serves. Best effort and bounded in
# time: without them those tests skip, saying why. Run by scripts/test.
set -uo pipefail
[ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 || exit 0
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
[ -f /usr/share/dictd/gcide.index ] || missing+=(dict-gcide)
[ ${#missing[@]} -gt 0 ] || exit 0
export DEBIAN_FRONTEND=noninteractive
apt_install() { timeout 600 apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1; }
# A fresh machine may never have fetched the package lists.
apt_install || { timeout 300 apt-get update -q >/dev/null 2>&1 && apt_install; } ||
    echo "test: could not install ${missing[*]} within the time allowed; the wiki tests" \
         "that need them will skip" >&2
