"""Sizes and counts given as text with their unit (budgets in plans and on the command line).

A number without a unit is an error: "100" could mean bytes, KB or KiB, or MACs or millions.
"""
import re

BYTE_UNITS = {"B": 1, "KiB": 1024, "MiB": 1024 ** 2, "GiB": 1024 ** 3, "kB": 1000, "KB": 1000, "MB": 1000 ** 2,
              "GB": 1000 ** 3}
"""Binary (KiB = 1024 B) and decimal (kB = KB = 1000 B) byte units for sizes given as text."""
MAC_UNITS = {"MAC": 1, "kMAC": 1000, "MMAC": 1000 ** 2, "GMAC": 1000 ** 3}
"""Multiply-accumulate counts (decimal prefixes)."""


def _parse(text, units, what, example):
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-z]+)\s*", str(text))
    if not match or match.group(2) not in units:
        raise ValueError("%s %r needs a number and a unit, e.g. %s; units: %s"
                         % (what, text, example, ", ".join(units)))
    return int(round(float(match.group(1)) * units[match.group(2)]))


def parse_bytes(text, what="size"):
    """``"100KiB"`` -> 102400, ``"0.1MB"`` -> 100000."""
    return _parse(text, BYTE_UNITS, what, "100KiB (1 KiB = 1024 B) or 0.1MB")


def parse_macs(text, what="count"):
    """``"6.5MMAC"`` -> 6500000, ``"800kMAC"`` -> 800000."""
    return _parse(text, MAC_UNITS, what, "6.5MMAC or 800kMAC")
