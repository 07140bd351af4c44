#!/usr/bin/env python3
"""Writes a deterministic build context for the benchmarks: FILES files
totalling about MB megabytes, spread over nested directories, half of the
bytes text-like (compressible source code) and half random (images, fonts,
compiled assets), like a web app's context.

    bench/gen-context.py DIR [FILES] [MB]
"""
import os
import random
import sys

def main():
    out = sys.argv[1]
    files = int(sys.argv[2]) if len(sys.argv) > 2 else 8000
    mb = int(sys.argv[3]) if len(sys.argv) > 3 else 100
    rng = random.Random(1234)
    words = [("".join(rng.choice("abcdefghijklmnopqrstuvwxyz_") for _ in range(rng.randint(2, 10))))
             for _ in range(2000)]
    total = mb * 1024 * 1024
    avg = total // files
    os.makedirs(out, exist_ok=True)
    written = 0
    for i in range(files):
        # About 25 files per directory, three levels deep, as in a web app's
        # source tree (about 320 directories for 8,000 files).
        n = i // 25
        d = os.path.join(out, f"pkg{n % 16:02d}", f"mod{(n // 16) % 5}", f"sub{n // 80}")
        os.makedirs(d, exist_ok=True)
        remaining = total - written
        size = max(1, min(remaining, int(rng.expovariate(1 / avg)))) if i < files - 1 else max(1, remaining)
        if i % 2 == 0:
            chunks = []
            n = 0
            while n < size:
                line = " ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) + ";\n"
                chunks.append(line)
                n += len(line)
            data = "".join(chunks).encode()[:size]
            name = f"file{i}.js"
        else:
            data = rng.randbytes(size)
            name = f"asset{i}.bin"
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
        written += len(data)
    with open(os.path.join(out, "Dockerfile"), "w") as f:
        f.write("FROM scratch\nCOPY . /app/\n")
    print(f"{files} files, {written / 1e6:.1f} MB in {out}")

main()
