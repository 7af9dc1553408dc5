"""The fit check: a run that cannot fit stops before preprocessing with one line that says what
it needs, what the machine has and what to try (memory limit lowered by the documented variable)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from cryoclust.cli import main as cli_main
from worker.engine.config import ClassifyConfig
from worker.engine.io.particles import ParticleStack
from worker.engine.memory import (
    GIB,
    MEMORY_LIMIT_ENV,
    NotEnoughMemory,
    available_bytes,
    check_fits,
    estimate,
)
from worker.engine.pipeline import classify

LINE = re.compile(
    r"^(?P<n>[\d,]+) particles at (?P<size>\d+) px need (?P<need>\d+\.\d) GiB, this machine has "
    r"(?P<has>\d+\.\d) GiB available; try (?P<advice>.+)$"
)


@pytest.fixture
def stack_path(make_mrc):
    path, _ = make_mrc("particles.mrcs", n=300, box=64, seed=1)
    return path


def test_a_run_too_large_stops_before_preprocessing_with_one_line(stack_path, tmp_path, monkeypatch):
    # A limit between what 48 px and 64 px need: the line says so and suggests 48.
    at_48 = estimate(300, 48, "reference", 128).total
    at_64 = estimate(300, 64, "reference", 128).total
    assert at_48 < at_64
    monkeypatch.setenv(MEMORY_LIMIT_ENV, str((at_48 + at_64) // 2))
    out = tmp_path / "out"
    with ParticleStack.open(stack_path) as stack:
        with pytest.raises(NotEnoughMemory) as raised:
            classify(stack, ClassifyConfig(method="reference", device="cpu"), out)
    text = str(raised.value)
    found = LINE.match(text)
    assert found, text
    assert "\n" not in text
    assert (found["n"], found["size"], found["advice"]) == ("300", "64", "--size 48")
    assert float(found["need"]) == pytest.approx(at_64 / GIB, abs=0.05)
    assert float(found["has"]) == pytest.approx((at_48 + at_64) // 2 / GIB, abs=0.05)
    assert not out.exists()  # stopped before anything was written or read

    # At 48 px the same limit lets it through.
    assert check_fits(300, 48, "reference", 128).total == at_48


def test_nothing_fits_says_so(monkeypatch):
    monkeypatch.setenv(MEMORY_LIMIT_ENV, str(100 * 2**20))
    with pytest.raises(
        NotEnoughMemory, match=r"^1,000,000 particles at 64 px need .* GiB, this machine has 0\.1 GiB"
    ):
        check_fits(1_000_000, 64, "pose", 128)
    with pytest.raises(NotEnoughMemory, match="try a subset of the particles or a machine with more memory$"):
        check_fits(1_000_000, 64, "pose", 128)


def test_a_million_particles_need_more_than_the_stack(monkeypatch):
    monkeypatch.delenv(MEMORY_LIMIT_ENV, raising=False)
    need = estimate(1_000_000, 64, "reference", 128)
    assert need.stored == 1_000_000 * 64 * 64 * 4
    assert need.total > need.stored + need.working
    room, holder = available_bytes()
    total = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0]) * 1024
    assert holder == "this machine" and 0 < room <= total


@pytest.mark.parametrize("value", ["lots", "-5", "0"], ids=["words", "negative", "zero"])
def test_a_bad_limit_is_refused_clearly(monkeypatch, value):
    monkeypatch.setenv(MEMORY_LIMIT_ENV, value)
    with pytest.raises(ValueError, match=MEMORY_LIMIT_ENV):
        available_bytes()


def test_the_command_line_exits_non_zero_with_the_one_line(stack_path, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(MEMORY_LIMIT_ENV, str(GIB // 2))
    out = tmp_path / "run"
    status = cli_main(["classify", str(stack_path), "-o", str(out), "-g", "cpu", "-q"])
    assert status == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    assert err[0].startswith("cryoclust classify: error: 300 particles at 64 px need ")
    assert "this machine has 0.5 GiB available" in err[0]
    assert not out.exists()


def test_an_ordinary_run_is_let_through(make_mrc, tmp_path, monkeypatch):
    monkeypatch.delenv(MEMORY_LIMIT_ENV, raising=False)
    path, _ = make_mrc("small.mrcs", n=40, box=16, seed=2)
    with ParticleStack.open(path) as stack:
        config = ClassifyConfig(
            method="invariant", cluster_num=2, round_num=1, size=16, device="cpu", umap=False
        )
        result = classify(stack, config, tmp_path / "ok")
    assert len(result.labels) == 40 and np.isin(result.labels, [0, 1]).all()
