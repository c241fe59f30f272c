"""Headless Chromium for the viewer's tests and benchmarks (Debian's ``chromium``, driven by
Playwright; nothing is downloaded): software WebGL through SwiftShader."""

from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]


# Runs in the page before its own scripts: on every animation frame, reads the middle row of the
# WebGL canvas three.js draws into (after it has created its context) and records, on the page's
# clock (milliseconds since navigation started), when a twentieth of that row is not background.
AVATAR_SHOWN_JS = """
window.__avatarShownAt = null;
(function check() {
  const canvas = document.querySelector('canvas[data-engine]');
  const gl = canvas && (canvas.getContext('webgl2') || canvas.getContext('webgl'));
  if (gl) {
    const w = gl.drawingBufferWidth, h = gl.drawingBufferHeight, px = new Uint8Array(4 * w);
    gl.readPixels(0, Math.floor(h / 2), w, 1, gl.RGBA, gl.UNSIGNED_BYTE, px);
    let shown = 0;
    for (let i = 0; i < px.length; i += 4) if (px[i + 3] > 0 && px[i] + px[i + 1] + px[i + 2] < 600) shown++;
    if (shown > 0.05 * w) { window.__avatarShownAt = performance.now(); return; }
  }
  requestAnimationFrame(check);
})();
"""


def avatar_shown_seconds(page, timeout: float = 60.0) -> float:
    """Seconds from the page's navigation start to the first frame that shows the avatar (the page
    must have been given :data:`AVATAR_SHOWN_JS` with ``add_init_script`` before ``goto``)."""
    page.wait_for_function("window.__avatarShownAt !== null", timeout=timeout * 1000, polling=50)
    return float(page.evaluate("window.__avatarShownAt")) / 1000.0


def chromium_path() -> str | None:
    """The Chromium executable, or None when none is installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def missing_reason() -> str | None:
    """Why the browser tests cannot run here (None: they can)."""
    if chromium_path() is None:
        return "no chromium installed (apt-get install -y chromium; .ci/run does)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install playwright)"
    return None


@contextmanager
def browser_page(width: int = 900, height: int = 600):
    """A Playwright page in a fresh headless Chromium profile (the profile is removed afterwards)."""
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="avatar-chromium-")
    try:
        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                profile, executable_path=chromium_path(), headless=True, args=CHROMIUM_FLAGS,
                viewport={"width": width, "height": height})
            try:
                yield context.pages[0] if context.pages else context.new_page()
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
