"""How parallio's processes log: one format, each line saying who wrote it.

Every record gets a ``worker`` attribute, ``main`` or ``worker N``, usable in
any format (``%(worker)s``); parallio's own format is :data:`FORMAT`::

    2026-12-01 07:25:40,569 [main] INFO parallio: serving <parallio server 127.0.0.1:8080> ...
    2026-12-01 07:25:41,002 [worker 2] ERROR parallio.http: the response to GET / failed

The main process configures logging once (:func:`configure`, from the
command line's ``--log-level`` / ``--log-config``, or
:func:`configure_default` when an application calling ``parallio.run()``
configured none), and workers in fresh interpreters (processes and
interpreters hosts) configure theirs the same way from what the main one
passes them (:func:`worker_logging_setup`).
"""

from __future__ import annotations

import logging
import logging.config
import threading
from typing import Any, Optional

from . import _context

__all__ = ["FORMAT", "configure", "configure_default", "worker_logging_setup",
           "configure_worker_logging", "load_config"]

FORMAT = "%(asctime)s [%(worker)s] %(levelname)s %(name)s: %(message)s"

# Who this interpreter's records are from when no worker is running on the
# thread: "main", or "worker N" in a worker's own interpreter.
_label = "main"
# The dictConfig the main process applied (sent on to workers), if any.
_applied_config: Optional[dict[str, Any]] = None
_factory_installed = False
_handler: Optional[logging.Handler] = None


def _who() -> str:
    worker = _context.local.worker
    if worker is not None:
        return f"worker {worker.seq_id}"
    # Worker threads are named "parallio: worker N" before their worker runs.
    name = threading.current_thread().name
    if name.startswith("parallio: worker "):
        return name[len("parallio: "):]
    return _label


def _install_record_factory() -> None:
    global _factory_installed
    if _factory_installed:
        return
    _factory_installed = True
    make = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        record.worker = _who()
        return record

    logging.setLogRecordFactory(factory)


def _stderr_handler(level: int | str) -> None:
    """parallio's handler on the root logger (replacing the one an earlier
    call put there)."""
    global _handler
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(_handler)
    root.setLevel(level)


def load_config(path: str) -> dict[str, Any]:
    """A logging.config.dictConfig dictionary from a JSON or TOML file
    (``.toml``: the whole file, or its ``[logging]`` table). ValueError
    naming the file when it is neither."""
    import json
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as error:
        raise ValueError(f"--log-config {path}: {error.strerror}") from None
    try:
        if path.endswith(".toml"):
            import tomllib
            config = tomllib.loads(data.decode())
            config = config.get("logging", config)
        else:
            config = json.loads(data)
    except ValueError as error:
        kind = "TOML" if path.endswith(".toml") else "JSON"
        raise ValueError(f"--log-config {path}: not valid {kind}: {error}") from None
    if not isinstance(config, dict) or "version" not in config:
        raise ValueError(f"--log-config {path}: a logging.config.dictConfig dictionary "
                         "needs a 'version' key (version = 1)")
    # parallio's own loggers exist by the time the file applies: unless it
    # says otherwise, they keep working (dictConfig would disable them).
    config.setdefault("disable_existing_loggers", False)
    return config


def configure(level: int | str = logging.INFO, config: Optional[dict[str, Any]] = None) -> None:
    """The main process's logging: ``config`` (a dictConfig dictionary)
    if given, else parallio's format on standard error at ``level``."""
    global _applied_config
    _install_record_factory()
    if config is not None:
        try:
            logging.config.dictConfig(config)
        except (ValueError, TypeError, AttributeError, ImportError) as error:
            raise ValueError(f"the logging configuration does not apply: {error}") from None
        _applied_config = config
    else:
        _stderr_handler(level)


def configure_default() -> None:
    """For ``parallio.run()`` in an application that configured no
    logging: parallio's own lines (where it listens, what it chose)
    appear; the application's stay at Python's defaults."""
    if logging.getLogger().handlers:
        return
    _install_record_factory()
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(FORMAT))
    logger = logging.getLogger("parallio")
    logger.addHandler(handler)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    # Its records are handled here: the root's last-resort handler must not
    # print them a second time.
    logger.propagate = False


def worker_logging_setup() -> tuple[int, Optional[dict[str, Any]]]:
    """What a worker in a fresh interpreter needs to log as this process
    does: the level and the dictConfig applied, if any."""
    return logging.getLogger().getEffectiveLevel(), _applied_config


def configure_worker_logging(setup: tuple[int, Optional[dict[str, Any]]] | None,
                             number: int) -> None:
    """In worker ``number``'s own interpreter: log as the main process
    does, each record marked ``worker N``."""
    global _label
    _label = f"worker {number}"
    _install_record_factory()
    if logging.getLogger().handlers:
        return
    level, config = setup if setup is not None else (logging.INFO, None)
    if config is not None:
        logging.config.dictConfig(config)
    else:
        _stderr_handler(level)
