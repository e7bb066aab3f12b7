#!/usr/bin/env python3
"""A/B startup benchmark: `pallium exec --one-shot PROFILE -- true` of two
builds, run in alternation (0.12 s apart, so one run's namespace teardown
does not land in the next), medians. Sequential batches (hyperfine's) drift
by a few ms on a 2-core machine; alternation cancels that out.

    ./extra/bench/ab-startup.py OLD/pallium NEW/pallium [RUNS] [PROFILE]

As root; each pallium needs its helpers beside it (a release build's
target/release, or a `git worktree` of the old commit built with
`cargo build --release`)."""
import statistics
import subprocess
import sys
import time


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    old, new = sys.argv[1], sys.argv[2]
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 60
    profile = sys.argv[4] if len(sys.argv) > 4 else "default"
    cmds = {name: [exe, "exec", "--one-shot", profile, "--", "true"] for name, exe in (("old", old), ("new", new))}
    times = {name: [] for name in cmds}
    for i in range(runs):
        order = list(cmds.items()) if i % 2 == 0 else list(reversed(cmds.items()))
        for name, cmd in order:
            time.sleep(0.12)
            t = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            times[name].append((time.perf_counter() - t) * 1000)
    for name, v in times.items():
        v.sort()
        print(f"{name}: median {statistics.median(v):.2f} ms  p25 {v[len(v) // 4]:.2f}  min {v[0]:.2f}  ({cmds[name][0]}, n={len(v)})")


if __name__ == "__main__":
    main()
