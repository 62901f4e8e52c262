#!/usr/bin/env python3
"""Write the ext4_carry fuzz input that turns SEED into CHANGED.

    scripts/ext4-patches.py SEED CHANGED OUT

SEED is the target's seed filesystem (written by the harness's
`dump_seed`), CHANGED a copy edited with e2fsprogs (`debugfs -w`). The
input is the target's patch list, `[offset u32 LE][len u8][bytes]...`,
covering every difference.
"""
import struct
import sys

old = open(sys.argv[1], "rb").read()
new = open(sys.argv[2], "rb").read()
out = bytearray()
i = 0
while i < min(len(old), len(new)):
    if old[i] == new[i]:
        i += 1
        continue
    n = min(255, len(new) - i)
    out += struct.pack("<IB", i, n) + new[i : i + n]
    i += n
open(sys.argv[3], "wb").write(out)
