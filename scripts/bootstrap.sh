#!/usr/bin/env bash
# Finds the Pythons parallio can use and gives each a virtual environment
# with the test requirements: .venv/py311 (or whatever >= 3.11 `python3` is)
# and .venv/py313 (the best host, isolated subinterpreters, needs 3.13+).
# Prints the interpreters it prepared, best first, one per line.
# With --find, prepares nothing and prints the interpreters it found (what
# serving needs: parallio itself has no dependencies).
# Run by scripts/serve (--find) and scripts/test; safe to run again.
set -euo pipefail
find_only=false
[ "${1:-}" = --find ] && find_only=true
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venvs="$root/.venv"

version_of() { "$1" -c 'import sys; print("%d%d" % sys.version_info[:2])' 2>/dev/null; }

# Candidate interpreters: whatever is on PATH, then pyenv's own (its shims on
# PATH only forward to those, slowly: they are skipped).
candidates=()
for name in python3.14 python3.13 python3.12 python3.11 python3; do
    found=$(command -v "$name" 2>/dev/null) || continue
    case "$found" in */shims/*) continue ;; esac
    candidates+=("$found")
done
if command -v pyenv >/dev/null 2>&1 || [ -d "${PYENV_ROOT:-$HOME/.pyenv}" ]; then
    pyenv_root=$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")
    for python in "$pyenv_root"/versions/3.1[1-9]*/bin/python3; do
        [ -x "$python" ] && candidates+=("$python")
    done
fi

declare -A chosen=()
for python in "${candidates[@]}"; do
    version=$(version_of "$python") || continue
    [ -n "$version" ] && [ "$version" -ge 311 ] || continue
    # Keep the newest 3.13+ and the oldest supported, so both ends are tested.
    if [ "$version" -ge 313 ]; then slot=new; else slot=old; fi
    current=${chosen[$slot]:-}
    if [ -z "$current" ]; then chosen[$slot]=$python; continue; fi
    current_version=$(version_of "$current")
    if { [ $slot = new ] && [ "$version" -gt "$current_version" ]; } ||
       { [ $slot = old ] && [ "$version" -lt "$current_version" ]; }; then
        chosen[$slot]=$python
    fi
done

if [ -z "${chosen[new]:-}" ]; then
    echo "bootstrap: no CPython 3.13+ found (pyenv, PATH): the interpreters host will be" \
         "unavailable; using the processes host" >&2
fi
if [ -z "${chosen[new]:-}" ] && [ -z "${chosen[old]:-}" ]; then
    echo "bootstrap: parallio needs CPython 3.11 or newer; none was found" >&2
    exit 1
fi

for slot in new old; do
    python=${chosen[$slot]:-}
    [ -n "$python" ] || continue
    if $find_only; then
        echo "$python"
        continue
    fi
    mkdir -p "$venvs"
    venv="$venvs/py$(version_of "$python")"
    stamp="$venv/.requirements"
    if [ ! -x "$venv/bin/python" ] || ! cmp -s "$root/requirements-test.txt" "$stamp"; then
        echo "bootstrap: preparing $venv from $python" >&2
        "$python" -m venv "$venv" >&2
        "$venv/bin/python" -m pip install -q --disable-pip-version-check \
            -r "$root/requirements-test.txt" >&2
        cp "$root/requirements-test.txt" "$stamp"
    fi
    echo "$venv/bin/python"
done
