"""Headless Chromium driven over its DevTools protocol (no extra packages): open a page, wait,
take a screenshot. Debian's `chromium` package provides the browser (`.ci/run` installs it)."""

import base64
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request

from websockets.sync.client import connect

# Flags for a sandboxed CI machine with no network beyond loopback and no GPU.
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", "--disable-quic")


def chromium() -> str | None:
    """The Chromium executable, or None when it is not installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Page:
    """One headless Chromium showing `url`; `screenshot()` returns PNG bytes."""

    def __init__(self, url: str, port: int, width: int = 1000, height: int = 700):
        self._profile = tempfile.mkdtemp()
        self._proc = subprocess.Popen(
            [chromium(), *FLAGS, f"--user-data-dir={self._profile}",
             f"--remote-debugging-port={port}", f"--window-size={width},{height}", url],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._ws_url, self._id = None, 0
        for _ in range(150):
            try:
                targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json"))
                pages = [t for t in targets if t.get("type") == "page"]
                if pages:
                    self._ws_url = pages[0]["webSocketDebuggerUrl"]
                    break
            except OSError:
                pass
            time.sleep(0.2)
        if self._ws_url is None:
            self.close()
            raise RuntimeError("headless Chromium did not open its DevTools port")

    def call(self, method: str, **params) -> dict:
        """The result of one DevTools command."""
        self._id += 1
        with connect(self._ws_url, max_size=2**27) as ws:
            ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
            while True:
                message = json.loads(ws.recv())
                if message.get("id") == self._id:
                    return message.get("result", {})

    def screenshot(self) -> bytes:
        """The page as PNG bytes."""
        return base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])

    def close(self) -> None:
        """Stops the browser."""
        self._proc.kill()
        self._proc.wait(timeout=10)
        shutil.rmtree(self._profile, ignore_errors=True)
