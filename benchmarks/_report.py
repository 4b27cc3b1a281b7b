"""Write one benchmark's results into its own section of docs/performance.md."""

from __future__ import annotations

import datetime
import platform
import re
from pathlib import Path

HEADER = "# Performance\n\nMeasured by the scripts in `benchmarks/`; each section says how to rerun it.\n"


def replace_section(path: Path, title: str, body: str, *, command: str) -> None:
    """Replace (or append) the ``## <title>`` section of a Markdown file, keeping the others."""
    text = path.read_text() if path.exists() else HEADER
    stamp = (
        f"_Run on {datetime.date.today().isoformat()}, Python {platform.python_version()}, "
        f"{platform.machine()}; rerun with `{command}`._"
    )
    section = f"## {title}\n\n{stamp}\n\n{body.rstrip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _m: section + "\n", text)
    else:
        text = text.rstrip() + "\n\n" + section
    path.write_text(text.rstrip() + "\n")
