"""`cryoclust bench --scale`: the measuring harness end to end on a tiny stack, its child
measurements, and the GPU estimate on paper."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from cryoclust.cli import parse_args
from worker.engine import bench_estimate as est
from worker.engine import bench_scale as scale
from worker.engine import likelihood, pose, poses
from worker.engine.commands import bench

GIB = 2**30


def test_scale_bench_end_to_end_writes_peak_memory_stage_timings_and_the_bar(tmp_path, capsys):
    out, work = tmp_path / "results", tmp_path / "work"
    argv = ["bench", "--scale", "-g", "cpu", "--sizes", "200", "--rounds", "0,1", "--classes", "2"]
    argv += ["--box", "24", "-o", str(out), "--workdir", str(work), "--no-umap"]  # numba: 25 s a child
    assert bench.main(parse_args(argv)) == 0
    printed = capsys.readouterr().out
    assert "N=200 -r 0: ok" in printed and "N=200 -r 1: ok" in printed

    results = json.loads((out / "scale-cpu.json").read_text())
    assert results["device"] == "cpu" and results["family"]["box"] == 24
    runs = {run["rounds"]: run for run in results["runs"]}
    assert sorted(runs) == [0, 1]
    for rounds, run in runs.items():
        assert run["status"] == "ok" and run["exit_status"] == 0
        assert run["peak_rss_bytes"] > 100 * 2**20  # a Python process that imported torch
        assert run["bench_peak_rss_bytes"] > 0
        assert run["wall_seconds"] > 0 and run["cpu_seconds"] > 0
        assert run["stored_stack_bytes"] == 200 * 24 * 24 * 2  # float16 at the model size 24
        assert run["bar_bytes"] == int(1.5 * run["stored_stack_bytes"] + 2 * GIB)
        assert run["bar_held"] is (run["peak_rss_bytes"] <= run["bar_bytes"])
        assert {"preprocess", "initial_labels", "averages"} <= set(run["timings"])
        assert "umap" not in run["timings"]  # --no-umap reached the child
        assert [r["round"] for r in run["round_timings"]] == ([0] if rounds == 0 else [1])
        assert 0.0 <= run["nmi"] <= 1.0 and -1.0 <= run["ari"] <= 1.0  # scored against truth.csv
    assert {"train_embed", "kmeans"} <= set(runs[1]["timings"])
    assert "train_embed" not in runs[0]["timings"]
    assert not any(work.iterdir())  # stacks and runs made here are removed without --keep-data

    estimate = json.loads((out / "scale-gpu-estimate.json").read_text())
    assert estimate["estimate"] is True and estimate["assumptions"]["peak_flops"] > 0
    assert [(r["n"], r["rounds"]) for r in estimate["runs"]] == [(200, 0), (200, 1)]
    assert "GPU (estimate, not measured)" in printed


def test_a_failed_or_killed_child_is_recorded_with_its_last_stderr_line(tmp_path):
    failed = scale.run_measured(
        [sys.executable, "-c", "import sys; print('first', file=sys.stderr); sys.exit('out of luck')"],
        tmp_path / "failed.stderr",
    )
    assert failed["exit_status"] == 1 and failed["error"] == "out of luck"
    killed = scale.run_measured(
        [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"],
        tmp_path / "killed.stderr",
    )
    assert killed["exit_status"] == 137 and killed["signal"] == "SIGKILL"
    assert killed["error"] == "killed by SIGKILL"


def test_peak_memory_is_the_childs_high_water_mark(tmp_path):
    """Measured from a small parent, as the bench is (it never imports torch): the kernel's mark
    of a child starts from its parent's resident memory at the spawn, and this test's own
    process (pytest with torch loaded) can be larger than the child measured."""
    child = "b = bytearray(400 * 2**20); b[::4096] = b'x' * len(b[::4096]); del b; print('done')"
    bench = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from worker.engine import bench_scale as scale\n"
        "lines = []\n"
        f"m = scale.run_measured([sys.executable, '-c', {child!r}], Path(sys.argv[1]), lines.append)\n"
        "print(json.dumps([lines, m['peak_rss_bytes']]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", bench, str(tmp_path / "x.stderr")], capture_output=True, text=True, check=True
    )
    lines, peak = json.loads(done.stdout.strip().splitlines()[-1])
    assert lines == ["done"]
    assert 400 * 2**20 < peak < 600 * 2**20  # freed before exit, still counted


def test_a_matching_stack_is_reused_and_another_family_is_not(tmp_path):
    family = {**scale.FAMILY, "box": 24}
    said = []
    first = scale.ensure_stack(tmp_path, 50, family, said.append)
    assert first["reused"] is False and first["exit_status"] == 0
    again = scale.ensure_stack(tmp_path, 50, family, said.append)
    assert again["reused"] is True and "reusing" in said[-1]
    assert not scale._stack_matches(tmp_path / "stack-50-24px", 50, {**family, "views": 4})
    assert not scale._stack_matches(tmp_path / "stack-50-24px", 60, family)


def test_results_merge_by_size_so_sizes_can_run_one_at_a_time(tmp_path):
    path = tmp_path / "scale-cpu.json"
    path.write_text(
        json.dumps(
            {"runs": [{"n": 1000, "box": 64, "rounds": r, "status": "ok", "seconds": r} for r in (0, 1)]}
        )
    )
    merged = scale.merge_runs(
        path,
        {"device": "cpu"},
        [{"n": 1000, "box": 64, "rounds": 1, "status": "failed"}, {"n": 10, "box": 64, "rounds": 0}],
    )
    assert merged["device"] == "cpu"
    assert [(r["n"], r["rounds"], r.get("status")) for r in merged["runs"]] == [
        (10, 0, None),
        (1000, 0, "ok"),
        (1000, 1, "failed"),
    ]


def test_e_step_flops_match_a_hand_count():
    # 512 particles (one batch), 2 classes scored, 24 angles, 32 px, float16: by hand.
    shifts = (2 * poses.SHIFT_RADIUS + 1) ** 2
    fft32 = 2.5 * 1024 * 10  # 2.5 N log2 N, N = 32 x 32
    fft64 = 2.5 * 4096 * 12
    bank = 2 * 24 * (2 * fft32 + 2 * fft64 + 80 * 1024 + fft32)  # rotate each template, its power
    filtering = 512 * (2 * fft32 + 6 * 544)  # 544 = 32 x 17 rfft2 coefficients
    cross = 2 * 512 * 2 * 24 * shifts * 1024  # the matmul: particles x classes x angles x shifts x pixels x 2
    norm = 2 * 512 * 2 * 24 * 544
    scores = 6 * 512 * 2 * 24 * shifts
    ctfs = 512 * 544 * (2 * 3 + est.SINE_FLOPS)  # computed on the device when read
    work = est.expectation(512, 2, 2, 24, 32, 2, est.ASSUMED)
    assert work.flops == pytest.approx(bank + filtering + cross + norm + scores + ctfs, rel=1e-12)
    assert cross / work.flops > 0.9  # the product is the E-step's cost
    assert work.host_seconds == 0.0 and work.pcie_bytes == 0  # nothing per batch through the host


def test_flop_count_is_linear_in_n():
    def flops(n: int) -> float:
        return sum(work.flops for work in est.stage_work(n, 10, 1, 64, 64, 2).values())

    # Past every sample size (PCA, KMeans seeding, round 1's EM) the cost per particle is fixed.
    step = 200 * likelihood.BATCH
    one, two, three = flops(step), flops(2 * step), flops(3 * step)
    assert three - two == pytest.approx(two - one, rel=1e-9)
    e_step = [est.expectation(n, 10, 10, 48, 32, 2, est.ASSUMED).flops for n in (0, step, 2 * step)]
    assert e_step[2] - e_step[0] == pytest.approx(2 * (e_step[1] - e_step[0]), rel=1e-12)


def test_work_seconds_is_a_roofline_plus_host_transfers_and_launches():
    a = est.ASSUMED
    compute = est.Work(flops=a.peak_flops * a.compute_efficiency)
    assert compute.seconds() == pytest.approx(1.0)
    memory = est.Work(flops=1.0, bytes=2 * a.memory_bandwidth * a.memory_efficiency)
    assert memory.seconds() == pytest.approx(2.0)
    extra = est.Work(pcie_bytes=a.pcie_bandwidth * a.pcie_efficiency, launches=1000, host_seconds=0.5)
    assert extra.seconds() == pytest.approx(1.0 + 1000 * a.launch_seconds + 0.5)


def test_gpu_estimate_has_the_runs_stages_and_grows_with_n():
    small, large = est.gpu_estimate(100_000, 10, 1, 64), est.gpu_estimate(1_000_000, 10, 1, 64)
    assert small["estimate"] is True
    assert set(small["timings"]) == {
        "preprocess",
        "initial_labels",
        "train_embed",
        "kmeans",
        "refine",
        "averages",
    }
    assert set(est.gpu_estimate(100_000, 10, 0, 64)["timings"]) == {
        "preprocess",
        "initial_labels",
        "averages",
    }
    # ten times the particles: every pass over the stack ten times longer, round 1's starts
    # (on a sample of at most 20,000 particles) the same
    assert large["seconds"] > 4 * small["seconds"] > 0
    assert 0 < large["seconds_without_host_work"] < large["seconds"]
    # the device holds at least the stored float16 stack
    assert large["peak_device_bytes"] > 1_000_000 * 64 * 64 * 2


def test_estimate_only_writes_the_gpu_estimate_and_runs_nothing(tmp_path, capsys):
    argv = ["bench", "--scale", "--estimate-only", "--sizes", "100000,1000000", "-o", str(tmp_path)]
    assert bench.main(parse_args(argv)) == 0
    assert not (tmp_path / "scale-cpu.json").exists()
    results = json.loads((tmp_path / "scale-gpu-estimate.json").read_text())
    assert [(r["n"], r["rounds"]) for r in results["runs"]] == [
        (100_000, 0),
        (100_000, 1),
        (1_000_000, 0),
        (1_000_000, 1),
    ]
    assert all(r["estimate"] and r["storage"] == "float16" and r["model_size"] == 64 for r in results["runs"])
    assert "not measured" in results["note"]


def test_a_runs_last_round_is_scored_against_the_truth(tmp_path):
    from worker.engine.outputs import write_labels_csv
    from worker.engine.simulate import simulate, write_simulation

    sim = simulate(n=40, k=2, box=16, snr=1.0, seed=3)
    paths = write_simulation(sim, tmp_path / "stack")
    names = [f"{i + 1:06d}@particles.mrcs" for i in range(40)]
    (tmp_path / "out" / "round_01").mkdir(parents=True)
    (tmp_path / "out" / "round_02").mkdir()
    write_labels_csv(tmp_path / "out" / "round_01" / "labels.csv", np.zeros(40, dtype=np.int64), names)
    write_labels_csv(tmp_path / "out" / "round_02" / "labels.csv", 1 - sim.views, names)  # classes swapped
    scores = scale.scores_against_truth(paths["truth"], tmp_path / "out")
    assert scores["ari"] == pytest.approx(1.0) and scores["nmi"] == pytest.approx(1.0)  # the last round's


def test_the_likelihood_step_is_estimated_at_its_most_iterations():
    n, k = 100_000, 10
    fine = est.angle_count(poses.FINE_STEP)
    full = est.expectation(n, k, k, fine, 32, 2, est.ASSUMED).flops  # an E-step over every class
    pruned = est.expectation(n, k, poses.PRUNE_CLASSES, fine, 32, 2, est.ASSUMED).flops
    step = est.gpu_estimate(n, k, 1, 64)["stages"]["refine"]["flops"]
    # the first iteration scores every class, the later ones the likeliest few; each adds an
    # M-step and a fit on a sample, so the step costs more than its E-steps alone
    e_steps = full + (pose.REFINE_ITERATIONS - 1) * pruned
    assert e_steps < step < e_steps + pose.REFINE_ITERATIONS * full
