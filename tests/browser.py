"""Lay an e-mail's HTML out in headless Chromium at a given width and report what breaks.

Chromium's new headless mode will not make a window narrower than 500 px, so the page
is put in an iframe of the width wanted; a script inside it measures each run of text
line by line (``Range.getClientRects``) and writes what it found into the outer page,
which ``--dump-dom`` prints. Broken, as a reader on a phone sees it: text wider than the
screen (a sideways scroll), or text squeezed to fewer than four characters a line (a
table column one character wide).
"""

from __future__ import annotations

import html
import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

MEASURE = """
<script>
(function () {
  var width = window.innerWidth, problems = [];
  var walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  var range = document.createRange();
  for (var node = walker.nextNode(); node; node = walker.nextNode()) {
    var text = node.textContent.replace(/\\s+/g, "");
    if (text.length < 6 || node.parentElement.closest("script,style,title")) continue;
    range.selectNodeContents(node);
    var rects = range.getClientRects(), tops = {}, lines = 0, right = 0;
    for (var i = 0; i < rects.length; i++) {
      var top = Math.round(rects[i].top);
      if (!tops[top]) { tops[top] = true; lines++; }
      right = Math.max(right, rects[i].right);
    }
    if (lines > 1 && text.length / lines < 4) {
      problems.push("squeezed: " + text.slice(0, 24) + " (" + (text.length / lines).toFixed(1) + " a line)");
    }
    if (right > width + 1) problems.push("wider than the screen: " + text.slice(0, 24));
  }
  var scroll = document.documentElement.scrollWidth;
  parent.document.body.setAttribute("data-layout",
    JSON.stringify({width: width, scroll: scroll, problems: problems}));
})();
</script>
"""


@dataclass(frozen=True)
class Layout:
    width: int  # the viewport's, as the page saw it
    scroll: int  # the page's full width: more than ``width`` means a sideways scroll
    problems: list[str]


def _chinese_font() -> bool:
    found = subprocess.run(["fc-list", ":lang=zh"], capture_output=True, text=True, check=False)
    return bool(found.stdout.strip())


def lay_out(page: str, width: int) -> Layout:
    """``page`` (an HTML document) as Chromium lays it out ``width`` pixels wide."""
    if CHROMIUM is None:
        raise RuntimeError("Chromium is needed: apt-get install chromium (make test does)")
    if not _chinese_font():  # without one, Chinese is laid out as narrow empty boxes
        raise RuntimeError("a Chinese font is needed: apt-get install fonts-wqy-microhei")
    measured = page.replace("</body>", MEASURE + "</body>")
    outer = (
        '<!DOCTYPE html><html><body style="margin:0">'
        f'<iframe style="width:{width}px;height:4000px;border:0" '
        f'srcdoc="{html.escape(measured, quote=True)}"></iframe></body></html>'
    )
    with tempfile.TemporaryDirectory(prefix="reminder-browser-") as folder:
        path = Path(folder) / "page.html"
        path.write_text(outer, encoding="utf-8")
        result = subprocess.run(
            [
                CHROMIUM,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                f"--user-data-dir={folder}/profile",
                "--window-size=1000,4000",
                "--dump-dom",
                path.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    marker = 'data-layout="'
    start = result.stdout.find(marker)
    if start < 0:
        raise RuntimeError(f"Chromium laid nothing out: {result.stderr.strip()[-300:]}")
    end = result.stdout.index('"', start + len(marker))
    found = json.loads(html.unescape(result.stdout[start + len(marker) : end]))
    return Layout(int(found["width"]), int(found["scroll"]), list(found["problems"]))
