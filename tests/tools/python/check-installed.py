"""Exits 0 only when the interpreter running it has exactly the versions
requirements.txt beside it pins, so scripts/test installs only when needed.
Prints the first mismatch on stderr."""
import pathlib
import sys
from importlib import metadata

for line in (pathlib.Path(__file__).parent / "requirements.txt").read_text().splitlines():
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    name, pinned = line.split("==")
    try:
        installed = metadata.version(name)
    except metadata.PackageNotFoundError:
        sys.exit(f"check-installed: {name} is missing")
    if installed != pinned:
        sys.exit(f"check-installed: {name} is {installed}, requirements.txt pins {pinned}")
