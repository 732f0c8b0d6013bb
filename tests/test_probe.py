"""The speed probe a device takes when it is described: what it times and how its buffer is sized."""
import math
import time

import torch

from harness import probe


def test_best_ns_is_the_shortest_timed_run_and_leaves_the_first_untimed():
    durations = iter([0.001, 0.010, 0.040, 0.040])  # the untimed first run is the shortest
    calls = []

    def work():
        calls.append(1)
        time.sleep(next(durations))

    best = probe.best_ns(work, repeats=3)
    assert len(calls) == 4
    assert 10e6 <= best < 40e6


def test_the_copy_buffers_take_at_most_a_quarter_of_a_small_devices_memory():
    figures = probe.probe(memory_bytes=64 * 2**20)
    assert figures["copy_buffer_bytes"] == 8 * 2**20
    assert "copy of 8 MiB fp32" in figures["how"]
    assert figures["threads"] == torch.get_num_threads()
    for name in ("copy_bytes_per_s", "gemm_flop_per_s", "op_dispatch_ns"):
        assert math.isfinite(figures[name]) and figures[name] > 0, name


def test_a_device_of_unknown_memory_copies_the_full_buffers():
    assert probe.probe()["copy_buffer_bytes"] == probe.COPY_BYTES
