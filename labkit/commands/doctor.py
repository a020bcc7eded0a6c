"""`labkit doctor`: versions, hardware, the dtype the kit will use, and whether it is offline."""

from __future__ import annotations

import argparse

from labkit.doctor import missing_packages, render, report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="labkit doctor", description=__doc__)
    parser.add_argument("--no-network", action="store_true", help="skip the offline check")
    args = parser.parse_args(argv)
    rows = report(check_network=not args.no_network)
    print(render(rows))
    return 1 if missing_packages(rows) else 0
