"""The scale benchmark (`cryoclust bench --scale`): peak memory and seconds per stage of
`cryoclust classify` at 100,000 to 1,000,000 particles.

For each size the stack is simulated once (the streaming simulator, in a child process; a
stack already in the work folder is reused when its parameters and header match), then
`python -m cryoclust classify STACK -r R` runs in a child process for each R of --rounds, each
into a fresh output folder. Measured per run: the child's peak resident memory (ru_maxrss from
wait4: the kernel's high-water mark of the process, exact; this parent stays small and never
imports torch, since exec carries the parent's own mark over), wall and CPU seconds, and the
stage timings of every round from its round.json. The bar is peak RSS <= 1.5 x the stored stack
+ 2 GiB, the stored stack being N x S x S values in the run's storage precision. A failed run
(an exit status, 137 for the OOM killer) is recorded with the last line of its stderr.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from worker.engine.bench_speed import peak_rss_bytes

GIB = 2**30
BAR_FACTOR = 1.5  # peak RSS <= BAR_FACTOR x stored stack + BAR_EXTRA (issue 10's bar)
BAR_EXTRA = 2 * GIB
# The realistic family: 10 views of the blob molecule, rotated, shifted, CTF, SNR 0.1, 64 px.
FAMILY = {"views": 10, "box": 64, "snr": 0.1, "rotate": True, "shift": 4.0, "ctf": True, "seed": 0}
STAGES = ("preprocess", "initial_labels", "train_embed", "kmeans", "refine", "averages", "umap")
DISK_MARGIN = 1.1  # the stack's bytes on disk times this, plus the STAR file, must be free

Print = Callable[[str], None]


def stored_stack_bytes(n: int, size: int, storage: str) -> int:
    from worker.engine.config import STORAGE_BYTES

    return n * size * size * STORAGE_BYTES[storage]


def bar_bytes(stored: int) -> int:
    return int(BAR_FACTOR * stored + BAR_EXTRA)


def run_measured(argv: list[str], stderr_path: Path, on_line: Print | None = None) -> dict:
    """Run argv, pass its stdout lines to on_line, and return its exit status, wall and CPU
    seconds, peak RSS and (on failure) the last line of its stderr."""
    started = time.perf_counter()
    with open(stderr_path, "w") as stderr:
        child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr, text=True)
        for line in child.stdout:
            if on_line is not None:
                on_line(line.rstrip("\n"))
        child.stdout.close()
        _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    wall = time.perf_counter() - started
    code = child.returncode if child.returncode >= 0 else 128 - child.returncode  # 137: SIGKILL
    result = {
        "exit_status": code,
        "wall_seconds": wall,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_rss_bytes": usage.ru_maxrss * 1024,  # KiB on Linux
    }
    if code != 0:
        lines = [line for line in stderr_path.read_text(errors="replace").splitlines() if line.strip()]
        killed = f"killed by {signal.Signals(-child.returncode).name}" if child.returncode < 0 else None
        result["error"] = lines[-1] if lines else killed or f"exit status {code}"
        if killed:
            result["signal"] = signal.Signals(-child.returncode).name
    return result


def _stack_matches(folder: Path, n: int, family: dict) -> bool:
    """The simulated stack in `folder` has n particles and the family's parameters."""
    from worker.engine.io.particles import ParticleStack

    try:
        params = json.loads((folder / "simulation.json").read_text())
        wanted = {
            "num": n,
            **{key: family[key] for key in ("views", "box", "snr", "rotate", "shift", "ctf", "seed")},
        }
        if any(params.get(key) != value for key, value in wanted.items()):
            return False
        with ParticleStack.open(folder / "particles.star") as stack:
            return len(stack) == n and stack.box == family["box"]
    except (OSError, ValueError, KeyError):
        return False


def simulate_argv(n: int, family: dict, out: Path) -> list[str]:
    argv = [sys.executable, "-m", "cryoclust", "simulate", "-n", str(n), "-k", str(family["views"])]
    argv += ["--box", str(family["box"]), "--snr", str(family["snr"]), "--shift", str(family["shift"])]
    argv += ["--seed", str(family["seed"]), "-q", "-o", str(out)]
    return argv + (["--rotate"] if family["rotate"] else []) + (["--ctf"] if family["ctf"] else [])


def ensure_stack(workdir: Path, n: int, family: dict, say: Print) -> dict:
    """The family's stack of n particles in workdir: reused when it matches, else simulated."""
    folder = workdir / f"stack-{n}-{family['box']}px"
    record = {"path": str(folder / "particles.star"), "folder": str(folder)}
    if _stack_matches(folder, n, family):
        say(f"N={n:,}: reusing the stack in {folder}")
        return {**record, "reused": True}
    need = DISK_MARGIN * n * family["box"] ** 2 * 4 + n * 400
    free = shutil.disk_usage(workdir).free
    if free < need:
        return {
            **record,
            "reused": False,
            "error": f"{need / GIB:.1f} GiB of disk needed in {workdir}, {free / GIB:.1f} free",
        }
    shutil.rmtree(folder, ignore_errors=True)
    say(f"N={n:,}: simulating the stack into {folder} ...")
    measured = run_measured(simulate_argv(n, family, folder), workdir / f"simulate-{n}.stderr")
    return {**record, "reused": False, **measured}


def classify_argv(
    stack: str, out: Path, rounds: int, classes: int, device: str, options: tuple[str, ...] = ()
) -> list[str]:
    return [
        *(sys.executable, "-m", "cryoclust", "classify", stack, "-o", str(out)),
        *("-r", str(rounds), "-c", str(classes), "-g", device, "-q", *options),
    ]


def read_rounds(out: Path) -> list[dict]:
    """Every round's number, seconds and stage timings, from OUT/round_*/round.json."""
    rounds = []
    for path in sorted(out.glob("round_*/round.json")):
        info = json.loads(path.read_text())
        rounds.append(
            {"round": info["round"], "seconds": info["seconds"], "timings": info.get("timings", {})}
        )
    return rounds


def stage_totals(rounds: list[dict]) -> dict[str, float]:
    """Seconds per stage summed over the rounds (preprocess and initial labels sit in the first)."""
    totals: dict[str, float] = {}
    for info in rounds:
        for stage, seconds in info["timings"].items():
            totals[stage] = totals.get(stage, 0.0) + seconds
    return totals


def scores_against_truth(truth: Path, out: Path) -> dict[str, float]:
    """ARI and NMI of a run's last round against the simulated views (junk a class of its own),
    read from the files before the bench removes them."""
    from worker.engine.bench_metrics import partition_scores
    from worker.engine.outputs import read_labels_csv
    from worker.engine.simulate import read_truth

    last = max(out.glob("round_[0-9]*"))
    return partition_scores(read_truth(truth), read_labels_csv(last / "labels.csv"))


def classify_run(
    stack: str,
    n: int,
    box: int,
    rounds: int,
    out: Path,
    classes: int,
    device: str,
    say: Print,
    options: tuple[str, ...] = (),
) -> dict:
    """One measured `cryoclust classify -r rounds [options]` into a fresh `out`."""
    from worker.engine.config import ClassifyConfig

    shutil.rmtree(out, ignore_errors=True)
    say(f"N={n:,}: classify -r {rounds} -c {classes} ...")
    measured = run_measured(
        classify_argv(stack, out, rounds, classes, device, options),
        out.parent / f"{out.name}.stderr",
        on_line=lambda line: say(f"    {line}"),
    )
    defaults = ClassifyConfig(round_num=rounds).resolved()
    size, storage = min(defaults.size, box - box % 2), defaults.storage  # as preprocess.model_size
    record = {"n": n, "box": box, "rounds": rounds, "classes": classes, "device": device, **measured}
    if measured["exit_status"] == 0:
        summary = json.loads((out / "summary.json").read_text())
        size, storage = summary["model_size"], summary["parameters"]["storage"]
        per_round = read_rounds(out)
        record.update(
            status="ok",
            method=summary["parameters"]["method"],
            total_seconds=summary["total_seconds"],
            device_peak_bytes=summary.get("device_peak_bytes"),
            timings=stage_totals(per_round),
            round_timings=per_round,
        )
    else:
        record["status"] = "failed"
    stored = stored_stack_bytes(n, size, storage)
    bar = bar_bytes(stored)
    record.update(
        model_size=size,
        storage=storage,
        stored_stack_bytes=stored,
        bar_bytes=bar,
        bar_held=measured["exit_status"] == 0 and measured["peak_rss_bytes"] <= bar,
        bench_peak_rss_bytes=peak_rss_bytes(),  # what exec could have carried into the child's peak
    )
    truth = Path(stack).parent / "truth.csv"
    if record["status"] == "ok" and truth.is_file():
        record.update(scores_against_truth(truth, out))
    peak = measured["peak_rss_bytes"] / GIB
    outcome = (
        "ok" if record["status"] == "ok" else f"FAILED ({measured['exit_status']}: {measured.get('error')})"
    )
    say(
        f"N={n:,} -r {rounds}: {outcome}, {measured['wall_seconds']:.1f} s wall, peak RSS {peak:.2f} GiB "
        f"(bar {bar / GIB:.2f} GiB: {'held' if record['bar_held'] else 'not held'})"
    )
    return record


def merge_runs(path: Path, header: dict, runs: list[dict], key=("n", "box", "rounds")) -> dict:
    """The results file with these runs in place of earlier ones of the same size and rounds,
    so that sizes can be run one at a time."""
    kept = []
    if path.is_file():
        try:
            kept = json.loads(path.read_text()).get("runs", [])
        except (OSError, ValueError):
            kept = []
    new = {tuple(run[k] for k in key) for run in runs}
    merged = [run for run in kept if tuple(run.get(k) for k in key) not in new] + runs
    merged.sort(key=lambda run: tuple(run.get(k, 0) for k in key))
    return {**header, "runs": merged}


def _gib(value) -> str:
    return "-" if value is None else f"{value / GIB:.2f}"


def _seconds(value) -> str:
    return "-" if value is None else f"{value:,.1f}"


def table(results: dict) -> str:
    lines = [
        "| N | rounds | status | wall s | CPU s | peak RSS GiB | GPU peak GiB | stored GiB | bar GiB | "
        "bar held | ARI | " + " | ".join(STAGES) + " |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---|---:|" + "---:|" * len(STAGES),
    ]
    for run in results["runs"]:
        timings = run.get("timings", {})
        lines.append(
            f"| {run['n']:,} | {run['rounds']} | {run['status']} | {_seconds(run.get('wall_seconds'))} | "
            f"{_seconds(run.get('cpu_seconds'))} | {_gib(run.get('peak_rss_bytes'))} | "
            f"{_gib(run.get('device_peak_bytes'))} | {_gib(run.get('stored_stack_bytes'))} | {_gib(run.get('bar_bytes'))} | "
            f"{'yes' if run.get('bar_held') else 'no'} | "
            f"{'-' if run.get('ari') is None else format(run['ari'], '.3f')} | "
            + " | ".join(_seconds(timings.get(stage)) for stage in STAGES)
            + " |"
        )
    return "\n".join(lines)


def estimate_table(results: dict) -> str:
    lines = [
        "| N | rounds | estimated s | without host work s | device GiB | " + " | ".join(STAGES) + " |",
        "|---:|---:|---:|---:|---:|" + "---:|" * len(STAGES),
    ]
    for run in results["runs"]:
        lines.append(
            f"| {run['n']:,} | {run['rounds']} | {_seconds(run['seconds'])} | "
            f"{_seconds(run['seconds_without_host_work'])} | {_gib(run['peak_device_bytes'])} | "
            + " | ".join(_seconds(run["timings"].get(stage)) for stage in STAGES)
            + " |"
        )
    return "\n".join(lines)


def resolve_device_in_child(requested: str) -> tuple[str, str | None]:
    """The device a run asking for `requested` gets, and the notice if it differs, decided in a
    child so that this process never imports torch (see the module docstring)."""
    code = (
        "import json, sys; from worker.engine.devices import resolve_device; "
        "d, note = resolve_device(sys.argv[1]); print(json.dumps([str(d), note]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, requested], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise ValueError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "no device")
    device, note = json.loads(done.stdout.strip().splitlines()[-1])
    return device, note


def run_scale(
    sizes: list[int],
    rounds: list[int],
    classes: int,
    device: str,
    workdir: Path,
    keep_data: bool,
    say: Print,
    family: dict = FAMILY,
    options: tuple[str, ...] = (),
) -> list[dict]:
    """Every size's stack, then its classify runs (with `options`, e.g. --no-umap); the records
    of the runs. Stacks and run folders made here are removed after each size unless keep_data
    (a reused stack stays)."""
    records = []
    workdir.mkdir(parents=True, exist_ok=True)
    for n in sizes:
        stack = ensure_stack(workdir, n, family, say)
        simulation = {
            key: stack[key] for key in ("reused", "wall_seconds", "peak_rss_bytes", "error") if key in stack
        }
        if stack.get("error") or stack.get("exit_status", 0) != 0:
            say(f"N={n:,}: no stack: {stack.get('error')}")
            for r in rounds:
                records.append(
                    {
                        "n": n,
                        "box": family["box"],
                        "rounds": r,
                        "status": "no stack",
                        "error": stack.get("error"),
                        "simulation": simulation,
                    }
                )
            continue
        for r in rounds:
            out = workdir / f"run-{n}-r{r}"
            record = classify_run(stack["path"], n, family["box"], r, out, classes, device, say, options)
            records.append({**record, "simulation": simulation})
            if not keep_data:
                shutil.rmtree(out, ignore_errors=True)
                out.parent.joinpath(f"{out.name}.stderr").unlink(missing_ok=True)
        if not keep_data and not stack["reused"]:
            shutil.rmtree(stack["folder"], ignore_errors=True)
            workdir.joinpath(f"simulate-{n}.stderr").unlink(missing_ok=True)
    return records
