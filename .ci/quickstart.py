"""Prints the commands of the README's Quickstart block, one per line (used by .ci/run).

The block is the first ```bash fence after the "## Quickstart" heading: exactly two commands, the
install line and then the test command (CI runs nothing else, and the README shows nothing else).
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
if len(lines) != 2 or not lines[0].startswith("pip install") or "pytest" not in lines[1]:
    sys.exit(f"{readme}: the Quickstart block must hold exactly the install line and the test command, got {lines}")
print("\n".join(lines))
