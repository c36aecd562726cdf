"""The labelling page in a real headless Chromium, driven over the DevTools protocol: an annotator labels
with the keyboard, reloads, the server is killed (-9) and restarted, labelling resumes, and the
database holds every label once. With ALIGNKIT_SCREENSHOTS=DIR it also saves the README's screenshots."""

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from test_label import tokens_from, write_rows
from test_sweep_report import find_browser

websockets = pytest.importorskip("websockets.sync.client", reason="pip install websockets (the test extra)")


class Page:
    """Just enough of the DevTools protocol: navigate, evaluate, press keys, screenshot."""

    def __init__(self, browser: str, tmp: Path):
        self.proc = subprocess.Popen(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--remote-debugging-port=0",
                f"--user-data-dir={tmp}",
                "--window-size=1280,860",
                "about:blank",
            ],
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )  # its own process group: close() ends every helper process
        port = None
        for line in self.proc.stderr:
            if found := re.search(r"ws://127\.0\.0\.1:(\d+)/", line):
                port = int(found.group(1))
                break
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list").read())
        self.ws = websockets.connect(
            next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"], max_size=2**26
        )
        self.next_id = 0

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=30))
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(message["error"])
                return message["result"]

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20.0):
        end = time.time() + timeout
        while time.time() < end:
            if value := self.evaluate(expression):
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {expression}: {self.evaluate('document.body.innerText')[:400]}")

    def press(self, key: str):
        code = {"Backspace": 8, " ": 32}[key] if key in ("Backspace", " ") else ord(key.upper())
        text = "" if key == "Backspace" else key
        self.call("Input.dispatchKeyEvent", type="keyDown", key=key, text=text, windowsVirtualKeyCode=code)
        self.call("Input.dispatchKeyEvent", type="keyUp", key=key, windowsVirtualKeyCode=code)

    def screenshot(self, path: Path):
        import base64

        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))

    def close(self):
        self.ws.close()
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(root: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "alignkit", "label", str(root), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    end = time.time() + 30
    while time.time() < end:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"the label server did not start: {proc.stdout.read()}")


def test_label_with_the_keyboard_through_reload_and_a_killed_server(tmp_path, capsys):
    from alignkit.cli import main

    browser = find_browser()
    root = tmp_path / "proj"
    rubric = tmp_path / "rubric.md"
    rubric.write_text(
        "Prefer the **correct** answer, then the *shorter* one.\n\n- wrong "
        "arithmetic loses\n- say tie when both are equally good"
    )
    assert (
        main(
            [
                "label",
                "init",
                str(root),
                "--rows",
                str(write_rows(tmp_path / "pairs.jsonl", n=6)),
                "--overlap",
                "2",
                "--rubric",
                str(rubric),
                "--name",
                "arithmetic audit",
            ]
        )
        == 0
    )
    admin = tokens_from(capsys)[0]
    assert main(["label", "add-annotator", str(root), "alice"]) == 0
    alice = tokens_from(capsys)[0]
    port = free_port()
    server = start_server(root, port)
    page = Page(browser, tmp_path / "chrome")
    shots = Path(os.environ["ALIGNKIT_SCREENSHOTS"]) if os.environ.get("ALIGNKIT_SCREENSHOTS") else None
    count = "document.getElementById('count').textContent"
    try:
        page.call("Page.navigate", url=f"http://127.0.0.1:{port}/?token={alice}")
        page.wait_for(f"{count} === '0 / 6'")
        assert "correct" in page.evaluate("document.getElementById('rubric').innerHTML")  # the rubric, rendered
        if shots:
            page.screenshot(shots / "label_page.png")
        for key, done in (("1", 1), ("2", 2), ("t", 3)):
            page.press(key)
            page.wait_for(f"{count} === '{done} / 6'")
        page.call("Page.reload")
        page.wait_for(f"{count} === '3 / 6'")  # resumes where the annotator left off
        server.send_signal(signal.SIGKILL)
        server.wait()
        server = start_server(root, port)
        page.call("Page.reload")
        page.wait_for(f"{count} === '3 / 6'")
        page.press("1")
        page.wait_for(f"{count} === '4 / 6'")
        page.press("Backspace")  # undo takes the last label back
        page.wait_for(f"{count} === '3 / 6'")
        for done in (4, 5, 6):
            page.press("2")
            page.wait_for(f"{count} === '{done} / 6'")
        page.wait_for("document.getElementById('done').style.display === 'block'")
        labels = (
            sqlite3.connect(root / "labels.sqlite")
            .execute("SELECT annotator, item_id, choice FROM labels ORDER BY item_id")
            .fetchall()
        )
        assert [(a, i) for a, i, _ in labels] == [
            ("alice", str(n)) for n in range(1, 7)
        ]  # every item once, nothing lost or doubled
        assert {c for _, _, c in labels} <= {"a", "b", "tie"} and any(c == "tie" for _, _, c in labels)
        page.call("Page.navigate", url=f"http://127.0.0.1:{port}/stats?token={admin}")
        page.wait_for("document.body.innerText.includes('labels by alice')")
        assert "6 on 6 of 6 items" in page.evaluate("document.body.innerText")
        if shots:
            page.screenshot(shots / "label_stats.png")
    finally:
        page.close()
        server.kill()
