"""Fixtures of the services tests: every host this Python has, with the
epoll engine and with ``auto`` (io_uring) where the kernel allows it."""

from __future__ import annotations

import logging

import pytest

from parallio.engine import uring_unavailable_reason
from parallio.host import InterpretersHost
from parallio.services import _hub

from . import _funcs

HOSTS = ["threads", "processes", "interpreters"]


def _host_params() -> list:
    params = []
    for host in HOSTS:
        reason = InterpretersHost.unavailable_reason() if host == "interpreters" else None
        marks = [pytest.mark.skip(reason=reason)] if reason else []
        params.append(pytest.param(host, id=host, marks=marks))
    return params


def _host_io_params() -> list:
    ios = ["epoll"] if uring_unavailable_reason() else ["epoll", "auto"]
    params = []
    for param in _host_params():
        for io in ios:
            params.append(pytest.param((param.values[0], io), id=f"{param.id}-{io}",
                                       marks=param.marks))
    return params


@pytest.fixture(params=_host_params())
def host(request) -> str:
    """Every host this Python supports (epoll engine)."""
    return request.param


@pytest.fixture(params=_host_io_params())
def host_io(request) -> tuple[str, str]:
    """Every host this Python supports, with epoll and with io="auto"."""
    return request.param


@pytest.fixture(autouse=True)
def clean_services():
    """Each test starts with nothing queued, recorded or unhandled."""
    _funcs.reset()
    _hub.take_unhandled()
    yield
    _funcs.reset()
    leftovers = _hub.take_unhandled()
    for exc in leftovers:
        logging.getLogger("parallio").debug("unhandled after the test: %r", exc)
