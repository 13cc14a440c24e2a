"""Shared pieces of the benchmark scripts: build a binary, start a throwaway
PostgreSQL server, time a command, summarise samples."""

import glob
import os
import pwd
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def release_binary(package):
    """Builds `package` (its binary has the same name) optimised, and returns its path."""
    subprocess.run(["cargo", "build", "--release", "--quiet", "-p", package], cwd=ROOT, check=True)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    return os.path.join(target, "release", package)


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


def pg_bindir():
    if os.environ.get("PG_BINDIR"):
        return os.environ["PG_BINDIR"]
    try:
        found = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True).stdout.strip()
        if os.path.exists(os.path.join(found, "initdb")):
            return found
    except FileNotFoundError:
        pass
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    if not candidates:
        sys.exit("bench: no PostgreSQL server binaries (set PG_BINDIR)")
    return candidates[-1]


def as_user_prefix():
    if os.geteuid() != 0:
        return []
    user = os.environ.get("PGTEST_USER", "vcap")
    entry = pwd.getpwnam(user)
    return ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--init-groups", "--"]


class ThrowawayServer:
    """initdb + pg_ctl start on a free loopback port; stopped and deleted on exit."""

    def __init__(self, bindir):
        self.bindir = bindir
        self.root = tempfile.mkdtemp(prefix="pgbench.")
        self.data = os.path.join(self.root, "data")
        self.prefix = as_user_prefix()
        if self.prefix:
            entry = pwd.getpwnam(os.environ.get("PGTEST_USER", "vcap"))
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]

    def __enter__(self):
        self.run("initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "--no-sync", "--no-instructions")
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self.run("pg_ctl", "-D", self.data, "-l", os.path.join(self.root, "log"), "-o", options, "-w", "start")
        return self

    def __exit__(self, *exc):
        self.run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def run(self, program, *args, check=True):
        command = self.prefix + [os.path.join(self.bindir, program), *args]
        subprocess.run(command, check=check, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def query(self, sql):
        """The first column of the first row of `sql`, as the superuser over TCP."""
        command = [os.path.join(self.bindir, "psql"), "-X", "-At", "-h", "127.0.0.1", "-p", str(self.port),
                   "-U", "postgres", "-d", "postgres", "-c", sql]
        return subprocess.run(command, check=True, capture_output=True, text=True).stdout.split("\n")[0]

    def postmaster_pid(self):
        with open(os.path.join(self.data, "postmaster.pid")) as pidfile:
            return int(pidfile.readline())
