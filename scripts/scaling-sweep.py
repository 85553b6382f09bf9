#!/usr/bin/env python3
"""Strong and weak scaling sweep of `hyperattn bench` under mpirun; one JSON and one CSV.

For every (kind, mode, causal, n, bind, P) it runs one

    mpirun -np P [--hostfile F] [--oversubscribe] --bind-to core|none \\
        hyperattn bench --n N --modes MODE --causal yes|no --heads H --d D --repeats R \\
                        --threads T --error-rows 0 --json TMP.json

and merges the bench rows into PREFIX.json and PREFIX.csv, rewritten atomically (temporary file +
rename) after every run, so a partial sweep is usable and `--resume` continues it. A failed or
timed-out run is kept as a row with its status, exit code and the tail of its output.

Kinds:
  strong  n fixed (--strong-n; --ring-n for ring, whose exact O(n^2) work would not finish at the
          strong n). speedup S = T1/TP, efficiency E = T1/(P*TP).
  weak    n = (--weak-n-per-rank)*P (--ring-weak-n-per-rank for ring). efficiency E = T1/TP,
          scaled speedup S = P*T1/TP.
T1 is the time of the P=1 run of the same (kind, mode, causal, n or n per rank, bind, threads);
if that run is missing or failed, the smallest P that succeeded is the baseline (recorded as
baselineRanks, and S and E are then relative to it: strong E = P0*T0/(P*TP)).
When ring runs at a smaller n than hyper, hyper is also run at ring's n (unless
--no-hyper-at-ring-n), so that hyper and ring can be compared at equal n for every P.

Ranks: --ranks 1,2,4,8,16, or the powers of two up to the cores (--cores N, or the slots of
--hostfile, or this machine's logical CPUs). Threads per rank: --threads (default 1). A run with
P*T <= cores is bound (--bind-to core; --map-by slot:PE=T when T > 1) unless --bind none; a run
with P*T > cores gets --oversubscribe --bind-to none. --bind core,none runs both (to measure what
binding does; the bind is part of every row's key).

mpirun: $MPIRUN, else $OPAL_PREFIX/bin/mpirun, else mpirun on PATH. Environment as in
scripts/run.sh (any value already set wins): OMPI_ALLOW_RUN_AS_ROOT=1,
OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1, OMPI_MCA_btl=self,vader (self,vader,tcp with --hostfile),
OMPI_MCA_pml=ob1, OMPI_MCA_btl_vader_single_copy_mechanism=none,
PMIX_MCA_pcompress_base_silence_warning=1. $HYPERATTN_MPIRUN_ARGS adds mpirun arguments.
With a bundled OpenMPI (scripts from ../shared/device/openmpi-bundle.sh):
    OPAL_PREFIX=/path/bundle PATH=/path/bundle/bin:$PATH LD_LIBRARY_PATH=/path/bundle/lib \\
        scripts/scaling-sweep.py --binary ./hyperattn --cores 16 ...

Examples:
    scripts/scaling-sweep.py --cores 2 --ranks 1,2,4 --strong-n 65536 --weak-n-per-rank 16384 \\
        --heads 2 --modes hyper --out /tmp/scaling-small
    scripts/scaling-sweep.py --cores 16 --modes hyper,ring --ring-n 131072 --out docs/results/scaling-16
    scripts/scaling-sweep.py ... --resume          # continue an interrupted sweep (same --out)
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import io
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SWIFT_FLAGS = ["-c", "release", "-Xswiftc", "-target-cpu", "-Xswiftc", "haswell"]
SCHEMA = "hyperattn-scaling-sweep/1"
# Statuses: ok | failed (non-zero exit or no row) | timeout (ran past --timeout-per-run) |
# budget (stopped by --budget) | skipped (not started: --budget spent) | pending (not run yet).
# --resume keeps ok rows, and timeout rows whose limit was at least the current --timeout-per-run.


def keep_on_resume(r: dict, timeout: float) -> bool:
    if r.get("status") == "ok":
        return True
    return r.get("status") == "timeout" and (r.get("timeoutSeconds") or 0) >= timeout - 1


def log(message: str) -> None:
    print(f"scaling-sweep: {message}", file=sys.stderr, flush=True)


def die(message: str, code: int = 2) -> None:
    log(f"error: {message}")
    sys.exit(code)


# ---------------------------------------------------------------------------------------------
# Arguments


def int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}")
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"need positive integers: {text!r}")
    return values


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="scripts/scaling-sweep.py",
        description=__doc__.split("\n\n")[0],
        epilog="See the top of this file and docs/scaling.md for details.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    where = p.add_argument_group("where")
    where.add_argument("--hostfile", help="OpenMPI hostfile (several nodes; TCP between them)")
    where.add_argument("--cores", type=positive,
                       help="cores available (default: the hostfile's slots, else this machine's logical CPUs)")
    where.add_argument("--ranks", type=int_list, help="comma-separated P values (default: 1,2,4,... <= cores)")
    where.add_argument("--threads", type=positive, default=1, help="threads per rank (default 1)")
    where.add_argument("--bind", default="auto",
                       help="auto (core when P*T <= cores, else none), core, none, or a list: core,none")
    what = p.add_argument_group("what")
    what.add_argument("--modes", default="hyper,ring", help="comma-separated bench modes (default hyper,ring)")
    what.add_argument("--causal", choices=["both", "yes", "no"], default="both")
    what.add_argument("--kinds", default="strong,weak", help="strong, weak or strong,weak (default both)")
    what.add_argument("--strong-n", type=positive, default=1 << 20, help="n of the strong sweep (default 1048576)")
    what.add_argument("--weak-n-per-rank", type=positive, default=65536,
                      help="n per rank of the weak sweep, n = this*P (default 65536)")
    what.add_argument("--ring-n", type=positive, help="n of ring in the strong sweep (default: --strong-n)")
    what.add_argument("--ring-weak-n-per-rank", type=positive,
                      help="n per rank of ring in the weak sweep (default: --weak-n-per-rank)")
    what.add_argument("--no-hyper-at-ring-n", action="store_true",
                      help="do not also run hyper at ring's smaller n")
    what.add_argument("--heads", type=positive, default=8)
    what.add_argument("--d", type=positive, default=64)
    what.add_argument("--repeats", type=positive, default=3, help="bench --repeats (best of; default 3)")
    what.add_argument("--calls", type=positive, default=1,
                      help="separate mpirun calls per point (default 1): on a shared host whole runs vary, so "
                           "several calls show the spread; seconds is the best call's, callSeconds all of them, "
                           "medianSeconds their median")
    what.add_argument("--peak-ms", type=positive, help="bench --peak-ms (default: bench's 200)")
    what.add_argument("--bench-arg", action="append", default=[], metavar="ARG",
                      help="extra argument for bench, repeatable (e.g. --bench-arg=--block-size --bench-arg=128)")
    how = p.add_argument_group("how")
    how.add_argument("--binary", help="hyperattn binary (default: build with scripts/build.sh)")
    how.add_argument("--build-args", default=os.environ.get("HYPERATTN_BUILD_ARGS", ""),
                     help="arguments for scripts/build.sh, e.g. '--scratch-path .build-x' (default $HYPERATTN_BUILD_ARGS)")
    how.add_argument("--out", required=True, help="output prefix: writes PREFIX.json and PREFIX.csv")
    how.add_argument("--timeout-per-run", type=float, default=1800.0,
                     help="seconds one mpirun may take before it is killed and recorded as timeout (default 1800)")
    how.add_argument("--budget", type=float,
                     help="seconds for the whole sweep: no run starts after it, the running one is cut at it")
    how.add_argument("--resume", action="store_true",
                     help="keep the ok rows (and timeout rows with a limit >= --timeout-per-run) of an existing "
                          "PREFIX.json made with the same settings; run the rest")
    how.add_argument("--dry-run", action="store_true", help="print the mpirun commands and exit")
    args = p.parse_args(argv)

    args.modes = [m.strip().lower() for m in args.modes.split(",") if m.strip()]
    args.kinds = [k.strip().lower() for k in args.kinds.split(",") if k.strip()]
    if not args.modes:
        p.error("--modes is empty")
    if not args.kinds or any(k not in ("strong", "weak") for k in args.kinds):
        p.error(f"--kinds must be strong, weak or strong,weak, got {args.kinds}")
    binds = [b.strip().lower() for b in args.bind.split(",") if b.strip()]
    if not binds or any(b not in ("auto", "core", "none") for b in binds) or ("auto" in binds and len(binds) > 1):
        p.error("--bind must be auto, core, none or core,none")
    args.binds = binds
    if args.hostfile and not os.access(args.hostfile, os.R_OK):
        p.error(f"cannot read hostfile {args.hostfile}")
    return args


# ---------------------------------------------------------------------------------------------
# Machine, git, mpirun


def read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def machine_info() -> dict:
    cpuinfo = read_text("/proc/cpuinfo")
    models, cores, sockets, logical, flags = [], set(), set(), 0, ""
    phys = core = None
    for line in cpuinfo.splitlines() + [""]:
        key, _, value = (s.strip() for s in line.partition(":"))
        if key == "processor":
            logical += 1
        elif key == "model name":
            models.append(value)
        elif key == "physical id":
            phys = value
        elif key == "core id":
            core = value
        elif key == "flags" and not flags:
            flags = value
        elif not line.strip():
            if phys is not None and core is not None:
                cores.add((phys, core))
                sockets.add(phys)
            phys = core = None
    mem = re.search(r"^MemTotal:\s+(\d+) kB", read_text("/proc/meminfo"), re.M)
    osname = re.search(r'^PRETTY_NAME="?([^"\n]*)', read_text("/etc/os-release"), re.M)
    flag_set = set(flags.split())
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    return {
        "hostname": socket.gethostname(),
        "cpuModel": models[0] if models else platform.processor() or "unknown",
        "logicalCPUs": logical or os.cpu_count(),
        "physicalCores": len(cores) or None,
        "sockets": len(sockets) or None,
        "cpusAvailable": affinity,
        "simd": [f for f in ("avx2", "fma", "avx512f") if f in flag_set],
        "memoryBytes": int(mem.group(1)) * 1024 if mem else None,
        "operatingSystem": osname.group(1) if osname else platform.system(),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def git_info() -> dict:
    def git(*a: str) -> str | None:
        try:
            return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True, timeout=20,
                                  check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "describe": git("describe", "--always", "--dirty"),
            "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
            "dirty": None if status is None else bool(status)}


def hostfile_slots(path: str) -> tuple[int | None, list[dict]]:
    """Total slots of an OpenMPI hostfile (None when a host has no slots=) and its hosts."""
    hosts, total = [], 0
    for line in read_text(path).splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name = line.split()[0]
        m = re.search(r"\bslots\s*=\s*(\d+)", line)
        hosts.append({"host": name, "slots": int(m.group(1)) if m else None})
        if m is None:
            total = None
        elif total is not None:
            total += int(m.group(1))
    return total, hosts


def find_mpirun() -> str:
    if os.environ.get("MPIRUN"):
        return os.environ["MPIRUN"]
    prefix = os.environ.get("OPAL_PREFIX")
    if prefix and os.access(os.path.join(prefix, "bin", "mpirun"), os.X_OK):
        return os.path.join(prefix, "bin", "mpirun")
    found = shutil.which("mpirun")
    if not found:
        die("mpirun not found: install openmpi-bin, or set MPIRUN or OPAL_PREFIX (bundled OpenMPI)")
    return found


def mpi_environment(hostfile: bool) -> dict[str, str]:
    defaults = {
        "OMPI_ALLOW_RUN_AS_ROOT": "1",
        "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
        "OMPI_MCA_btl": "self,vader,tcp" if hostfile else "self,vader",
        "OMPI_MCA_pml": "ob1",
        "OMPI_MCA_btl_vader_single_copy_mechanism": "none",
        "PMIX_MCA_pcompress_base_silence_warning": "1",
    }
    return {k: os.environ.get(k, v) for k, v in defaults.items()}


def mpirun_version(mpirun: str, env: dict) -> str | None:
    try:
        out = subprocess.run([mpirun, "--version"], capture_output=True, text=True, timeout=30, env=env)
        return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr).strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


def build_binary(build_args: str) -> str:
    extra = shlex.split(build_args)
    log("building: scripts/build.sh " + " ".join(extra))
    r = subprocess.run(["bash", str(REPO / "scripts" / "build.sh"), *extra], cwd=REPO,
                       stdout=sys.stderr, stderr=sys.stderr)
    if r.returncode != 0:
        die(f"scripts/build.sh failed (exit {r.returncode})", 1)
    out = subprocess.run(["swift", "build", *SWIFT_FLAGS, *extra, "--show-bin-path"], cwd=REPO,
                         capture_output=True, text=True)
    if out.returncode != 0:
        die("swift build --show-bin-path failed: " + out.stderr.strip(), 1)
    return os.path.join(out.stdout.strip(), "hyperattn")


def binary_info(binary: str) -> dict:
    """What identifies the binary (the git fields describe this checkout, not necessarily its build)."""
    import hashlib
    digest = hashlib.sha256()
    with open(binary, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    st = os.stat(binary)
    return {"sha256": digest.hexdigest(), "bytes": st.st_size,
            "modified": _dt.datetime.fromtimestamp(st.st_mtime, _dt.timezone.utc).replace(microsecond=0).isoformat()}


def bench_modes(binary: str) -> list[str] | None:
    """The modes `hyperattn bench --help` lists, None when it cannot tell."""
    try:
        text = subprocess.run([binary, "bench", "--help"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"--modes <modes>\s+Comma-separated modes:\s*([a-z]+(?:\s*(?:,|or)\s*[a-z]+)*)",
                  re.sub(r"\s+", " ", text))
    if not m:
        return None
    return [x.strip() for x in re.split(r",|\bor\b", m.group(1)) if x.strip()]


# ---------------------------------------------------------------------------------------------
# The plan


def plan_runs(args: argparse.Namespace, cores: int) -> list[dict]:
    causals = {"both": [False, True], "yes": [True], "no": [False]}[args.causal]
    ring_n = args.ring_n or args.strong_n
    ring_weak = args.ring_weak_n_per_rank or args.weak_n_per_rank
    series = []  # (kind, mode, base n)
    for kind in args.kinds:
        main = args.strong_n if kind == "strong" else args.weak_n_per_rank
        ring = ring_n if kind == "strong" else ring_weak
        for mode in args.modes:
            if mode == "ring":
                series.append((kind, mode, ring))
            else:
                series.append((kind, mode, main))
        if ("ring" in args.modes and ring != main and not args.no_hyper_at_ring_n):
            for mode in args.modes:
                if mode != "ring":
                    series.append((kind, mode, ring))
    runs = []
    for kind in args.kinds:
        for ranks in args.ranks:
            for (k, mode, base) in series:
                if k != kind:
                    continue
                for causal in causals:
                    for bind in args.binds:
                        fits = ranks * args.threads <= cores
                        if bind == "auto":
                            effective = "core" if fits else "none"
                        else:
                            effective = bind
                        if effective == "core" and not fits:
                            continue  # cannot bind more ranks*threads than cores
                        n = base if kind == "strong" else base * ranks
                        runs.append({
                            "kind": kind, "mode": mode, "causal": causal, "ranks": ranks,
                            "threadsPerRank": args.threads, "n": n,
                            "nPerRank": None if kind == "strong" else base,
                            "baseN": base, "bind": bind, "bindTo": effective, "oversubscribed": not fits,
                        })
    return runs


def run_key(r: dict) -> tuple:
    return (r["kind"], r["mode"], r["causal"], r["baseN"], r["bind"], r["threadsPerRank"], r["ranks"])


def series_key(r: dict) -> tuple:
    return run_key(r)[:-1]


def mpirun_command(mpirun: str, binary: str, args: argparse.Namespace, run: dict, json_path: str) -> list[str]:
    cmd = [mpirun, "-np", str(run["ranks"])]
    if args.hostfile:
        cmd += ["--hostfile", args.hostfile]
    if run["oversubscribed"]:
        cmd += ["--oversubscribe"]
    mapping = "node" if args.hostfile else "slot"
    if run["bindTo"] == "core":
        if run["threadsPerRank"] > 1:
            cmd += ["--map-by", f"{mapping}:PE={run['threadsPerRank']}"]
        elif args.hostfile:
            cmd += ["--map-by", mapping]
        # With a hostfile the slots may exceed a node's cores (then plain core binding refuses to
        # start); overload-allowed lets such a node share cores as unbound ranks would.
        cmd += ["--bind-to", "core:overload-allowed" if args.hostfile else "core"]
    else:
        if args.hostfile:
            cmd += ["--map-by", mapping]
        cmd += ["--bind-to", "none"]
    if args.hostfile:
        for var in sorted(os.environ):
            if var.startswith("HYPERATTN_") or var in ("LD_LIBRARY_PATH", "PATH", "OPAL_PREFIX"):
                cmd += ["-x", var]
    cmd += shlex.split(os.environ.get("HYPERATTN_MPIRUN_ARGS", ""))
    cmd += [binary, "bench", "--n", str(run["n"]), "--modes", run["mode"],
            "--causal", "yes" if run["causal"] else "no", "--heads", str(args.heads), "--d", str(args.d),
            "--repeats", str(args.repeats), "--threads", str(run["threadsPerRank"]), "--error-rows", "0"]
    if args.peak_ms:
        cmd += ["--peak-ms", str(args.peak_ms)]
    cmd += args.bench_arg
    cmd += ["--json", json_path]
    return cmd


# ---------------------------------------------------------------------------------------------
# Running one mpirun


def run_once(cmd: list[str], env: dict, timeout: float) -> tuple[int | None, float, str, bool]:
    """(exit code, wall seconds, output tail, timed out). The whole process group is killed on timeout."""
    start = time.monotonic()
    with tempfile.TemporaryFile() as out:
        try:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)
        except OSError as e:
            return None, 0.0, f"cannot start {cmd[0]}: {e}", False
        timed_out = False
        try:
            proc.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            timed_out = True
            for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 15)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        except KeyboardInterrupt:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            raise
        wall = time.monotonic() - start
        out.seek(0, io.SEEK_END)
        size = out.tell()
        out.seek(max(0, size - 4000))
        tail = out.read().decode("utf-8", errors="replace")
        return proc.returncode, wall, tail, timed_out


BENCH_FIELDS = [
    "seconds", "allSeconds", "flops", "gflops", "peakGflops", "fractionOfPeak", "evaluatedPairs",
    "peakRSSBytes", "tensorBytes", "rssToTensorBytes", "phases", "bytesSentMax", "bytesSentMean",
    "bytesReceivedMax", "bytesReceivedMean", "computeImbalance", "flopImbalance", "threads",
]


def merge_bench_row(run: dict, bench: dict) -> None:
    rows = bench.get("rows") or []
    row = rows[-1]
    for f in BENCH_FIELDS:
        run[f] = row.get(f)
    bound = row.get("byteBound") or {}
    per_rank = bound.get("perRank") or []
    run["byteBoundMax"] = max(per_rank) if per_rank else None
    run["bytesSentToBoundMax"] = bound.get("measuredToBoundMax")
    run["benchRanks"] = row.get("ranks")
    run["benchRow"] = row  # everything bench wrote, per-rank details included
    run["benchPeak"] = bench.get("peak")
    run["benchMachine"] = bench.get("machine")
    run["benchSettings"] = bench.get("settings")


def derive(runs: list[dict]) -> None:
    """speedup and efficiency against the smallest P that succeeded in the same series (P=1 normally)."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault(series_key(r), []).append(r)
    for members in groups.values():
        ok = sorted((r for r in members if r.get("status") == "ok" and r.get("seconds")), key=lambda r: r["ranks"])
        base = ok[0] if ok else None
        for r in members:
            r["baselineRanks"] = base["ranks"] if base else None
            r["baselineSeconds"] = base["seconds"] if base else None
            if not base or r.get("status") != "ok" or not r.get("seconds"):
                r["speedup"] = r["efficiency"] = r["throughputEfficiency"] = r["peakEfficiency"] = None
                continue
            # Useful GFLOP/s per rank against the baseline's: the efficiency that accounts for the
            # work growing faster than n (ring's exact O(n^2) in a weak sweep: T grows like P).
            g0, gp = base.get("gflops"), r.get("gflops")
            r["throughputEfficiency"] = (gp / r["ranks"]) / (g0 / base["ranks"]) if g0 and gp else None
            # The same against the FMA peak each run measured (all its ranks at once): on a shared
            # machine whose cores slow down when many are busy, what the code loses, not the host.
            f0, fp = base.get("fractionOfPeak"), r.get("fractionOfPeak")
            r["peakEfficiency"] = fp / f0 if f0 and fp else None
            p0, t0, p, tp = base["ranks"], base["seconds"], r["ranks"], r["seconds"]
            if r["kind"] == "strong":
                r["speedup"] = (t0 / tp) * p0           # = T1/TP when the baseline is P=1
                r["efficiency"] = (p0 * t0) / (p * tp)  # = T1/(P*TP)
            else:
                r["efficiency"] = t0 / tp               # = T1/TP (work per rank constant)
                r["speedup"] = r["efficiency"] * p / p0  # scaled speedup P*T1/TP
            # The same from the medians of several calls (--calls), the typical rather than the best.
            m0, mp = base.get("medianSeconds"), r.get("medianSeconds")
            r["efficiencyMedian"] = None
            if m0 and mp:
                r["efficiencyMedian"] = (p0 * m0) / (p * mp) if r["kind"] == "strong" else m0 / mp


CSV_COLUMNS = [
    "kind", "mode", "causal", "ranks", "threadsPerRank", "n", "nPerRank", "bind", "bindTo", "oversubscribed", "status",
    "exitCode", "wallSeconds", "seconds", "speedup", "efficiency", "throughputEfficiency", "peakEfficiency", "baselineRanks", "baselineSeconds", "gflops",
    "peakGflops", "fractionOfPeak", "evaluatedPairs", "hashSecondsMax", "exchangeSecondsMax",
    "sampleGatherSecondsMax", "computeSecondsMax", "computeSecondsMean", "returnSecondsMax", "totalSecondsMax",
    "bytesSentMax", "bytesSentMean", "bytesReceivedMax", "bytesReceivedMean", "byteBoundMax",
    "bytesSentToBoundMax", "computeImbalance", "flopImbalance", "peakRSSBytes", "tensorBytes", "loadAverageBefore",
    "command", "medianSeconds", "efficiencyMedian", "callSeconds", "speedCalibrationSecondsMax",
]


def csv_row(r: dict) -> list:
    phases = r.get("phases") or {}
    def phase(name: str, which: str = "max"):
        return (phases.get(name) or {}).get(which)
    extra = {
        "hashSecondsMax": phase("hash"), "exchangeSecondsMax": phase("exchange"),
        "sampleGatherSecondsMax": phase("sampleGather"), "computeSecondsMax": phase("compute"),
        "computeSecondsMean": phase("compute", "mean"), "returnSecondsMax": phase("return"),
        "totalSecondsMax": phase("total"), "speedCalibrationSecondsMax": phase("speedCalibration"),
        "callSeconds": ";".join(f"{x:.6g}" for x in r["callSeconds"]) if r.get("callSeconds") else None,
    }
    out = []
    for c in CSV_COLUMNS:
        v = extra[c] if c in extra else r.get(c)
        out.append("" if v is None else ("true" if v is True else "false" if v is False else v))
    return out


def write_atomically(path: str, text: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_outputs(prefix: str, doc: dict) -> None:
    derive(doc["runs"])
    doc["updated"] = now()
    write_atomically(prefix + ".json", json.dumps(doc, indent=1, sort_keys=False) + "\n")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in doc["runs"]:
        w.writerow(csv_row(r))
    write_atomically(prefix + ".csv", buf.getvalue())


def load_average() -> float | None:
    """1-minute load average: other work on the machine shows up here (and in a lower peakGflops)."""
    try:
        return float(read_text("/proc/loadavg").split()[0])
    except (IndexError, ValueError):
        return None


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 120:
        return f"{s:.1f}s"
    return f"{int(s // 60)}m{int(s % 60):02d}s"


# ---------------------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    slots, hosts = (hostfile_slots(args.hostfile) if args.hostfile else (None, []))
    cores = args.cores or slots or os.cpu_count() or 1
    if not args.ranks:
        args.ranks, p = [], 1
        while p <= cores:
            args.ranks.append(p)
            p *= 2
    args.ranks = sorted(set(args.ranks))

    if not args.hostfile and args.cores and os.cpu_count() and args.cores > os.cpu_count():
        log(f"warning: --cores {args.cores} but this machine has {os.cpu_count()} logical CPUs: "
            "runs with more ranks than CPUs will be bound to cores and fail (or use --bind none)")

    prefix = args.out
    if os.path.dirname(prefix):
        os.makedirs(os.path.dirname(prefix), exist_ok=True)

    env = dict(os.environ)
    mpi_env = mpi_environment(bool(args.hostfile))
    env.update(mpi_env)
    mpirun = find_mpirun()

    planned = plan_runs(args, cores)
    if args.dry_run:
        for i, r in enumerate(planned, 1):
            cmd = mpirun_command(mpirun, args.binary or "hyperattn", args, r, "TMP.json")
            print(f"[{i}/{len(planned)}] {shlex.join(cmd)}")
        return 0

    binary = os.path.abspath(args.binary) if args.binary else build_binary(args.build_args)
    if not os.access(binary, os.X_OK):
        die(f"{binary} is not an executable")
    modes_known = bench_modes(binary)
    unknown = [m for m in args.modes if modes_known is not None and m not in modes_known]
    if unknown:
        log(f"warning: this hyperattn bench does not list mode(s) {', '.join(unknown)} "
            f"(it lists {', '.join(modes_known)}); those runs will be recorded as failed")

    settings = {
        "kinds": args.kinds, "modes": args.modes, "causal": args.causal, "ranks": args.ranks,
        "threadsPerRank": args.threads, "bind": args.binds, "cores": cores,
        "strongN": args.strong_n, "weakNPerRank": args.weak_n_per_rank,
        "ringN": args.ring_n or args.strong_n, "ringWeakNPerRank": args.ring_weak_n_per_rank or args.weak_n_per_rank,
        "hyperAtRingN": not args.no_hyper_at_ring_n, "heads": args.heads, "d": args.d,
        "repeats": args.repeats, "calls": args.calls, "peakMs": args.peak_ms, "errorRows": 0, "benchArgs": args.bench_arg,
        "timeoutPerRun": args.timeout_per_run, "hostfile": args.hostfile,
    }
    doc = {
        "schema": SCHEMA,
        "tool": "scripts/scaling-sweep.py",
        "date": now(),
        "updated": None,
        "finished": False,
        "elapsedSeconds": 0.0,
        "command": shlex.join([sys.executable, *sys.argv]),
        "cwd": os.getcwd(),
        "machine": machine_info(),
        "hosts": hosts or None,
        "git": git_info(),
        "binary": binary,
        "binaryInfo": binary_info(binary),
        "mpirun": {"path": mpirun, "version": mpirun_version(mpirun, env), "environment": mpi_env,
                   "extraArgs": os.environ.get("HYPERATTN_MPIRUN_ARGS") or None,
                   "opalPrefix": os.environ.get("OPAL_PREFIX")},
        "settings": settings,
        "definitions": {
            "seconds": "bench's best of --repeats calls, time of the slowest rank (MPI_Wtime around the call); "
                       "with --calls > 1 the best over the mpirun calls, whose bench row (phases, bytes...) is kept",
            "callSeconds": "each mpirun call's seconds (--calls of them), in order",
            "medianSeconds": "the median of callSeconds",
            "efficiencyMedian": "efficiency computed from medianSeconds of this run and of the baseline",
            "wallSeconds": "the whole mpirun: start-up, input generation, FMA peak measurement, all repeats "
                           "(summed over the calls)",
            "strong": "n fixed; speedup = T1/TP; efficiency = T1/(P*TP)",
            "weak": "n = nPerRank*P; efficiency = T1/TP; speedup (scaled) = P*T1/TP",
            "throughputEfficiency": "useful GFLOP/s per rank over the baseline's, (G_P/P)/(G_1/1): equals efficiency "
                                    "when the work is the same (strong) or proportional to n (hyper, weak); for ring "
                                    "in a weak sweep the work grows like n^2, so this, not T1/TP, is its efficiency",
            "peakEfficiency": "fraction of the FMA peak measured in the same run (all ranks at once) over the "
                              "baseline's: throughputEfficiency with each run's useful GFLOP/s divided by the peak "
                              "its cores gave at that moment, so a shared host's slower clocks at high P are "
                              "divided out and what remains is the code's own loss",
            "bind": "requested: auto (core when ranks*threads <= cores, else none), core or none; bindTo: what mpirun got",
            "baseline": "T1 = the P=1 run of the same (kind, mode, causal, n or nPerRank, bind, threads); "
                        "if it failed, the smallest P that succeeded (baselineRanks; then S and E are relative to it)",
            "status": "ok | failed (non-zero exit or no bench row) | timeout (killed after timeoutSeconds) | "
                      "budget (killed when --budget ran out) | skipped (not started: --budget spent)",
        },
        "runs": [],
    }

    previous: dict[tuple, dict] = {}
    if args.resume and os.path.exists(prefix + ".json"):
        try:
            old = json.load(open(prefix + ".json"))
        except (OSError, ValueError) as e:
            die(f"--resume: cannot read {prefix}.json: {e}")
        same = {k: v for k, v in old.get("settings", {}).items() if k not in ("timeoutPerRun", "ranks", "kinds", "modes", "causal", "bind")}
        same.setdefault("calls", 1)  # files from before --calls ran one call per point
        mine = {k: v for k, v in settings.items() if k not in ("timeoutPerRun", "ranks", "kinds", "modes", "causal", "bind")}
        if same != mine:
            die(f"--resume: {prefix}.json was made with other settings: "
                + ", ".join(f"{k}={same.get(k)!r} (now {mine.get(k)!r})" for k in mine if same.get(k) != mine.get(k)))
        for r in old.get("runs", []):
            if keep_on_resume(r, args.timeout_per_run):
                previous[run_key(r)] = r
        doc["date"] = old.get("date", doc["date"])
        doc["resumedFrom"] = old.get("resumedFrom", []) + [{"date": old.get("date"), "updated": old.get("updated"),
                                                           "command": old.get("command"), "git": old.get("git")}]
        log(f"resuming: {len(previous)} run(s) kept from {prefix}.json")

    for r in planned:
        kept = previous.get(run_key(r))
        doc["runs"].append(kept if kept else dict(r, status="pending"))
    # Rows of the old file that this plan does not contain (other P, modes...) are kept too.
    planned_keys = {run_key(r) for r in planned}
    doc["runs"] += [r for k, r in previous.items() if k not in planned_keys]

    todo = [r for r in doc["runs"] if r["status"] == "pending"]
    log(f"{len(doc['runs'])} run(s) planned, {len(todo)} to run; P in {args.ranks}, cores {cores}, "
        f"{args.threads} thread(s) per rank; binary {binary}; mpirun {mpirun}; writing {prefix}.json/.csv")
    write_outputs(prefix, doc)

    failures = 0
    with tempfile.TemporaryDirectory(prefix="scaling-sweep.") as tmp:
        for index, run in enumerate(todo, 1):
            label = (f"[{index}/{len(todo)}] {run['kind']} {run['mode']} {'causal' if run['causal'] else 'non-causal'} "
                     f"P={run['ranks']} n={run['n']} bind-to {run['bindTo']}")
            elapsed = time.monotonic() - started
            timeout = args.timeout_per_run
            cut_by_budget = False
            if args.budget is not None:
                left = args.budget - elapsed
                if left <= 1:
                    run.update(status="skipped", note="not started: --budget spent")
                    log(f"{label}: skipped (budget spent)")
                    write_outputs(prefix, doc)
                    continue
                if left < timeout:
                    timeout, cut_by_budget = left, True
            run["started"] = now()
            run["loadAverageBefore"] = load_average()
            run["timeoutSeconds"] = round(timeout, 1)
            log(f"{label}: running (elapsed {fmt_seconds(elapsed)})")
            # --calls separate mpirun calls; the first that fails or times out ends the point.
            calls: list[tuple[float, dict]] = []
            wall_total = 0.0
            for call in range(args.calls):
                json_path = os.path.join(tmp, f"run{index}-call{call}.json")
                cmd = mpirun_command(mpirun, binary, args, run, json_path)
                run["command"] = shlex.join(cmd)
                if call > 0 and args.budget is not None:
                    left = args.budget - (time.monotonic() - started)
                    if left < timeout:
                        timeout, cut_by_budget = max(left, 1.0), True
                code, wall, tail, timed_out = run_once(cmd, env, timeout)
                wall_total += wall
                bench = None
                if os.path.exists(json_path):
                    try:
                        bench = json.load(open(json_path))
                    except (OSError, ValueError):
                        bench = None
                if timed_out or code != 0 or not bench or not bench.get("rows"):
                    if args.calls > 1:
                        run["note"] = f"call {call + 1} of {args.calls}"
                    break
                calls.append((bench["rows"][-1].get("seconds") or float("inf"), bench))
            run["exitCode"] = code
            run["wallSeconds"] = round(wall_total, 3)
            wall = wall_total
            if len(calls) == args.calls:
                bench = min(calls, key=lambda c: c[0])[1]  # the best call's row
                run["callSeconds"] = [c[0] for c in calls]
                run["medianSeconds"] = statistics.median(run["callSeconds"])
            if timed_out:
                run["status"] = "budget" if cut_by_budget else "timeout"
                run["outputTail"] = tail[-2000:]
                failures += 1
                log(f"{label}: TIMEOUT after {fmt_seconds(wall)} ({'budget' if cut_by_budget else '--timeout-per-run'})")
            elif code != 0 or not bench or not bench.get("rows"):
                run["status"] = "failed"
                run["outputTail"] = tail[-2000:]
                failures += 1
                lines = [l.strip() for l in tail.splitlines() if l.strip() and not l.startswith("-----")]
                ours = [l for l in lines if l.startswith("hyperattn: error") or l.startswith("Error:")]
                errors = [l for l in lines if re.search(r"error", l, re.I)]
                # else mpirun's own message (its first lines say what went wrong)
                run["error"] = (ours or errors or [" ".join(lines[:2])] or ["(no output)"])[0][:300] or "(no output)"
                log(f"{label}: FAILED (exit {code}) after {fmt_seconds(wall)}: {run['error']}")
            else:
                run["status"] = "ok"
                merge_bench_row(run, bench)
                if run.get("benchRanks") not in (None, run["ranks"]):
                    run["status"] = "failed"
                    run["note"] = f"bench ran on {run['benchRanks']} rank(s), not {run['ranks']}"
                    failures += 1
            doc["elapsedSeconds"] = round(time.monotonic() - started, 1)
            write_outputs(prefix, doc)
            if run["status"] == "ok":
                extra = ""
                if run.get("speedup") is not None:
                    extra = f", speedup {run['speedup']:.2f}, efficiency {run['efficiency']:.2f}"
                sent = run.get("bytesSentMax")
                if sent:
                    extra += f", sent/rank {sent / 2**20:.1f} MiB"
                if args.calls > 1 and run.get("medianSeconds"):
                    extra += f"; median of {args.calls} calls {run['medianSeconds']:.4g} s"
                    if run.get("efficiencyMedian") is not None:
                        extra += f", efficiency {run['efficiencyMedian']:.2f}"
                log(f"{label}: {run['seconds']:.4g} s{extra} (mpirun {fmt_seconds(wall)})")

    doc["finished"] = True
    doc["elapsedSeconds"] = round(time.monotonic() - started, 1)
    write_outputs(prefix, doc)
    ok = sum(1 for r in doc["runs"] if r["status"] == "ok")
    log(f"done in {fmt_seconds(doc['elapsedSeconds'])}: {ok}/{len(doc['runs'])} ok, {failures} failed or timed out "
        f"this time; wrote {prefix}.json and {prefix}.csv")
    return 0 if ok == len(doc["runs"]) else 1


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        log("interrupted; the outputs hold every run finished so far (use --resume)")
        sys.exit(130)
