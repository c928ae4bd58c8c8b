"""Finding, and where allowed installing, the programs the suite needs:
wrk (required), nginx-light, uvloop, matplotlib (optional)."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from typing import Callable

Say = Callable[[str], None]


def find_binary(name: str) -> str | None:
    # /usr/sbin is not on every PATH, and nginx lives there.
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def apt_install(package: str, say: Say) -> bool:
    """Install Debian's ``package`` with apt-get (fetching the package lists
    first if need be); False, after saying why, when it cannot."""
    if shutil.which("apt-get") is None:
        say(f"  cannot install {package}: apt-get is not here")
        return False
    if os.geteuid() != 0:
        say(f"  cannot install {package}: not root (run: sudo apt-get install -y {package})")
        return False
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    command = ["apt-get", "install", "-y", "-q", "--no-install-recommends", package]
    say(f"  installing {package} with apt-get ...")
    if subprocess.run(command, env=env, capture_output=True).returncode == 0:
        return True
    # A fresh machine may never have fetched the package lists.
    subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:]
        say(f"  apt-get install {package} failed: {' '.join(tail)}")
        return False
    return True


def ensure_binary(name: str, package: str, install: bool, say: Say) -> str | None:
    """The path of ``name``, installing Debian's ``package`` when missing
    and ``install`` is set; None (after saying why) when it cannot be had."""
    path = find_binary(name)
    if path is None and install and apt_install(package, say):
        path = find_binary(name)
    if path is None:
        say(f"  {name} is not installed (Debian package {package})")
    return path


def ensure_module(module: str, install: bool, say: Say) -> bool:
    """Whether ``module`` imports in this Python, pip-installing it first
    when missing and ``install`` is set."""
    try:
        importlib.import_module(module)
        return True
    except ImportError:
        pass
    if not install:
        return False
    say(f"  installing {module} with pip ...")
    result = subprocess.run([sys.executable, "-m", "pip", "install", "-q", module],
                            capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:]
        say(f"  pip install {module} failed: {' '.join(tail)}")
        return False
    importlib.invalidate_caches()
    try:
        importlib.import_module(module)
        return True
    except ImportError as exc:
        say(f"  {module} installed but does not import: {exc}")
        return False
