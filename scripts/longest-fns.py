#!/usr/bin/env python3
"""The longest functions in src/ (tests left out), by lines from `fn` to its
closing brace. Usage: scripts/longest-fns.py [COUNT] [--over LINES]
(from the repository root). Braces inside strings and comments are skipped
roughly (string literals and // comments); good enough to rank."""

import pathlib
import re
import sys

FN = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?fn\s+(\w+)")
STRINGS = re.compile(r'r#*"[^"]*"#*|"(\\.|[^"\\])*"|\'(\\.|[^\'\\])\'')


def code(line):
    return STRINGS.sub('""', line).split("//")[0]


def functions(path):
    lines = path.read_text().splitlines()
    end = len(lines)
    for i, line in enumerate(lines):
        if line.strip() == "#[cfg(test)]":
            end = i
            break
    module = str(path.relative_to("src")).removesuffix(".rs").removesuffix("/mod")
    for start in range(end):
        match = FN.match(lines[start])
        if not match:
            continue
        depth, opened = 0, False
        for j in range(start, end):
            text = code(lines[j])
            if not opened and ";" in text and "{" not in text:
                break
            depth += text.count("{") - text.count("}")
            opened = opened or "{" in text
            if opened and depth <= 0:
                yield j - start + 1, f"{module.replace('/', '::')}::{match.group(6)}", f"{path}:{start + 1}"
                break


def main():
    args = sys.argv[1:]
    over = None
    if "--over" in args:
        k = args.index("--over")
        over = int(args[k + 1])
        del args[k : k + 2]
    count = int(args[0]) if args else 10
    found = []
    for path in sorted(pathlib.Path("src").rglob("*.rs")):
        if path.name == "tests.rs":
            continue
        found.extend(functions(path))
    found.sort(key=lambda f: (-f[0], f[1]))
    if over is not None:
        found = [f for f in found if f[0] > over]
    else:
        found = found[:count]
    for lines, name, where in found:
        print(f"{lines:5}  {name}  ({where})")


main()
