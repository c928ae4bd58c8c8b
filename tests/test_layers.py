"""The architecture, checked: imports point down the layers, none form a
cycle, and a worker serving a plain protocol never loads HTTP.

Every ``import`` and ``from ... import`` statement in ``parallio/`` counts,
including those inside functions and ``if TYPE_CHECKING:`` blocks: a lazy or
type-only import is still a dependency. Importing a submodule is not taken
as depending on its package's ``__init__`` (Python runs it first, but that
is the package's business, not the importer's).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import HOSTS, host_skip_reason

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "parallio"

#: Layers, lowest first: a module may import its own layer and those below.
#: A module not named here fails the test until it is given a place.
LAYERS: list[tuple[str, ...]] = [
    ("parallio._context", "parallio._control", "parallio._sockets", "parallio._httpdate",
     "parallio._ref", "parallio._spec", "parallio._memory", "parallio._listen",
     "parallio._logging", "parallio._proctitle", "parallio._errors", "parallio._version"),
    ("parallio.engine",),
    ("parallio.protocol", "parallio.stream", "parallio.tls", "parallio.trust",
     "parallio.proxy_protocol"),
    ("parallio.transport", "parallio.edge", "parallio.threadpool", "parallio.loop.events",
     "parallio.loop.transports"),
    ("parallio.worker", "parallio.supervision"),
    ("parallio.host",),
    ("parallio.runtime",),
    ("parallio.services", "parallio.http", "parallio.loop"),
    ("parallio.asgi",),
    # The composition root, and what is built on the public API like a
    # user's own code: the command line, the benchmarks, the wiki app.
    ("parallio", "parallio.cli", "parallio.__main__", "parallio.bench", "parallio.wiki"),
]
#: Modules allowed to import parallio.http: HTTP itself and what sits above it.
HTTP_USERS = ("parallio.http", "parallio.asgi", "parallio.wiki", "parallio", "parallio.cli",
              "parallio.bench")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The parallio modules ``name`` imports."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            # "from X import y" names X.y when y is a module, else X itself.
            targets = [f"{prefix}.{alias.name}" if f"{prefix}.{alias.name}" in known else prefix
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target.startswith("parallio") and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports_of(name, path, known) for name, path in found.items()}


def layer_of(name: str) -> int:
    best = None
    for index, layer in enumerate(LAYERS):
        for prefix in layer:
            if name == prefix or name.startswith(prefix + ".") and prefix != "parallio":
                if best is None or len(prefix) > best[1]:
                    best = (index, len(prefix))
    assert best is not None, f"{name} has no place in LAYERS: add it where it belongs"
    return best[0]


def test_every_module_has_a_layer() -> None:
    for name in modules():
        layer_of(name)


def test_imports_point_down() -> None:
    wrong = [f"{name} (layer {layer_of(name)}) imports {target} (layer {layer_of(target)})"
             for name, targets in graph().items() for target in sorted(targets)
             if layer_of(target) > layer_of(name)]
    assert wrong == []


def test_no_import_cycles() -> None:
    edges = graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(edges[node]):
            if state.get(target) == 1:
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert cycles == [], "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_only_http_and_above_import_http() -> None:
    wrong = [f"{name} imports {target}" for name, targets in graph().items()
             for target in sorted(targets) if target.startswith("parallio.http")
             and not any(name == user or name.startswith(user + ".") and user != "parallio"
                         for user in HTTP_USERS)]
    assert wrong == []


def test_cycle_finder_finds_a_cycle(tmp_path: Path) -> None:
    """The walker above is no test that cannot fail: fed two modules that
    import each other, it reports both edges."""
    first, second = tmp_path / "a.py", tmp_path / "b.py"
    first.write_text("from parallio.b import x\n")
    second.write_text("def f():\n    import parallio.a\n")
    known = {"parallio.a", "parallio.b"}
    assert imports_of("parallio.a", first, known) == {"parallio.b"}
    assert imports_of("parallio.b", second, known) == {"parallio.a"}


# -- what actually gets loaded ----------------------------------------------------------------

def test_import_parallio_loads_no_http() -> None:
    code = ("import sys, parallio; "
            "print([m for m in sys.modules if m.startswith('parallio.http')])")
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", code], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"
    assert "parallio.http" not in result.stderr   # the import-time report


_SERVE_ECHO = """
import json, socket, sys
import parallio
from parallio.runtime import Runtime, make_server
endpoint = make_server("127.0.0.1", 0)
endpoint.protocol = parallio.protocol_ref("tests._protocols:LoadedModules")
runtime = Runtime([endpoint], workers=1, parallel=sys.argv[1], io="auto").start()
try:
    with socket.create_connection(("127.0.0.1", endpoint.port), timeout=10) as sock:
        sock.sendall(b"which?")
        data = b""
        while not data.endswith(b"\\n"):
            data += sock.recv(65536)
finally:
    runtime.stop()
print(json.dumps({"worker": json.loads(data),
                  "main": [m for m in sys.modules if m.startswith("parallio.http")]}))
"""


@pytest.mark.parametrize("host", HOSTS)
def test_a_worker_serving_a_plain_protocol_loads_no_http(host: str) -> None:
    reason = host_skip_reason(host)
    if reason:
        pytest.skip(reason)
    # A fresh interpreter: in the threads host the worker shares this one's
    # modules, which other tests filled.
    result = subprocess.run([sys.executable, "-c", _SERVE_ECHO, host], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded == {"worker": [], "main": []}
