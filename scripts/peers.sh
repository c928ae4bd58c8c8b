#!/usr/bin/env bash
# Installs, where missing and where it can (root, apt-get), the programs the
# TLS and proxy tests run against: curl and openssl (clients, certificates),
# nginx-light and HAProxy (balancers in front of parallio). Best effort:
# the tests that need a missing one skip and say why. Packages are kept
# from starting their services (nginx would take port 80).
set -uo pipefail
missing=()
for pair in curl:curl openssl:openssl nginx:nginx-light haproxy:haproxy; do
    tool=${pair%%:*}
    command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || missing+=("${pair#*:}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "peers: ${missing[*]} missing (apt-get install ${missing[*]}); their tests will skip" >&2
    exit 0
fi
policy=/usr/sbin/policy-rc.d
made_policy=
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && made_policy=1
fi
install() {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null 2>&1
}
install "${missing[@]}" || { apt-get update -q >/dev/null 2>&1 && install "${missing[@]}"; } ||
    echo "peers: could not install ${missing[*]}; their tests will skip" >&2
[ -n "$made_policy" ] && rm -f "$policy"
exit 0
