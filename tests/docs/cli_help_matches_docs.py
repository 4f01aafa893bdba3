#!/usr/bin/env python3
"""`pgwardenctl --help` and each group's `--help` agree with docs/cli.md: every group has its
section, and every command a group's usage names is documented as `pgwardenctl GROUP COMMAND`.
Usage: cli_help_matches_docs.py PGWARDENCTL DOCS/CLI.MD"""
import re
import subprocess
import sys

ctl, doc_path = sys.argv[1], sys.argv[2]
docs = open(doc_path, encoding="utf-8").read()
top = subprocess.run([ctl, "--help"], capture_output=True, text=True)
groups = re.findall(r"^  (\w+)\t", top.stdout + top.stderr, flags=re.M)
problems = []
if len(groups) < 5:
    problems.append(f"pgwardenctl --help lists {len(groups)} groups: {top.stdout + top.stderr!r}")
for g in groups:
    if not re.search(rf"^## {g}\b", docs, flags=re.M):
        problems.append(f"docs/cli.md has no section for group {g}")
    h = subprocess.run([ctl, g, "--help"], capture_output=True, text=True)
    if h.returncode != 0 or f"pgwardenctl {g}" not in h.stdout:
        problems.append(f"pgwardenctl {g} --help: exit {h.returncode}, {h.stdout + h.stderr!r}")
        continue
    # "usage: pgwardenctl sessions list | show ID | ..." and continuation lines.
    for line in h.stdout.splitlines():
        m = re.search(rf"pgwardenctl {g} (.*)", line)
        if not m and not line.startswith("    "):
            continue  # a description, not a usage line
        alternatives = (m.group(1) if m else line).split(" | ")
        for alt in alternatives:
            words = alt.split()
            if not words or not re.fullmatch(r"[a-z][a-z-]*", words[0]):
                continue
            cmd = words[0]
            if f"pgwardenctl {g} {cmd}" not in docs and f"{g} {cmd}" not in docs:
                problems.append(f"docs/cli.md does not document `pgwardenctl {g} {cmd}`")
for p in problems:
    print("MISMATCH:", p)
print(f"{len(groups)} groups checked, {len(problems)} mismatches")
sys.exit(1 if problems else 0)
