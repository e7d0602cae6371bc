"""Drive Debian's headless Chromium from the standard library (no DevTools client needed).

``load_page`` copies a page, adds one inline probe script (allowed by its SHA-256 in the page's
Content-Security-Policy, nothing else is relaxed) that writes every image's ``naturalWidth`` into
the DOM on ``load``, runs ``chromium --headless --dump-dom`` with console logging on stderr, and
returns the image widths and every console message other than the probe's own. ``screenshot``
renders the unmodified page to a PNG.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

PROBE_DONE = "image-probe-done"
PROBE = ("window.addEventListener('load',function(){var p=document.createElement('pre');"
         "p.id='image-probe';p.textContent=JSON.stringify(Array.from(document.images,"
         "function(i){return i.complete?i.naturalWidth:-1}));document.body.appendChild(p);"
         f"console.log('{PROBE_DONE}');}});")
CSP_START = "default-src 'none';"


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _run(args: list[str], timeout: float = 90) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        command = [chromium_path(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                   "--no-first-run", "--disable-background-networking", "--disable-component-update",
                   "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def load_page(page: Path, workdir: Path) -> tuple[list[int], list[str]]:
    """(naturalWidth of each image in document order, console messages) of ``page`` in Chromium."""
    text = Path(page).read_text(encoding="utf-8")
    if CSP_START not in text:
        raise ValueError(f"{page} has no Content-Security-Policy starting with {CSP_START!r}")
    digest = base64.b64encode(hashlib.sha256(PROBE.encode()).digest()).decode()
    text = text.replace(CSP_START, f"{CSP_START} script-src 'sha256-{digest}';", 1)
    text = text.replace("</body>", f"<script>{PROBE}</script></body>", 1)
    probe_page = Path(workdir) / f"probe-{Path(page).name}"
    probe_page.write_text(text, encoding="utf-8")
    result = _run(["--enable-logging=stderr", "--v=0", "--dump-dom", probe_page.as_uri()])
    if result.returncode != 0:
        raise RuntimeError(f"chromium exited with {result.returncode}: {result.stderr[-2000:]}")
    found = re.search(r'<pre id="image-probe">(.*?)</pre>', result.stdout, re.S)
    if found is None:
        raise RuntimeError("the probe did not run (no #image-probe in the dumped DOM)")
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line and PROBE_DONE not in line]
    return json.loads(found.group(1)), console


def screenshot(page: Path, png: Path, width: int = 1280, height: int = 2000) -> Path:
    """Screenshot of the page's top ``width``×``height`` CSS pixels."""
    result = _run([f"--screenshot={png}", f"--window-size={width},{height}", Path(page).resolve().as_uri()])
    if result.returncode != 0 or not Path(png).is_file():
        raise RuntimeError(f"chromium screenshot failed ({result.returncode}): {result.stderr[-2000:]}")
    return Path(png)
