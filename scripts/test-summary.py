#!/usr/bin/env python3
"""Counts test cases for scripts/test and prints `N passed, N failed[, N skipped]`.

A GoogleTest binary counts each of its cases (from the XML it wrote); any other meson test
(shell scripts, fuzz runs) counts as one. A binary that crashed before writing its XML counts
as one failure. Exit 1 when anything failed.
"""
import glob
import json
import os
import sys
import xml.etree.ElementTree as ET

testlog, results_dir = sys.argv[1], sys.argv[2]
passed = failed = skipped = 0
suite_seconds = {}  # suite -> summed test durations (tests run 2 at a time: not wall time)
xml_by_exe = {}
for path in glob.glob(os.path.join(results_dir, "*.xml")):
    xml_by_exe[os.path.splitext(os.path.basename(path))[0]] = path

with open(testlog) as f:
    for line in f:
        t = json.loads(line)
        exe = os.path.basename(t["command"][0]) if t.get("command") else ""
        result = t["result"]
        # "pgwarden:integration / gateway_copy_masking": the suite is between ':' and ' / '.
        suite = t["name"].split(" / ")[0].split(":")[-1]
        suite_seconds[suite] = suite_seconds.get(suite, 0.0) + float(t.get("duration", 0.0))
        xml = xml_by_exe.get(exe)
        if xml and result in ("OK", "FAIL"):
            root = ET.parse(xml).getroot()
            for case in root.iter("testcase"):
                if case.find("failure") is not None:
                    failed += 1
                    print(f"FAILED: {t['name']}: {case.get('classname')}.{case.get('name')}")
                elif case.get("result") == "skipped" or case.find("skipped") is not None:
                    skipped += 1
                    print(f"SKIPPED: {case.get('classname')}.{case.get('name')}")
                else:
                    passed += 1
            if result == "FAIL" and not any(c.find("failure") is not None for c in root.iter("testcase")):
                failed += 1
                print(f"FAILED: {t['name']} (exited non-zero after its cases)")
        elif result == "OK":
            passed += 1
        elif result == "SKIP":
            skipped += 1
            print(f"SKIPPED: {t['name']}")
        else:
            failed += 1
            print(f"FAILED: {t['name']} ({result})")

if suite_seconds:
    print("test time per suite (summed over its tests): " +
          ", ".join(f"{k} {v:.0f} s" for k, v in sorted(suite_seconds.items())))
line = f"{passed} passed, {failed} failed"
if skipped:
    line += f", {skipped} skipped"
print(line)
sys.exit(1 if failed else 0)
