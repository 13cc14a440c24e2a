"""Shared pieces of the benchmark scripts: time a command, summarise samples."""

import os
import statistics
import subprocess
import sys
import time


def measure(command, env=None):
    """Wall seconds and CPU seconds (user + sys, from wait4) of one run.

    Exits with the command's stderr when it fails: a benchmark of a failing
    command measures nothing.
    """
    started = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"bench: {command[0]} failed: {child.stderr.read().decode()}")
    return wall, usage.ru_utime + usage.ru_stime


def sample(commands, runs, env=None, warmup=10):
    """Runs each named command `runs` times, interleaved so all see the same load.

    Returns {name: (median wall s, median cpu s)}.
    """
    samples = {name: ([], []) for name in commands}
    for _ in range(warmup):
        for command in commands.values():
            measure(command, env)
    for _ in range(runs):
        for name, command in commands.items():
            wall, cpu = measure(command, env)
            samples[name][0].append(wall)
            samples[name][1].append(cpu)
    return {name: (statistics.median(w), statistics.median(c)) for name, (w, c) in samples.items()}


def print_table(medians, title):
    print(title)
    print(f"{'command':<24}{'wall ms':>10}{'cpu ms':>10}")
    for name, (wall, cpu) in medians.items():
        print(f"{name:<24}{wall * 1000:>10.2f}{cpu * 1000:>10.2f}")
