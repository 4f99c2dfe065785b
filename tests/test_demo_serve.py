"""`prbot demo --serve`: the real App (web app and worker) on 127.0.0.1 against the stand-ins, the
story played through its webhooks, watched on the environments page until the promotion shows."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from service_support import free_port, http

ROOT = Path(__file__).resolve().parent.parent


def test_demo_serve_shows_the_promotion_on_the_page_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from prbot.cli import main; sys.exit(main())",
                             "demo", "--serve", "--port", str(port)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        url = None
        while url is None:
            line = proc.stdout.readline()
            assert line, "prbot demo --serve ended before printing the page's address:\n" + "".join(lines)
            lines.append(line)
            found = re.search(r"The environments page: (http://127\.0\.0\.1:\d+/status/acme/gitops\?token=\S+)", line)
            url = found.group(1) if found else None
        assert url.startswith(f"http://127.0.0.1:{port}/")
        page, token = url.split("?token=")
        auth = {"Authorization": f"Bearer {token}"}
        seen: set[str] = set()
        deadline = time.monotonic() + 600
        html = ""
        while time.monotonic() < deadline:
            status, body = http("GET", page, headers=auth)
            assert status == 200
            html = body.decode()
            if 'id="building"' in html:
                seen.add("building")
            if 'id="deploying"' in html:
                seen.add("deploying")
            if 'data-kind="bump"' in html:
                seen.add("bump")
            if 'data-kind="promote"' in html and "state-healthy" in html:
                break
            time.sleep(0.3)
        else:
            raise AssertionError("the promotion never showed on the page:\n" + html[-3000:])
        assert "Promote shop from dev to staging (1.2.0)" in html
        dev = re.search(r'<tr data-env-row="dev">(.*?)</tr>', html, re.S)
        assert dev is not None and "healthy" in dev.group(1) and "PR #1" in dev.group(1)
        assert "building" in seen                       # the worker builds the board the page shows
        status, _ = http("GET", page)                   # without the token: no access
        assert status == 401
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        lines.append(out or "")
    text = "".join(lines)
    assert proc.returncode == 0, text
    assert "4. dev became healthy: the worker opened the promotion PR #2" in text and text.rstrip().endswith("Stopped.")
