"""Raspberry Pi over SSH: the SSH target plus the board's health before and after every job.

``vcgencmd get_throttled`` bits (Raspberry Pi documentation): 0 under-voltage now, 1 ARM
frequency capped now, 2 throttled now, 3 soft temperature limit now; 16-19 the same "has occurred
since boot". A job is flagged when any "now" bit is set before or after it, or when an
"occurred" bit turned on during it; with ``strict = true`` in the targets file it is rejected.
"""
import re

from .remote import SshTarget

BITS = {0: "under-voltage", 1: "arm frequency capped", 2: "throttled", 3: "soft temperature limit"}
HEALTH_SCRIPT = ("vcgencmd get_throttled; vcgencmd measure_temp; vcgencmd measure_clock arm; "
                 "cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")


def parse_health(text):
    """Readings from the output of HEALTH_SCRIPT; a reading that is absent is None."""
    def find(pattern, cast):
        m = re.search(pattern, text)
        return cast(m.group(1)) if m else None

    return {"throttled": find(r"throttled=(0x[0-9a-fA-F]+)", lambda v: int(v, 16)),
            "temp_c": find(r"temp=([0-9.]+)'C", float),
            "arm_hz": find(r"frequency\(\d+\)=(\d+)", int),
            "governor": find(r"(?m)^([a-z]+)\s*$", str)}


def throttle_flags(before, after):
    b, a = before.get("throttled"), after.get("throttled")
    if b is None or a is None:
        return ["throttling state unreadable (vcgencmd get_throttled failed)"]
    flags = []
    for bit, what in sorted(BITS.items()):
        if (b | a) & (1 << bit):
            flags.append("%s now" % what)
        elif a & (1 << (bit + 16)) and not b & (1 << (bit + 16)):
            flags.append("%s occurred during the job" % what)
    return flags


class RaspberryPiTarget(SshTarget):
    """A Raspberry Pi over SSH; vcgencmd throttling and temperature checked around every job."""

    tools = {"vcgencmd": "sudo apt install raspi-utils  (Bookworm; libraspberrypi-bin before it)"}

    def health(self):
        return parse_health(self.ssh.run(["sh", "-c", HEALTH_SCRIPT], timeout_s=30).stdout.decode())

    def judge(self, before, after):
        return throttle_flags(before, after)
