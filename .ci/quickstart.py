"""Prints the commands of the README's Quickstart block, one per line (used by .ci/run).

The block is the first ```bash fence after the "## Quickstart" heading: exactly three commands, the
install line, the main job (``jaxspeech train`` on the embedded corpus) and the test command. CI runs
the first and the last in a fresh virtual environment; the main job (about 27 minutes) is covered
there by its debug variant, which the tests train, evaluate and report.
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
if (len(lines) != 3 or not lines[0].startswith("pip install") or not lines[1].startswith("jaxspeech train")
        or "pytest" not in lines[2]):
    sys.exit(f"{readme}: the Quickstart block must hold exactly the install line, the main job "
             f"(jaxspeech train) and the test command, got {lines}")
print("\n".join(lines))
