"""The edge benchmark's process-tree sampler: a device's memory is the sum over every process it runs."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import psutil

from fedrec.simulations.edge_tree import TreeSampler

# A parent holding ~60 MB with a child holding ~120 MB: the tree's peak is their sum, not either alone.
TREE = textwrap.dedent("""
    import subprocess, sys, time
    block = bytearray(60 * 2**20)
    child = subprocess.Popen([sys.executable, "-c", "b = bytearray(120 * 2**20); import time; time.sleep(30)"])
    print("ready", flush=True)
    time.sleep(30)
""")


def test_the_sampler_sums_the_whole_tree() -> None:
    proc = subprocess.Popen([sys.executable, "-c", TREE], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        sampler = TreeSampler(proc.pid, every=0.1)
        sampler.start()
        time.sleep(2.0)
        out = sampler.stop()
    finally:
        for child in psutil.Process(proc.pid).children():
            child.kill()
        proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close()
    assert out["peak_tree_rss_mb"] > 180 and out["peak_tree_pss_mb"] > 170
    largest = max(out["peak_rss_by_kind_mb"].values())
    assert 120 < largest < out["peak_tree_rss_mb"] - 50
