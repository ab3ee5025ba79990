"""Standalone use of the storage drivers, for trying them out and for benchmarks.

    unshare --map-root-user --map-auto --mount \\
        python -m fs mount --driver fuse --lower L2 --lower L1 --upper U --work W TARGET
    python -m fs detect
    python -m fs diff --lower L ... UPPER
    python -m fs commit --lower L ... UPPER LAYER.tar

``mount`` needs root of a user namespace (hence unshare); it mounts, prints
``ready``, serves until SIGINT/SIGTERM, then unmounts. Lowers are given top
first, like overlayfs' lowerdir.
"""

from __future__ import annotations

import argparse
import signal
import sys

from fs import diff, drivers


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fs")
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("mount")
    m.add_argument("--driver", default=None, choices=drivers.DRIVERS)
    m.add_argument("--lower", action="append", required=True)
    m.add_argument("--upper", required=True)
    m.add_argument("--work", required=True)
    m.add_argument("target")
    sub.add_parser("detect")
    d = sub.add_parser("diff")
    d.add_argument("--lower", action="append", default=[])
    d.add_argument("upper")
    c = sub.add_parser("commit")
    c.add_argument("upper")
    c.add_argument("dest")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "detect":
            choice = drivers.detect_default()
            print(f"{choice.driver}: {choice.reason}")
        elif args.cmd == "diff":
            for change in diff.changes(args.upper, args.lower):
                print(change)
        elif args.cmd == "commit":
            layer = diff.write_layer(args.upper, args.dest)
            print(f"{layer.diff_id} {layer.size}")
        else:
            return _mount(args)
    except (drivers.DriverError, OSError) as e:
        print(f"Error: {e}", file=sys.stderr)
        return 125
    return 0


def _mount(args: argparse.Namespace) -> int:
    driver = args.driver or drivers.detect_default().driver
    got: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda n, _f: got.append(n))
    with drivers.mount(driver, args.lower, args.upper, args.work, args.target):
        print("ready", flush=True)
        while not got:
            signal.pause()
    return 0


if __name__ == "__main__":
    sys.exit(main())
