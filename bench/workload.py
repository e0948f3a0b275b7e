"""The Python benchmark workload: the pairs workload of workload.c, from
Python code, 8 Python frames deep (an inference worker's stacks are deeper
still; each frame is one step of the kernel's Python walk).

    python3 workload.py [PAIRS] [--wait]

PAIRS times, map 64 KiB through the mmap module and unmap it (close).
Times itself and prints nanoseconds per pair; with --wait it says "ready"
and waits for a line on stdin first, so a tracer can attach before the work.
"""

import mmap
import sys
import time

LEN = 64 * 1024


def pair():
    region = mmap.mmap(-1, LEN)
    region.close()


def level(depth):
    if depth == 0:
        pair()
    else:
        level(depth - 1)


def main():
    args = sys.argv[1:]
    pairs = int(args[0]) if args and args[0].isdigit() else 50000
    if "--wait" in args:
        print("ready", flush=True)
        sys.stdin.readline()
    start = time.monotonic_ns()
    for _ in range(pairs):
        level(6)
    elapsed = time.monotonic_ns() - start
    print(f"pairs={pairs} failures=0 ns_per_pair={elapsed / pairs:.1f}", flush=True)


main()
