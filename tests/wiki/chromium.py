"""Headless Chromium driven over the DevTools protocol, for the wiki's
browser test: start it, open a page, type, click, read the DOM, take a
screenshot. Real input events (key and mouse), as a user makes them."""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Optional

from websockets.sync.client import connect

NAMES = ("chromium", "chromium-browser")


def find_chromium() -> Optional[str]:
    for name in NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


class DevToolsError(RuntimeError):
    pass


class Browser:
    """One headless Chromium with one page, attached over one WebSocket."""

    def __init__(self, binary: str, profile: Path, width: int = 1100, height: int = 720,
                 timeout: float = 30.0) -> None:
        self.timeout = timeout
        self._ids = itertools.count(1)
        self._closing = contextlib.ExitStack()
        self._log = open(profile.parent / "chromium.log", "wb")
        argv = [binary, "--headless", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--no-default-browser-check", "--hide-scrollbars",
                f"--user-data-dir={profile}", "--remote-debugging-port=0",
                f"--window-size={width},{height}", "about:blank"]
        if os.geteuid() == 0:
            argv.insert(1, "--no-sandbox")  # the sandbox refuses to run as root
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                        stderr=subprocess.STDOUT)
        try:
            # Chromium writes its port and browser path here once it listens.
            port_file = profile / "DevToolsActivePort"
            self._wait(lambda: port_file.is_file() and len(port_file.read_text().split()) == 2,
                       "Chromium to listen for DevTools")
            port, path = port_file.read_text().split()
            self.socket = self._closing.enter_context(connect(
                f"ws://127.0.0.1:{port}{path}", max_size=None, open_timeout=timeout))
            target = self.call("Target.createTarget", url="about:blank")["targetId"]
            self.session = self.call("Target.attachToTarget", targetId=target,
                                     flatten=True)["sessionId"]
            self.page("Page.enable")
            self.page("Emulation.setDeviceMetricsOverride", width=width, height=height,
                      deviceScaleFactor=1, mobile=False)
        except BaseException:
            self.close()
            raise

    def _wait(self, ready: Callable[[], Any], what: str) -> Any:
        deadline = time.monotonic() + self.timeout
        while True:
            if self.process.poll() is not None:
                raise DevToolsError(f"Chromium exited ({self.process.returncode}) waiting for "
                                    f"{what}; see {self._log.name}")
            value = ready()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {self.timeout:.0f} s for {what}")
            time.sleep(0.05)

    def call(self, method: str, session: Optional[str] = None, **params: Any) -> dict:
        """Send one command and return its result (events are skipped)."""
        message_id = next(self._ids)
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        self.socket.send(json.dumps(message))
        deadline = time.monotonic() + self.timeout
        while True:
            reply = json.loads(self.socket.recv(timeout=max(0.0, deadline - time.monotonic())))
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise DevToolsError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def page(self, method: str, **params: Any) -> dict:
        return self.call(method, self.session, **params)

    def evaluate(self, expression: str) -> Any:
        result = self.page("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise DevToolsError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, what: str) -> Any:
        """Wait until ``expression`` evaluates to something true; return it."""
        return self._wait(lambda: self.evaluate(expression), what)

    def open(self, url: str) -> None:
        self.page("Page.navigate", url=url)
        self.wait_for(f"location.href === {json.dumps(url)} && "
                      "document.readyState === 'complete'", f"{url} to load")

    def type(self, text: str) -> None:
        """Key presses into the focused element, one character each."""
        for character in text:
            self.page("Input.dispatchKeyEvent", type="keyDown", key=character, text=character,
                      unmodifiedText=character)
            self.page("Input.dispatchKeyEvent", type="keyUp", key=character)

    #: Keys press() knows: their DOM key code.
    KEY_CODES = {"ArrowDown": 40, "ArrowUp": 38, "Enter": 13}

    def press(self, key: str) -> None:
        """One press of a named key (ArrowDown, ArrowUp, Enter)."""
        code = self.KEY_CODES[key]
        self.page("Input.dispatchKeyEvent", type="rawKeyDown", key=key, code=key,
                  windowsVirtualKeyCode=code, nativeVirtualKeyCode=code)
        self.page("Input.dispatchKeyEvent", type="keyUp", key=key, code=key,
                  windowsVirtualKeyCode=code, nativeVirtualKeyCode=code)

    def click(self, selector: str) -> None:
        """A left click in the middle of the element ``selector`` finds."""
        box = self.wait_for(
            "(() => { const e = document.querySelector(" + json.dumps(selector) + ");"
            " if (!e) return null; e.scrollIntoView({block: 'center'});"
            " const r = e.getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2]; })()", f"{selector} to show")
        x, y = box
        self.page("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        for kind in ("mousePressed", "mouseReleased"):
            self.page("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left",
                      clickCount=1)

    def screenshot(self) -> bytes:
        return base64.b64decode(self.page("Page.captureScreenshot", format="png")["data"])

    def close(self) -> None:
        self._closing.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
