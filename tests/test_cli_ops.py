"""The command line as an operator meets it: values it refuses and how it
says so, the configuration file and PARALLIO_* variables, logging, the
errors of a mistyped application, the version, and the names workers carry
in ps."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

import parallio
from parallio.cli import build_parsers
from parallio.cli.config import ConfigError, parse_args
from parallio.host import InterpretersHost

from .conftest import recv_until
from .test_cli import ROOT, start_server_process, stop

PYTHON = [sys.executable, "-m", "parallio"]


def run_cli(*args: str, cwd: str = ROOT, env: dict | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*PYTHON, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, PYTHONPATH=ROOT, **(env or {})))


def test_version():
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"parallio {parallio.__version__}"
    assert re.fullmatch(r"\d+\.\d+\.\d+", parallio.__version__)


@pytest.mark.parametrize("args, message", [
    (["echo", "--port", "99999"], "argument --port: 99999 is not a port (0-65535)"),
    (["echo", "--port", "-1"], "argument --port: -1 is not a port"),
    (["echo", "--workers", "0"], "argument --workers: 0: must be at least 1"),
    (["echo", "--drain-timeout", "-5"], "argument --drain-timeout: -5: must be 0 or more seconds"),
    (["wsgi", "m:app", "--idle-timeout", "0"], "argument --idle-timeout: 0: must be more than 0"),
    (["wsgi", "m:app", "--header-timeout", "nan"], "argument --header-timeout:"),
    (["asgi", "m:app", "--ws-ping-timeout", "-1"], "argument --ws-ping-timeout: -1"),
    (["echo", "--backlog", "0"], "argument --backlog: 0: must be at least 1"),
    (["echo", "--bind", "unix:/x", "--uds-mode", "999"], "argument --uds-mode: '999'"),
    (["echo", "--log-level", "loud"], "argument --log-level: 'loud' is not a level"),
    (["wsgi"], "the MODULE:APP argument is missing"),
])
def test_bad_values_are_errors_naming_the_option(args, message):
    result = run_cli(*args)
    assert result.returncode == 2
    assert message in result.stderr


def test_log_level_anywhere_on_the_line():
    for args in (["--log-level", "debug", "echo"], ["echo", "--log-level", "DEBUG"],
                 ["--log-level", "error", "echo", "--log-level", "debug"]):
        assert _parse(args).log_level == "DEBUG"
    assert _parse(["echo"]).log_level == "INFO"
    process, _port, _lines = start_server_process(
        [*PYTHON, "echo", "--port", "0", "--workers", "1", "--log-level", "debug"])
    assert stop(process)[0] == 0


def test_one_clean_log_format_naming_main_and_workers():
    process, port, lines = start_server_process(
        [*PYTHON, "serve", "tests._ops_apps:app", "--port", "0", "--workers", "1",
         "--parallel", "processes"])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")
            assert recv_until(sock, b"\n\n").startswith(b"HTTP/1.1 500")
    finally:
        code, err = stop(process)
    text = "".join(lines) + err
    assert re.search(r"^\S+ \S+ \[main\] INFO parallio: serving <parallio server", text, re.M)
    assert re.search(r"^\S+ \S+ \[worker 1\] ERROR parallio.http: ", text, re.M), text
    assert "parallio: parallio:" not in text and "INFO:parallio" not in text


# -- configuration -----------------------------------------------------------------

def _parse(argv, environ=None):
    parser, commands = build_parsers()
    return parse_args(parser, commands, argv, environ or {})


def test_config_file_then_environment_then_command_line(tmp_path):
    config = tmp_path / "parallio.toml"
    config.write_text(textwrap.dedent("""
        workers = 3
        drain-timeout = 2.5
        bind = ["unix:/run/a.sock", "[::1]:9000"]
        access_log = "/var/log/access.log"
        log-level = "warning"
        db = "sqlite:///x"            # tefb's: left for it

        [wsgi]
        app = "myapp:application"
        no-listing = true             # not a wsgi option
    """))
    with pytest.raises(ConfigError, match=r"\[wsgi\]: wsgi has no option 'no-listing'"):
        _parse(["wsgi", "--config", str(config)])
    config.write_text(config.read_text().replace("no-listing = true", "idle_timeout = 5"))
    args = _parse(["wsgi", "--config", str(config)])
    assert (args.workers, args.drain_timeout, args.idle_timeout) == (3, 2.5, 5.0)
    assert args.app == "myapp:application"
    assert [str(bind) for bind in args.bind] == ["unix:/run/a.sock", "[::1]:9000"]
    assert args.access_log == "/var/log/access.log" and args.log_level == "WARNING"
    env = {"PARALLIO_WORKERS": "5", "PARALLIO_BIND": "127.0.0.1:1 unix:/b.sock",
           "PARALLIO_CONFIG": str(config), "PARALLIO_TEST_POSTGRES": "not an option"}
    args = _parse(["wsgi"], env)
    assert args.workers == 5 and [str(b) for b in args.bind] == ["127.0.0.1:1", "unix:/b.sock"]
    args = _parse(["wsgi", "other:app", "--workers", "7", "--log-level", "error"], env)
    assert (args.workers, args.app, args.log_level) == (7, "other:app", "ERROR")


def test_pyproject_tool_parallio_and_flags(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "x"\n\n[tool.parallio]\nno-listing = true\n'
                         'port = 9001\n')
    args = _parse(["http-server", "--config", str(pyproject)])
    assert args.listing is False and args.port == 9001
    args = _parse(["http-server", "--config", str(pyproject)], {"PARALLIO_LISTING": "yes"})
    assert args.listing is True
    (tmp_path / "empty" ).mkdir()
    (tmp_path / "empty" / "pyproject.toml").write_text('[project]\nname = "x"\n')
    with pytest.raises(ConfigError, match=r"no \[tool.parallio\] table"):
        _parse(["echo", "--config", str(tmp_path / "empty" / "pyproject.toml")])


@pytest.mark.parametrize("content, message", [
    ("wokers = 4\n", "unknown option 'wokers'"),
    ("workers = 0\n", "--workers: 0: must be at least 1"),
    ("workers = true\n", "--workers takes a value"),
    ('parallel = "gpu"\n', "--parallel: 'gpu' is not one of auto, threads"),
    ("port = 99999\n", "--port: 99999 is not a port"),
    ("workers = [\n", "not valid TOML"),
])
def test_config_values_get_the_same_checks(tmp_path, content, message):
    config = tmp_path / "bad.toml"
    config.write_text(content)
    with pytest.raises(ConfigError, match=re.escape(message)):
        _parse(["echo", "--config", str(config)])
    result = run_cli("echo", "--config", str(config))
    assert result.returncode == 2 and message in result.stderr


def test_environment_values_get_the_same_checks():
    with pytest.raises(ConfigError, match="PARALLIO_PORT: --port: 70000 is not a port"):
        _parse(["echo"], {"PARALLIO_PORT": "70000"})
    with pytest.raises(ConfigError, match="PARALLIO_NO_LISTING: --no-listing is a flag"):
        _parse(["http-server"], {"PARALLIO_NO_LISTING": "maybe"})


def test_a_config_file_serves_for_real(tmp_path):
    config = tmp_path / "parallio.toml"
    config.write_text('protocol = "tests._protocols:Echo"\nworkers = 1\nport = 0\n')
    process, port, _ = start_server_process([*PYTHON, "serve", "--config", str(config)])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"from the config\n")
            assert recv_until(sock) == b"from the config\n"
    finally:
        assert stop(process)[0] == 0


def test_log_config_from_json_reaches_the_workers(tmp_path):
    config = tmp_path / "logging.json"
    config.write_text(json.dumps({
        "version": 1,
        "formatters": {"mine": {"format": "MINE %(worker)s %(levelname)s %(message)s"}},
        "handlers": {"err": {"class": "logging.StreamHandler", "formatter": "mine"}},
        "root": {"handlers": ["err"], "level": "INFO"},
    }))
    process, port, lines = start_server_process(
        [*PYTHON, "serve", "tests._ops_apps:app", "--port", "0", "--workers", "1",
         "--parallel", "processes", "--log-config", str(config)], )
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")
            recv_until(sock, b"\n\n")
    finally:
        _code, err = stop(process)
    text = "".join(lines) + err
    assert "MINE main INFO serving <parallio server" in text
    assert "MINE worker 1 ERROR " in text


def test_a_log_config_that_is_not_one_is_refused(tmp_path):
    bad = tmp_path / "logging.toml"
    bad.write_text('[logging]\nformatters = 3\n')
    result = run_cli("echo", "--log-config", str(bad))
    assert result.returncode == 2 and "needs a 'version' key" in result.stderr


# -- a mistyped application ----------------------------------------------------------

@pytest.fixture
def user_modules(tmp_path):
    (tmp_path / "mine.py").write_text("class Echo:\n    def data_received(self, t, d):\n"
                                      "        return d\n")
    (tmp_path / "badsyntax.py").write_text("class Echo:\n    def data_received(self, t, d)\n"
                                           "        return d\n")
    (tmp_path / "badname.py").write_text("import os\n\nvalue = undefined_name\n")
    (tmp_path / "wsgiapp.py").write_text("import badname\n")
    return tmp_path


@pytest.mark.parametrize("args, first_line, rest", [
    (["serve", "nosuchmodule:Echo"], "No module named 'nosuchmodule'", []),
    (["serve", "mine:NoSuch"], "module 'mine' has no attribute 'NoSuch'", []),
    (["serve", "mine"], "'mine': name a class or function as 'module:Name'", []),
    (["serve", "badsyntax:Echo"], "SyntaxError: expected ':' (badsyntax.py, line 2)",
     ['  File "{dir}/badsyntax.py", line 2', "SyntaxError: expected ':'"]),
    (["serve", "badname:Echo"], "NameError: name 'undefined_name' is not defined",
     ["Traceback (most recent call last):", '  File "{dir}/badname.py", line 3, in <module>',
      "NameError: name 'undefined_name' is not defined"]),
    (["wsgi", "wsgiapp:app", "--parallel", "processes"],
     "worker N failed to start: NameError: name 'undefined_name' is not defined",
     ['  File "{dir}/wsgiapp.py", line 1, in <module>',
      '  File "{dir}/badname.py", line 3, in <module>']),
])
def test_one_line_and_the_users_own_traceback(user_modules, args, first_line, rest):
    result = run_cli(*args, "--port", "0", "--workers", "2", cwd=str(user_modules))
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if " INFO " not in line]
    # Whichever worker failed first tells it.
    assert re.sub(r"worker \d", "worker N", lines[0]).endswith(
        f"[main] ERROR parallio: {first_line}"), result.stderr
    text = "\n".join(lines)
    for line in rest:
        assert line.format(dir=user_modules) in text, text
    # Not parallio's frames, not importlib's, no second copy, no broken pipe.
    assert "parallio/" not in text and "importlib" not in text
    assert text.count("Traceback") <= 1 and "BrokenPipeError" not in text
    assert len(lines) <= 8, text


@pytest.mark.skipif(InterpretersHost.unavailable_reason() is not None,
                    reason="isolated interpreters need 3.13+")
def test_auto_does_not_blame_subinterpreters_for_the_users_error(user_modules):
    for app, message in (("nosuchmod:app", "cannot import nosuchmod: ModuleNotFoundError: "
                                           "No module named 'nosuchmod'"),
                         ("wsgiapp:app", "cannot import wsgiapp (in badname): NameError")):
        result = run_cli("wsgi", app, "--port", "0", "--workers", "2", cwd=str(user_modules))
        assert result.returncode == 1
        assert "isolated subinterpreter" not in result.stderr
        assert message in result.stderr, result.stderr
        assert "worker" not in result.stderr  # none was started


@pytest.mark.skipif(InterpretersHost.unavailable_reason() is not None,
                    reason="isolated interpreters need 3.13+")
def test_auto_names_the_module_that_refuses_subinterpreters():
    process, _port, lines = start_server_process(
        [*PYTHON, "wsgi", "tests._wsgi_no_subinterpreters:app", "--port", "0", "--workers", "1"])
    stop(process)
    assert ("processes host (a module does not import in an isolated subinterpreter: "
            "tests._wsgi_no_subinterpreters: ImportError: this module refuses subinterpreters)"
            in "".join(lines))


def test_a_missing_optional_package_names_the_extra():
    code = ("import sys; sys.modules['psycopg'] = None\n"
            "from parallio.cli import main\n"
            "sys.exit(main(['tefb', '--port', '0', '--db', 'postgresql://u@127.0.0.1:1/db']))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, env=dict(os.environ, PYTHONPATH=ROOT))
    assert result.returncode == 1
    assert "pip install 'parallio[postgres]'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# -- names in ps -------------------------------------------------------------------------

def _comms(pid: int) -> list[str]:
    names = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/comm") as file:
            names.append(file.read().strip())
    return names


def test_processes_carry_names():
    process, port, _ = start_server_process(
        [*PYTHON, "echo", "--port", "0", "--workers", "2", "--parallel", "processes"])
    try:
        ps = subprocess.run(["ps", "-o", "pid=,comm=,args=", "--ppid", str(process.pid)],
                            capture_output=True, text=True, timeout=10).stdout
        workers = sorted(line.split(None, 1)[1].strip() for line in ps.splitlines())
        assert workers == ["parallio: w1    parallio: worker 1",
                           "parallio: w2    parallio: worker 2"], ps
        with open(f"/proc/{process.pid}/cmdline", "rb") as file:
            assert file.read().split(b"\0")[0].startswith(b"parallio: main echo --port 0")
        assert _comms(process.pid)[0] == "parallio: main" or "parallio: main" in _comms(process.pid)
    finally:
        assert stop(process)[0] == 0


@pytest.mark.parametrize("parallel", ["threads", "interpreters"])
def test_worker_threads_carry_names(parallel):
    if parallel == "interpreters" and InterpretersHost.unavailable_reason():
        pytest.skip(InterpretersHost.unavailable_reason())
    process, port, _ = start_server_process(
        [*PYTHON, "serve", "tests._ops_apps:Environment", "--port", "0", "--workers", "2",
         "--parallel", parallel])
    try:
        comms = _comms(process.pid)
        assert "parallio: main" in comms
        assert "parallio: w1" in comms and "parallio: w2" in comms, comms
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"?")
            assert recv_until(sock).split(maxsplit=3)[3].startswith(b"parallio: w")
    finally:
        assert stop(process)[0] == 0
