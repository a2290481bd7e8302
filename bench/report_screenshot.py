"""Render an `evolve report` in headless Chromium and check that the plots are really there.

    python bench/report_screenshot.py RUN_DIR        # writes RUN_DIR/report.html first
    python bench/report_screenshot.py report.html    # an existing report

Checks, each printed: every <img> in the HTML is an embedded PNG that decodes; the page
loads nothing from outside (no http(s) src/href); Chromium renders it to
bench/results/report.png; and the screenshot is not blank (enough distinct colours and
non-white pixels). Exit status 1 when a check fails. Chromium: `apt-get install -y chromium`.
"""

from __future__ import annotations

import argparse
import base64
import io
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--window-size=1400,4000",
)  # fmt: skip
IMAGE_SOURCE = re.compile(r'<img\b[^>]*\bsrc="([^"]*)"', re.IGNORECASE)
EXTERNAL = re.compile(r'\b(?:src|href)\s*=\s*"(?:https?:)?//', re.IGNORECASE)


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


def decode_png(source: str):
    """The image as an array, or raises ValueError: only embedded PNGs are acceptable."""
    import matplotlib.image as mpimg

    prefix = "data:image/png;base64,"
    if not source.startswith(prefix):
        raise ValueError(f"not an embedded PNG: {source[:60]}")
    return mpimg.imread(io.BytesIO(base64.b64decode(source[len(prefix):], validate=True)), format="png")


def check_images(text: str) -> list[str]:
    problems = []
    sources = IMAGE_SOURCE.findall(text)
    for index, source in enumerate(sources):
        try:
            image = decode_png(source)
            print(f"  image {index + 1}: {image.shape[1]}x{image.shape[0]} px")
        except (ValueError, OSError, SyntaxError) as exc:
            problems.append(f"image {index + 1} does not decode: {exc}")
    print(f"{len(sources)} embedded images")
    if not sources:
        problems.append("no images in the report")
    if EXTERNAL.search(text):
        problems.append("the report loads something from outside")
    return problems


def screenshot(html_path: Path, png_path: Path, chromium: str) -> list[str]:
    png_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="evolve-chromium-") as profile:
        command = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={png_path}", html_path.resolve().as_uri()]
        done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)
    if done.returncode != 0 or not png_path.is_file():
        return [f"chromium failed ({done.returncode}): {done.stderr.strip()[-500:]}"]
    return check_not_blank(png_path)


def check_not_blank(png_path: Path) -> list[str]:
    import matplotlib.image as mpimg

    pixels = mpimg.imread(png_path)[:, :, :3]
    non_white = float(np.mean(np.any(pixels < 0.95, axis=2)))
    colours = len(np.unique((pixels.reshape(-1, 3) * 255).astype(np.uint8), axis=0))
    print(f"screenshot {png_path}: {pixels.shape[1]}x{pixels.shape[0]} px, {non_white:.1%} non-white, {colours} colours")
    if non_white < 0.01 or colours < 100:  # a page of text alone has few colours; plots bring hundreds
        return ["the screenshot is (nearly) blank"]
    return []


def report_file(target: Path) -> Path:
    """An existing HTML report, or one written now for a run directory."""
    if target.is_file() and target.suffix == ".html":
        return target
    from evolve.report.html import write_report

    output = target / "report.html"
    write_report(target, output)
    print(f"wrote {output}")
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", help="a run directory or a report .html file")
    parser.add_argument("-o", "--output", default=str(RESULTS / "report.png"), help="where to write the screenshot")
    args = parser.parse_args(argv)
    html_path = report_file(Path(args.target))
    problems = check_images(html_path.read_text(encoding="utf-8"))
    chromium = find_chromium()
    if chromium is None:
        problems.append("chromium not found (apt-get install -y chromium)")
    else:
        problems += screenshot(html_path, Path(args.output), chromium)
    for problem in problems:
        print(f"FAIL: {problem}")
    print("OK" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
