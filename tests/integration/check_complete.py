#!/usr/bin/env python3
"""Checks that every file husai publishes in the given folders is complete: each *.safetensors parses (header
size, JSON header, tensors exactly covering the data) and each *.json / *.jsonl parses. Temp files
(".NAME.tmp.*") left behind are reported too, unless --allow-temp (after SIGKILL a temp file may remain: it
never carries a final name, and the next run writes its own). Used after SIGKILL and after failed writes: nothing
half-written may sit under a final name. Prints one line per problem; exit 1 if any."""
import json
import os
import struct
import sys

problems = []


def check_safetensors(path):
    with open(path, "rb") as f:
        b = f.read()
    if len(b) < 8:
        return "shorter than 8 bytes"
    (n,) = struct.unpack("<Q", b[:8])
    if 8 + n > len(b):
        return "header size %d beyond file size %d" % (n, len(b))
    try:
        h = json.loads(b[8:8 + n])
    except ValueError as e:
        return "header is not JSON: %s" % e
    end = 0
    for k, v in h.items():
        if k != "__metadata__":
            end = max(end, v["data_offsets"][1])
    if 8 + n + end != len(b):
        return "data is %d bytes, tensors need %d" % (len(b) - 8 - n, end)
    return None


args = sys.argv[1:]
allow_temp = "--allow-temp" in args
args = [a for a in args if a != "--allow-temp"]
for root in args:
    for d, _, files in os.walk(root):
        for name in files:
            p = os.path.join(d, name)
            if ".tmp." in name:
                if not allow_temp:
                    problems.append("%s: temp file left behind" % p)
                continue
            err = None
            try:
                if name.endswith(".safetensors"):
                    err = check_safetensors(p)
                elif name.endswith(".json"):
                    json.load(open(p))
                elif name.endswith(".jsonl"):
                    for line in open(p):
                        json.loads(line)
            except ValueError as e:
                err = "does not parse: %s" % e
            if err:
                problems.append("%s: %s" % (p, err))
for p in problems:
    print("INCOMPLETE:", p)
sys.exit(1 if problems else 0)
