"""Make docs/report-sine.png: run the sine demo, write its report, screenshot it in Chromium.

    .venv/bin/python docs/report_screenshot.py            # about 40 seconds
    .venv/bin/python docs/report_screenshot.py --run-dir runs/sine --no-run   # an existing run

Needs torch (the demo's trainer) and Debian's `chromium`.
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from simai.observe import _report_browser as browser
from simai.observe.report import write_report

ROOT = Path(__file__).resolve().parents[1]
MEASURE = (
    "<script>document.body.setAttribute('data-height', "
    "document.documentElement.scrollHeight)</script>"
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default=None, help="the sine run (default: a new temp one)")
    parser.add_argument("--no-run", action="store_true", help="report an existing run")
    parser.add_argument(
        "--demo-args",
        default="--target 1e-5 --budget 30",
        help="options for examples/sine/sine.py (default: train for its whole 30 s budget)",
    )
    parser.add_argument("--out", default=str(ROOT / "docs" / "report-sine.png"))
    parser.add_argument(
        "--size", default="1280x0", help="screenshot WIDTHxHEIGHT (height 0: the whole page)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="simai-docs-") as tmp:
        run = Path(args.run_dir) if args.run_dir else Path(tmp) / "sine"
        if not args.no_run:
            demo = [sys.executable, str(ROOT / "examples" / "sine" / "sine.py")]
            options = [*shlex.split(args.demo_args), "--run-dir", str(run)]
            subprocess.run([*demo, *options], check=True, cwd=tmp)
        page = write_report(run, Path(tmp) / "report.html")
        width, height = (int(x) for x in args.size.split("x"))
        if not height:  # the whole page: measure it at this width first
            probe = Path(tmp) / "probe.html"
            probe.write_text(page.read_text().replace("</body>", MEASURE + "</body>"))
            dom = browser.open_page(probe, size=(width, 1000)).dom
            height = int(re.search(r'data-height="(\d+)"', dom).group(1))
        opened = browser.open_page(page, screenshot=args.out, size=(width, height))
        if opened.errors:
            raise SystemExit(f"the report logged JavaScript errors: {opened.errors}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
