"""Prints the commands of the README's Quickstart block, one per line (used by .ci/run).

The block is the first ```bash fence after the "## Quickstart" heading: its first line installs,
its last line runs the tests.
"""

import pathlib
import re
import sys

readme = pathlib.Path(__file__).resolve().parent.parent / "README.md"
text = readme.read_text(encoding="utf-8")
match = re.search(r"^## Quickstart\s*$.*?^```bash\n(.*?)^```", text, flags=re.M | re.S)
if match is None:
    sys.exit(f"{readme}: no ```bash block under '## Quickstart'")
lines = [line.strip() for line in match.group(1).splitlines() if line.strip() and not line.lstrip().startswith("#")]
if len(lines) < 2:
    sys.exit(f"{readme}: the Quickstart block needs an install line and a test line, got {lines}")
print("\n".join(lines))
