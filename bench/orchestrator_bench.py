"""Cost of supervision: per-decision latency and wall-time ratios (learning, enforcing).

Usage: .venv/bin/python bench/orchestrator_bench.py [--reps N] [--iterations N]
       [--only micro,compileall,roundtrip,targz,gcc,git]

The default runs the micro and compileall workloads (the figures of earlier runs);
``--only`` picks sections, including:

- ``roundtrip``: a known-point open as the task sees it (a C loop timing each
  open+close with the vDSO clock), unsupervised, under the *floor* (a bare seccomp
  supervisor that answers every notification with CONTINUE, in C, same filter
  flags and SYNC_WAKE_UP) and under semtrust learning and enforcing; median, p99.
  The same for a ``mkdir`` of an existing directory (EEXIST, no event), the call
  ``mkdir -p`` and ``os.makedirs(exist_ok=True)`` make.
- ``targz`` (``tar cf - /usr/include | gzip -1``), ``gcc`` (30 generated C files,
  ``make -j1``), ``git`` (``git clone`` of a generated repository, then ``log -p``):
  macro ratios with min/median/max over the repetitions.

``SEMTRUST_NATIVE=0`` in the environment runs the same with every decision in Python.

Micro: a C loop of open("/etc/hostname")+close (python fallback without gcc).
Macro: byte-compiling a copy of the Python standard library's packages (compileall -f).
Each workload runs unsupervised, learning (producing the model) and enforcing that
model; wall times are medians of --reps runs, interleaved so that machine noise hits all
three alike; ratios are medians of per-repetition ratios. Decision latency is measured inside the
orchestrator from receiving a notification to handing the answer to the kernel.
Needs root or unprivileged user namespaces. Prints figures; never asserts.

Peers (``peers()``): the same workloads and ``tar cf - /usr/include | gzip -1``
under ``strace -f -o /dev/null`` and under fapolicyd (the Debian package, its
sample rules compiled into /etc/fapolicyd/compiled.rules, started here with
``--permissive``), next to semtrust enforcing; each is skipped with a note
where the tool is not installed or does not start. fapolicyd watches the whole
machine, so its runs are a block with the daemon up between unsupervised runs
before and after, not interleaved one by one. ``--no-peers`` skips them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from semtrust.orchestrator.domain import Domain
from semtrust.orchestrator.run import RunOptions, run_domain

C_LOOP = r"""
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>
int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 20000;
    for (long i = 0; i < n; i++) { int fd = open("/etc/hostname", O_RDONLY); close(fd); }
    return 0;
}
"""

SKIP_PARTS = {"test", "site-packages", "dist-packages", "lib-dynload", "__pycache__", "idlelib",
              "tkinter", "turtledemo", "lib2to3"}


def micro_cmd(work: Path, n: int) -> list[str]:
    gcc = shutil.which("gcc")
    if gcc:
        src = work / "loop.c"
        src.write_text(C_LOOP)
        exe = work / "loop"
        subprocess.run([gcc, "-O2", "-o", str(exe), str(src)], check=True)
        return [str(exe), str(n)]
    return ["/usr/bin/python3", "-I", "-c",
            f"import os\nfor i in range({n}): os.close(os.open('/etc/hostname', os.O_RDONLY))"]


def macro_setup(work: Path) -> Path:
    lib = Path(os.__file__).parent
    if Path("/usr/lib/python3.11").is_dir():
        lib = Path("/usr/lib/python3.11")
    tree = work / "tree"
    if tree.exists():
        shutil.rmtree(tree)
    tree.mkdir()
    for part in sorted(os.listdir(lib)):
        if part in SKIP_PARTS or part.startswith("config-") or not (lib / part).is_dir():
            continue
        shutil.copytree(lib / part, tree / part,
                        ignore=shutil.ignore_patterns("__pycache__", "test", "tests"))
    return tree


def macro_cmd(tree: Path) -> list[str]:
    py = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable
    return [py, "-I", "-m", "compileall", "-q", "-f", str(tree)]


def timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run_plain(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


class Runner:
    def __init__(self) -> None:
        self.lat: list[int] = []
        self.stats: list[dict[str, Any]] = []

    def report(self, d: Domain) -> None:
        self.lat.extend(d.latencies)
        self.stats.append(d.stats())

    def run(self, cmd: list[str], **opts: Any) -> None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        saved = os.dup(1)
        os.dup2(devnull, 1)
        try:
            code = run_domain(RunOptions(command=cmd, name=f"bench-{os.getpid()}", **opts),
                              report=self.report)
        finally:
            os.dup2(saved, 1)
            os.close(saved)
            os.close(devnull)
        if code != 0:
            raise SystemExit(f"supervised run failed ({code}): {cmd}")


def bench(label: str, cmd: list[str], work: Path, reps: int, runner: Runner,
          before: Any = None) -> dict[str, Any]:
    """Interleave unsupervised / learning / enforcing per repetition (shared noise)."""
    model = work / f"{label}.model"

    def prep() -> None:
        if before is not None:
            before()

    prep()
    runner.run(cmd, output=str(model))  # the model that the enforcing runs use
    plain, learn, enforce = [], [], []
    lat: list[int] = []
    llat: list[int] = []
    forensics = decisions = 0
    for _ in range(reps):
        prep()
        plain.append(timed(lambda: run_plain(cmd)))
        prep()
        runner.lat.clear()
        learn.append(timed(lambda: runner.run(cmd, output=str(work / "scratch.model"))))
        llat.extend(runner.lat)
        prep()
        runner.lat.clear()
        runner.stats.clear()
        enforce.append(timed(lambda: runner.run(cmd, model=str(model), enforce=True)))
        lat.extend(runner.lat)
        forensics += runner.stats[-1]["forensics"]
        decisions = runner.stats[-1]["decisions"]
    p, le, en = (statistics.median(x) for x in (plain, learn, enforce))
    return {"label": label, "plain": p, "learn": le, "enforce": en, "forensics": forensics,
            "decisions": decisions, "lat": sorted(lat), "llat": sorted(llat),
            "learn_xs": [b / a for a, b in zip(plain, learn, strict=True)],
            "enforce_xs": [b / a for a, b in zip(plain, enforce, strict=True)],
            "learn_x": statistics.median(b / a for a, b in zip(plain, learn, strict=True)),
            "enforce_x": statistics.median(b / a for a, b in zip(plain, enforce, strict=True))}


# --------------------------------------------------------------- round trip

TIMED_LOOP = r"""
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
static int cmp(const void *a, const void *b) {
    long x = *(const long *)a, y = *(const long *)b;
    return x < y ? -1 : x > y;
}
int main(int argc, char **argv) {
    long n = atol(argv[1]);
    int mk = argc > 3 && strcmp(argv[3], "mkdir") == 0;  /* else open+close */
    long *t = malloc(n * sizeof(long));
    struct timespec a, b;
    for (long i = 0; i < n; i++) {
        clock_gettime(CLOCK_MONOTONIC, &a);
        if (mk) {
            if (mkdir("/etc", 0755) == 0) return 1;  /* EEXIST, as mkdir -p meets it */
        } else {
            int fd = open("/etc/hostname", O_RDONLY);
            close(fd);
        }
        clock_gettime(CLOCK_MONOTONIC, &b);
        t[i] = (b.tv_sec - a.tv_sec) * 1000000000L + (b.tv_nsec - a.tv_nsec);
    }
    qsort(t, n, sizeof(long), cmp);
    int out = open(argv[2], O_WRONLY | O_TRUNC);
    dprintf(out, "%ld %ld\n", t[n / 2], t[n * 99 / 100]);
    close(out);
    return 0;
}
"""


def floor_run(cmd: list[str]) -> None:
    """Run ``cmd`` under a bare supervisor: open/openat notified, always CONTINUE."""
    import socket
    import threading

    from semtrust.orchestrator._decide import serve_continue
    from semtrust.sensors.seccomp import Listener, install_filter

    a, b = socket.socketpair()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child execs
        try:
            a.close()
            lfd = install_filter(["open", "openat", "mkdir", "mkdirat"])
            socket.send_fds(b, [b"l"], [lfd])
            os.close(lfd)
            b.recv(1)
            os.execv(cmd[0], cmd)
        finally:
            os._exit(127)
    b.close()
    _msg, fds, _f, _a = socket.recv_fds(a, 1, 1)
    lfd = fds[0]
    Listener(lfd).set_sync_wakeup()
    th = threading.Thread(target=serve_continue, args=(lfd,), daemon=True)
    th.start()
    a.send(b"g")
    a.close()
    _, status = os.waitpid(pid, 0)
    th.join(5)
    os.close(lfd)
    if status != 0:
        raise SystemExit(f"floor run failed ({status}): {cmd}")


def roundtrip(work: Path, n: int, reps: int, runner: Runner) -> str:
    gcc = shutil.which("gcc")
    if gcc is None:
        return "(roundtrip needs gcc)"
    src, exe, res = work / "timed.c", work / "timed", work / "timed.out"
    src.write_text(TIMED_LOOP)
    subprocess.run([gcc, "-O2", "-o", str(exe), str(src)], check=True)
    return "\n\n".join(_roundtrip_op(exe, res, work, op, n, reps, runner)
                       for op in ("open+close", "mkdir"))


def _roundtrip_op(exe: Path, res: Path, work: Path, op: str, n: int, reps: int,
                  runner: Runner) -> str:
    """One operation's round trip: ``open+close`` of a known file, or ``mkdir`` of an
    existing directory (EEXIST, no event: what ``mkdir -p`` meets)."""
    cmd = [str(exe), str(n), str(res), "mkdir" if op == "mkdir" else "open"]
    model = work / f"timed-{op}.model"

    def fresh() -> None:
        res.write_text("")  # exists and empty before every run: same point each time

    def read() -> tuple[int, int]:
        med, p99 = res.read_text().split()
        return int(med), int(p99)

    fresh()
    runner.run(cmd, output=str(model))
    rows: dict[str, list[tuple[int, int]]] = {k: [] for k in
                                              ("unsupervised", "floor", "learning",
                                               "enforcing")}
    orch: list[int] = []
    for _ in range(reps):
        fresh()
        run_plain(cmd)
        rows["unsupervised"].append(read())
        fresh()
        floor_run(cmd)
        rows["floor"].append(read())
        fresh()
        runner.run(cmd, output=str(work / "scratch.model"))
        rows["learning"].append(read())
        fresh()
        runner.lat.clear()
        runner.run(cmd, model=str(model), enforce=True)
        rows["enforcing"].append(read())
        orch.extend(runner.lat)
    floor = statistics.median(m for m, _ in rows["floor"])
    out = [f"| {op} as the task sees it | median µs (min..max over reps) | p99 µs "
           "| median / floor |", "|---|---|---|---|"]
    for k, v in rows.items():
        meds = sorted(m for m, _ in v)
        med = statistics.median(meds)
        out.append(f"| {k} | {med / 1000:.2f} ({meds[0] / 1000:.2f}..{meds[-1] / 1000:.2f}) "
                   f"| {statistics.median(p for _, p in v) / 1000:.2f} "
                   f"| {med / floor:.2f} |")
    orch.sort()
    native = "off" if os.environ.get("SEMTRUST_NATIVE") == "0" else "on"
    out.append(f"\norchestrator time per decision, enforcing (receive to answer): median "
               f"{pct(orch, 0.5):.2f} µs, p99 {pct(orch, 0.99):.2f} µs over {len(orch)} "
               f"decisions; native path {native}")
    return "\n".join(out)


# ------------------------------------------------------------- macro set

def targz_setup(work: Path) -> tuple[list[str], Any]:
    out = work / "include.tgz"
    return ["/bin/sh", "-c", f"tar cf - /usr/include 2>/dev/null | gzip -1 > {out}"], \
        lambda: out.write_bytes(b"")


GCC_FILE = """
#include <stdio.h>
#include <string.h>
int f{i}(const char *s) {{ char b[64]; snprintf(b, sizeof b, "%s{i}", s);
  return (int)strlen(b); }}
"""


def gcc_setup(work: Path) -> tuple[list[str], Any]:
    tree = work / "cbuild"

    def fresh() -> None:
        if tree.exists():
            shutil.rmtree(tree)
        tree.mkdir()
        objs = []
        for i in range(30):
            (tree / f"f{i}.c").write_text(GCC_FILE.format(i=i))
            objs.append(f"f{i}.o")
        (tree / "main.c").write_text("int f0(const char *);\nint main(void) "
                                     "{ return f0(\"x\") > 100; }\n")
        (tree / "Makefile").write_text(
            "all: prog\nprog: main.o " + " ".join(objs) + "\n\tgcc -o prog $^\n"
            "%.o: %.c\n\tgcc -O1 -c -o $@ $<\n")
    fresh()
    return ["make", "-s", "-j1", "-C", str(tree)], fresh


def git_setup(work: Path) -> tuple[list[str], Any]:
    repo, clone = work / "repo", work / "clone"
    if not repo.exists():
        env = dict(os.environ, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@b",
                   GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@b")
        subprocess.run(["git", "init", "-q", str(repo)], check=True)
        for i in range(60):
            (repo / f"f{i % 12}.txt").write_text("\n".join(f"line {j} {i}"
                                                           for j in range(200)))
            subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True, env=env)
            subprocess.run(["git", "-C", str(repo), "commit", "-qm", f"c{i}"], check=True,
                           env=env)

    def fresh() -> None:
        if clone.exists():
            shutil.rmtree(clone)
    return ["/bin/sh", "-c", f"git clone -q --no-hardlinks {repo} {clone} && "
            f"git -C {clone} log -p > /dev/null && git -C {clone} status -s"], fresh


MACROS = {"targz": targz_setup, "gcc": gcc_setup, "git": git_setup}


def pct(lat: list[int], q: float) -> float:
    return lat[min(len(lat) - 1, int(len(lat) * q))] / 1000 if lat else float("nan")


# ------------------------------------------------------------------------------ peers

TAR_GZIP = ["sh", "-c", "tar cf - /usr/include 2>/dev/null | gzip -1 > /dev/null"]
FAPOLICYD_RULES = Path("/etc/fapolicyd/compiled.rules")


@contextlib.contextmanager
def fapolicyd_running(work: Path) -> Iterator[str | None]:
    """fapolicyd in permissive mode for the block; yields None once it listens, or
    why it could not be used."""
    exe = shutil.which("fapolicyd")
    if exe is None:
        yield "not installed (apt-get install fapolicyd)"
        return
    if not FAPOLICYD_RULES.exists():
        yield (f"no {FAPOLICYD_RULES}: copy the sample rules from "
               "/usr/share/fapolicyd/sample-rules to /etc/fapolicyd/rules.d, run fagenrules")
        return
    if os.geteuid() != 0:
        yield "needs root"
        return
    log = work / "fapolicyd.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([exe, "--permissive", "--debug-deny"], stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            if b"Starting to listen" in log.read_bytes():
                break
            time.sleep(0.2)
        if proc.poll() is not None or b"Starting to listen" not in log.read_bytes():
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            yield f"did not start: {tail[0]}"
        else:
            yield None
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def peers(workloads: list[tuple[str, list[str], Callable[[], Any] | None]], work: Path,
          reps: int, enforcing: dict[str, float]) -> None:
    """Wall-time ratios to the unsupervised run for strace -f and fapolicyd, printed
    next to semtrust enforcing (``enforcing``: label -> ratio, where measured)."""
    def timed_prep(cmd: list[str], prep: Callable[[], Any] | None) -> float:
        if prep is not None:
            prep()
        return timed(lambda: run_plain(cmd))

    strace = shutil.which("strace")
    notes: list[str] = []
    if strace is None:
        notes.append("strace: not installed")
    rows: dict[str, dict[str, float]] = {}
    for label, cmd, prep in workloads:
        plain: list[float] = []
        traced: list[float] = []
        for _ in range(reps):
            plain.append(timed_prep(cmd, prep))
            if strace is not None:
                traced.append(timed_prep([strace, "-f", "-o", "/dev/null", *cmd], prep))
        rows[label] = {"plain": statistics.median(plain)}
        if traced:
            rows[label]["strace"] = statistics.median(
                b / a for a, b in zip(plain, traced, strict=True))
    with fapolicyd_running(work) as why:
        if why is not None:
            notes.append(f"fapolicyd: {why}")
        else:
            for label, cmd, prep in workloads:
                rows[label]["fapolicyd"] = statistics.median(
                    timed_prep(cmd, prep) for _ in range(reps))
    for label, cmd, prep in workloads:  # unsupervised again, with the daemon gone
        if "fapolicyd" in rows[label]:
            after = statistics.median(timed_prep(cmd, prep) for _ in range(reps))
            rows[label]["fapolicyd"] /= statistics.median([rows[label]["plain"], after])

    def x(v: float | None) -> str:
        return "–" if v is None else f"{v:.2f}x"

    print("\n| workload | unsupervised s | semtrust enforcing | fapolicyd (permissive, sample "
          "rules) | strace -f -o /dev/null |")
    print("|---|---|---|---|---|")
    for label, r in rows.items():
        print(f"| {label} | {r['plain']:.3f} | {x(enforcing.get(label))} | "
              f"{x(r.get('fapolicyd'))} | {x(r.get('strace'))} |")
    for note in notes:
        print(f"(skipped {note})")


def run_peers(reps: int, iterations: int, runner: Runner,
              results: list[dict[str, Any]]) -> None:
    """The peers table: the micro and macro workloads and tar | gzip (semtrust
    enforcing measured here for it), against strace -f and fapolicyd."""
    with tempfile.TemporaryDirectory(prefix="semtrust-peers-") as tmp:
        work = Path(tmp)
        tar = bench("tar+gzip", TAR_GZIP, work, reps, runner)
        tree = macro_setup(work)
        peers([("micro", micro_cmd(work, iterations), None),
               ("macro", macro_cmd(tree), lambda: macro_setup(work)),
               ("tar+gzip", TAR_GZIP, None)], work, reps,
              {r["label"]: r["enforce_x"] for r in [*results, tar]})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=20000)
    ap.add_argument("--no-peers", action="store_true",
                    help="skip the strace -f and fapolicyd comparison")
    ap.add_argument("--only", default="micro,compileall")
    args = ap.parse_args()
    only = set(args.only.split(","))
    runner = Runner()
    results = []
    with tempfile.TemporaryDirectory(prefix="semtrust-bench-") as tmp:
        work = Path(tmp)
        if "roundtrip" in only:
            print(roundtrip(work, args.iterations, args.reps, runner))
        if "micro" in only:
            results.append(bench("micro", micro_cmd(work, args.iterations), work, args.reps,
                                 runner))
        if "compileall" in only:
            tree = macro_setup(work)
            results.append(bench("macro", macro_cmd(tree), work, args.reps, runner,
                                 before=lambda: macro_setup(work)))
        for name in ("targz", "gcc", "git"):
            if name in only:
                cmd, before = MACROS[name](work)
                results.append(bench(name, cmd, work, args.reps, runner, before=before))
    if not results:
        return
    print("| workload | decisions/run | unsupervised s | learning s (x) | enforcing s (x) "
          "| decision median µs (learn / enforce) | p99 µs (learn / enforce) | forensics |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['label']} | {r['decisions']} | {r['plain']:.3f} | {r['learn']:.3f} "
              f"({r['learn_x']:.2f}x) | {r['enforce']:.3f} "
              f"({r['enforce_x']:.2f}x) | {pct(r['llat'], 0.5):.1f} / {pct(r['lat'], 0.5):.1f} | "
              f"{pct(r['llat'], 0.99):.1f} / {pct(r['lat'], 0.99):.1f} | {r['forensics']} |")
    print("(x = median over repetitions of the ratio to the "
          "unsupervised run of the same repetition)")
    print()
    print("| workload | learning x min / median / max | enforcing x min / median / max |")
    print("|---|---|---|")
    for r in results:
        lx, ex = sorted(r["learn_xs"]), sorted(r["enforce_xs"])
        print(f"| {r['label']} | {lx[0]:.2f} / {statistics.median(lx):.2f} / {lx[-1]:.2f} "
              f"| {ex[0]:.2f} / {statistics.median(ex):.2f} / {ex[-1]:.2f} |")
    if not args.no_peers:
        run_peers(args.reps, args.iterations, runner, results)


if __name__ == "__main__":
    main()
