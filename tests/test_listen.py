"""Where servers listen: --bind's addresses, unix sockets and inherited
descriptors shared by every worker, systemd socket activation, dual-stack
IPv6, and a port that something else holds -- on real sockets, with the
command line and the API as users run them."""

from __future__ import annotations

import collections
import errno
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import parallio
from parallio import Runtime, protocol_ref
from parallio._listen import ListenError, interfaces, parse_bind, tcp_server

from .conftest import recv_until
from .test_cli import ROOT, stop

PYTHON = [sys.executable, "-m", "parallio"]


def start_server_process(command: list[str], count: int = 1,
                         **popen: object) -> tuple[subprocess.Popen, int, list[str]]:
    """Start a command that serves; return it, the port of its first TCP
    server, and its stderr up to its ``count``-th "serving" line."""
    process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True,  # type: ignore
                               env=dict(os.environ, PYTHONPATH=ROOT), **popen)
    deadline = time.monotonic() + 30
    lines: list[str] = []
    port = 0
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        lines.append(line)
        if "serving <parallio server" in line:
            match = re.search(r"serving <parallio server [^>]*:(\d+)[ >]", line)
            if match and not port:
                port = int(match.group(1))
            count -= 1
            if not count:
                return process, port, lines
    process.kill()
    raise AssertionError("the server did not start:\n" + "".join(lines))


# -- what --bind says -------------------------------------------------------------

@pytest.mark.parametrize("text, kind, host, port, path, fd", [
    ("127.0.0.1:8080", "tcp", "127.0.0.1", 8080, "", -1),
    ("0.0.0.0:0", "tcp", "0.0.0.0", 0, "", -1),
    ("localhost", "tcp", "localhost", 9000, "", -1),
    ("[::1]:8080", "tcp", "::1", 8080, "", -1),
    ("[::]", "tcp", "::", 9000, "", -1),
    ("unix:/run/app.sock", "unix", "", 0, "/run/app.sock", -1),
    ("unix:relative.sock", "unix", "", 0, "relative.sock", -1),
    ("fd://3", "fd", "", 0, "", 3),
])
def test_bind_addresses(text, kind, host, port, path, fd):
    bind = parse_bind(text, 9000)
    assert (bind.kind, bind.host, bind.port, bind.path, bind.fd) == (kind, host, port, path, fd)


@pytest.mark.parametrize("text, complaint", [
    ("::1:8080", "brackets"),
    ("[::1:8080", "[::1]:8080"),
    ("[::1]8080", "[::1]:8080"),
    ("127.0.0.1:http", "must be a number"),
    ("127.0.0.1:65536", "out of range"),
    (":8080", "give a host"),
    ("unix:", "path"),
    ("fd://three", "descriptor number"),
])
def test_bad_bind_addresses_say_what_is_wrong(text, complaint):
    with pytest.raises(ValueError, match=re.escape(complaint)):
        parse_bind(text, 9000)


def test_command_line_rejects_a_bad_bind_naming_the_option():
    result = subprocess.run([*PYTHON, "echo", "--bind", "::1:80"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, env=dict(os.environ, PYTHONPATH=ROOT))
    assert result.returncode == 2
    assert "argument --bind: '::1:80': write an IPv6 address in brackets" in result.stderr


# -- one server per port ------------------------------------------------------------

def _listener(host: str = "127.0.0.1", reuseport: bool = False) -> socket.socket:
    sock = socket.socket()
    if reuseport:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, 0))
    sock.listen()
    return sock


@pytest.mark.parametrize("reuseport", [False, True], ids=["plain", "reuseport"])
def test_a_port_another_program_listens_on_is_an_error(reuseport):
    # Even one that set SO_REUSEPORT itself, as the same user: this server's
    # workers must not join another program's group.
    with _listener(reuseport=reuseport) as other:
        port = other.getsockname()[1]
        with pytest.raises(ListenError, match=f"^127.0.0.1:{port}: address already in use$"):
            parallio.server("127.0.0.1", port)
        # The wildcard overlaps it too.
        with pytest.raises(OSError, match="address already in use"):
            tcp_server("0.0.0.0", port)


def test_a_port_this_server_holds_is_not_joined_while_it_starts():
    """Between the placeholder's bind and the workers' listen, a second
    server's probe fails against the placeholder itself."""
    first = tcp_server("127.0.0.1", 0)
    try:
        with pytest.raises(ListenError, match="address already in use"):
            tcp_server("127.0.0.1", first.port)
    finally:
        parallio._listen.release(first)


def test_the_port_is_free_again_after_a_stop_despite_time_wait():
    endpoint = tcp_server("127.0.0.1", 0)
    endpoint.protocol = protocol_ref("tests._protocols:Echo")
    port = endpoint.port
    with Runtime([endpoint], workers=2, parallel="threads", io="epoll"):
        for _ in range(5):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(b"x")
                assert sock.recv(1) == b"x"
    # The server closed those connections during its drain: TIME_WAIT on
    # its side of the port.
    again = tcp_server("127.0.0.1", port)
    parallio._listen.release(again)


def test_a_second_parallio_on_the_same_port_fails_and_the_first_keeps_every_connection():
    first, port, _ = start_server_process([*PYTHON, "echo-upper", "--port", "0", "--workers", "2"])
    try:
        second = subprocess.run([*PYTHON, "echo", "--port", str(port), "--workers", "2"],
                                cwd=ROOT, capture_output=True, text=True, timeout=60,
                                env=dict(os.environ, PYTHONPATH=ROOT))
        assert second.returncode == 1
        assert f"127.0.0.1:{port}: address already in use" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1, second.stderr
        for _ in range(16):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(b"ping\n")
                assert recv_until(sock) == b"PING\n"
    finally:
        assert stop(first)[0] == 0


def _drop_bind_service() -> None:
    # PR_CAPBSET_DROP: the program exec'd next has no CAP_NET_BIND_SERVICE,
    # even as root.
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(24, 10, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_a_privileged_port_without_the_capability_says_what_is_needed():
    with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as file:
        if int(file.read()) <= 80:
            pytest.skip("this machine lets anyone bind port 80")
    try:
        result = subprocess.run(
            [*PYTHON, "echo", "--port", "80", "--workers", "1"], cwd=ROOT, capture_output=True,
            text=True, timeout=60, env=dict(os.environ, PYTHONPATH=ROOT),
            preexec_fn=_drop_bind_service)
    except subprocess.SubprocessError as error:
        pytest.skip(f"cannot drop CAP_NET_BIND_SERVICE here: {error}")
    if result.returncode == 0 or "address already in use" in result.stderr:
        pytest.skip("port 80 is not refused here")
    assert result.returncode == 1
    assert ("127.0.0.1:80: permission denied (ports below 1024 need root or "
            "CAP_NET_BIND_SERVICE)") in result.stderr


def test_an_unresolvable_host_is_named():
    result = subprocess.run([*PYTHON, "echo", "--host", "no-such-host.invalid"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    assert result.returncode == 1
    assert "no-such-host.invalid: cannot resolve the host name" in result.stderr


# -- IPv6 ---------------------------------------------------------------------------

def _connects(family: int, host: str, port: int) -> bool:
    try:
        with socket.socket(family) as sock:
            sock.settimeout(5)
            sock.connect((host, port))
            sock.sendall(b"?")
            return sock.recv(1) == b"?"
    except ConnectionRefusedError:
        return False


def test_the_ipv6_wildcard_takes_ipv4_too_and_other_ipv6_addresses_do_not():
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    dual = tcp_server("::", 0)
    assert dual.dualstack and interfaces(dual) == "every interface, IPv4 and IPv6"
    v6 = tcp_server("::1", 0)
    assert not v6.dualstack
    for endpoint in (dual, v6):
        endpoint.protocol = protocol_ref("tests._protocols:Echo")
    with Runtime([dual, v6], workers=2, parallel="threads", io="epoll"):
        assert _connects(socket.AF_INET6, "::1", dual.port)
        assert _connects(socket.AF_INET, "127.0.0.1", dual.port)
        assert _connects(socket.AF_INET6, "::1", v6.port)
        assert not _connects(socket.AF_INET, "127.0.0.1", v6.port)


# -- unix sockets -----------------------------------------------------------------

def _ask(path: str) -> bytes:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(path)
        sock.sendall(b"?")
        return recv_until(sock)


def test_a_unix_socket_is_served_by_every_worker(combo, tmp_path):
    """One socket, accepted on by each worker in turns: with clients at
    once and a worker busy with each message, both workers serve."""
    host, engine = combo
    path = str(tmp_path / "app.sock")
    endpoint = parallio.server(path=path, mode=0o660)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o660 and interfaces(endpoint) == "unix socket"
    endpoint.protocol = protocol_ref("tests._ops_apps:WhoSlow")
    counts: collections.Counter[bytes] = collections.Counter()
    with Runtime([endpoint], workers=2, parallel=host, io=engine):
        def client() -> None:
            for _ in range(15):
                counts[_ask(path)] += 1

        clients = [threading.Thread(target=client) for _ in range(6)]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join()
    assert sum(counts.values()) == 90
    assert set(counts) == {b"1\n", b"2\n"}, counts
    assert not os.path.exists(path)


def test_a_stale_unix_socket_file_is_replaced_and_a_live_one_refused(tmp_path):
    path = str(tmp_path / "app.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()  # the file stays, nobody accepts: a server that died
    endpoint = parallio.server(path=path)
    try:
        with pytest.raises(ListenError, match=f"unix:{path}: address already in use"):
            parallio.server(path=path)
    finally:
        parallio._listen.release(endpoint)
    assert not os.path.exists(path)
    (tmp_path / "file").write_text("not a socket")
    with pytest.raises(ListenError, match="exists and is not a socket"):
        parallio.server(path=str(tmp_path / "file"))


def test_bind_unix_from_the_command_line_with_curl(tmp_path):
    path = str(tmp_path / "web.sock")
    process, _port, lines = start_server_process(
        [*PYTHON, "tefb", "--bind", f"unix:{path}", "--uds-mode", "600", "--workers", "2",
         "--db", f"sqlite:///{tmp_path}/tefb.sqlite"])
    try:
        assert any(f"serving <parallio server unix:{path}> (unix socket)" in line
                   for line in lines)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        result = subprocess.run(["curl", "-s", "--unix-socket", path, "http://localhost/plaintext"],
                                capture_output=True, timeout=30)
        assert result.stdout == b"Hello, World!"
    finally:
        code, err = stop(process, signal.SIGINT)
    assert code == 0, err
    assert not os.path.exists(path)


@pytest.mark.parametrize("command, body", [
    (["wsgi", "tests._ops_apps:wsgi_app"], b"wsgi GET "),
    (["asgi", "tests._ops_apps:asgi_app"], b"asgi says hi"),
])
def test_wsgi_and_asgi_on_a_unix_socket(tmp_path, command, body):
    path = str(tmp_path / "app.sock")
    marker = "serving on http+unix://" if command[0] == "asgi" else "serving <parallio server"
    process = subprocess.Popen([*PYTHON, *command, "--bind", f"unix:{path}", "--workers", "2"],
                               cwd=ROOT, stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, PYTHONPATH=ROOT))
    try:
        for line in process.stderr:
            if marker in line:
                break
        else:
            raise AssertionError("the server did not start")
        for _ in range(3):
            result = subprocess.run(["curl", "-s", "--unix-socket", path, "http://localhost/"],
                                    capture_output=True, timeout=30)
            assert result.stdout == body
    finally:
        code, err = stop(process, signal.SIGINT)
    assert code == 0, err
    assert not os.path.exists(path)


# -- inherited descriptors ---------------------------------------------------------

def _who_answers(port: int, count: int) -> collections.Counter:
    answers: collections.Counter[bytes] = collections.Counter()

    def client() -> None:
        for _ in range(count):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(b"?")
                answers[recv_until(sock).split()[2]] += 1

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


@pytest.mark.parametrize("parallel", ["processes", "threads"])
def test_a_socket_inherited_from_the_parent_as_fd(parallel):
    listener = _listener()
    port = listener.getsockname()[1]
    fd = listener.fileno()
    process, _port, lines = start_server_process(
        [*PYTHON, "serve", "tests._ops_apps:Environment", "--bind", f"fd://{fd}",
         "--workers", "2", "--parallel", parallel], pass_fds=(fd,))
    listener.close()  # the server's copy is the only one left
    try:
        assert any(f"127.0.0.1:{port} (fd://{fd})" in line for line in lines)
        answers = _who_answers(port, 10)
        assert sum(answers.values()) == 40 and set(answers) <= {b"1", b"2"}
    finally:
        code, err = stop(process)
    assert code == 0, err


# A stand-in for systemd: it makes the listening sockets at descriptors 3
# and up, says so in LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES, and becomes the
# server with exec, so that LISTEN_PID is the server's own pid.
LAUNCHER = textwrap.dedent("""
    import os, socket, sys
    names = []
    for index, spec in enumerate(sys.argv[1].split(",")):
        name, kind = spec.split("=")
        if kind == "tcp":
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
        else:
            sock = socket.socket(socket.AF_UNIX)
            sock.bind(kind)
        sock.listen(16)
        print(name, sock.getsockname(), flush=True)
        fd = sock.detach()
        if fd != 3 + index:  # descriptors 3 and up, in order, as systemd passes them
            os.dup2(fd, 3 + index)
            os.close(fd)
        os.set_inheritable(3 + index, True)
        names.append(name)
    os.environ.update(LISTEN_FDS=str(len(names)), LISTEN_PID=str(os.getpid()),
                      LISTEN_FDNAMES=":".join(names))
    os.execv(sys.executable, [sys.executable, "-m", "parallio", *sys.argv[2:]])
""")


def test_systemd_socket_activation_is_picked_up(tmp_path):
    unix_path = str(tmp_path / "activated.sock")
    # Keep descriptors 3 and 4 free for the launcher: subprocess would put
    # its pipes there otherwise.
    process, port, lines = start_server_process(
        [sys.executable, "-c", LAUNCHER, f"web=tcp,admin={unix_path}", "serve",
         "tests._ops_apps:Environment", "--workers", "2", "--parallel", "processes"],
        count=2, stdout=subprocess.DEVNULL)
    try:
        text = "".join(lines)
        assert f"127.0.0.1:{port} (systemd fd 3 'web')" in text, text
        assert f"unix:{unix_path} (systemd fd 4 'admin')" in text, text
        # Not 127.0.0.1:8000 as well: the activated sockets say where.
        assert "8000" not in text
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"?")
            listen_fds, listen_pid, _worker, comm = recv_until(sock).split(maxsplit=3)
        # Consumed: the workers (processes of their own) do not see them.
        assert (listen_fds, listen_pid) == (b"None", b"None")
        assert comm.startswith(b"parallio: w")
        assert _ask(unix_path).split()[:2] == [b"None", b"None"]
    finally:
        code, err = stop(process)
    assert code == 0, err


def _curl_unix(path: str, target: str, count: int) -> set[str]:
    """The answers to ``count`` curl requests over the unix socket, each on
    a connection of its own; every one must succeed."""
    answers = set()
    for _ in range(count):
        result = subprocess.run(["curl", "-sf", "--unix-socket", path, f"http://localhost{target}"],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, (result.returncode, os.path.exists(path))
        answers.add(result.stdout)
    return answers


def test_a_reload_and_an_added_worker_serve_the_same_unix_socket(tmp_path, monkeypatch):
    """SIGHUP's fresh workers and SIGTTIN's extra one accept on the one
    shared socket, as the first workers did; it is gone after the stop."""
    version = tmp_path / "version"
    version.write_text("1")
    monkeypatch.setenv("PARALLIO_TEST_VERSION_FILE", str(version))
    path = str(tmp_path / "reload.sock")
    process, _port, _lines = start_server_process(
        [*PYTHON, "serve", "tests._supervision_apps:Version", "--bind", f"unix:{path}",
         "--parallel", "processes", "--workers", "2", "--io", "epoll"])

    def wait_for(condition, what: str) -> None:
        deadline = time.monotonic() + 30
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.2)

    try:
        assert {answer.split()[1] for answer in _curl_unix(path, "/version", 6)} == {"1"}
        version.write_text("2")
        process.send_signal(signal.SIGHUP)
        wait_for(lambda: {a.split()[1] for a in _curl_unix(path, "/version", 6)} == {"2"},
                 "workers of the new version")
        process.send_signal(signal.SIGTTIN)
        wait_for(lambda: "3" in {a.split()[0] for a in _curl_unix(path, "/version", 12)},
                 "a third worker")
    finally:
        code, err = stop(process)
    assert code == 0, err
    assert "reloading" in err and not os.path.exists(path)
