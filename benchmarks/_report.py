"""Write one benchmark's results into its own section of benchmarks/BENCHMARKS.md."""

from __future__ import annotations

import datetime
import os
import platform
import re
from pathlib import Path

REPORT = Path(__file__).with_name("BENCHMARKS.md")
HEADER = (
    "# Winnow benchmarks\n\n"
    "Each section is written by the script it names; rerun that script to refresh it.\n"
    "Speed is reported as ratios against a reference measured in the same run.\n"
)


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def write_section(name: str, body: str) -> None:
    """Replace (or append) the section between this benchmark's markers."""
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    stamp = datetime.date.today().isoformat()
    block = f"{begin}\n{body.rstrip()}\n\n_Measured {stamp} on {machine()}._\n{end}"
    text = REPORT.read_text() if REPORT.exists() else HEADER
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _m: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    REPORT.write_text(text)
