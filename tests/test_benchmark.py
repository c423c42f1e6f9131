"""experiments/benchmark.py's smoke mode: every peer runs every mode, and they agree.

Timings are not checked here (machines are noisy); `make bench` measures them.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.benchmark

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "benchmark.py"


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "smoke.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--json", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout, json.loads(out.read_text())


def test_every_peer_runs_every_mode_and_agrees(smoke):
    stdout, results = smoke
    bench = _load_benchmark()
    assert "all peers agree" in stdout
    assert set(results) == set(bench.MODES)
    for mode, peers in bench.MODES.items():
        by_peer = results[mode]["smoke"]
        assert set(by_peer) == set(peers)
        for peer, m in by_peer.items():
            assert len(m["prediction"][0]) == bench.SIZES["smoke"][0], peer
            assert np.isfinite(m["loss0"][0]) and m["loss0"][0] > 0, peer
            assert m["train_ms"][0] > 0 and m["infer_ms"][0] > 0, peer
    assert bench.disagreements(results) == []


def test_the_agreement_check_can_fail(smoke):
    _, results = smoke
    bench = _load_benchmark()
    broken = copy.deepcopy(results)
    broken["masked"]["smoke"]["keras_jax"]["prediction"][0][1] += 1e-2
    broken["base"]["smoke"]["torch"]["loss0"][0] *= 1.01
    problems = sorted(bench.disagreements(broken))
    assert len(problems) == 2
    assert problems[0].startswith("base smoke torch: loss0 differs by")
    assert problems[1].startswith("masked smoke keras_jax: prediction differs by")


def test_report_has_a_table_per_mode_and_every_target(smoke):
    _, results = smoke
    bench = _load_benchmark()
    text = bench.report(results, "python experiments/benchmark.py --smoke", rounds=1)
    for label in bench.LABELS.values():
        assert f"| {label} | smoke |" in text
    assert text.count("(target ≤") == 3 + 3  # base: train, infer, first call; one per mode
    assert "## The oneDNN kernel against the XLA path" in text
    assert "base at smoke: XLA" in text


def test_the_onednn_decision_rule_reads_the_train_step_at_m_and_l():
    bench = _load_benchmark()

    def results(speedups):  # size -> XLA ms / oneDNN ms
        def peer(train):
            return {"train_ms": [train], "infer_ms": [1.0]}

        return {
            "base": {
                size: {"jaxgru": peer(10.0 * s), "jaxgru_onednn": peer(10.0)}
                for size, s in speedups.items()
            }
        }

    met = bench.onednn_decision(results({"S": 0.5, "M": 1.3, "L": 2.0}))
    assert "Verdict: **met**" in met[0]
    assert any("base at M: XLA 13.00 ms, jaxgru, oneDNN kernel 10.00 ms" in line for line in met)
    for slow in ({"M": 1.29, "L": 2.0}, {"M": 2.0, "L": 1.0}):
        assert "Verdict: **not met**" in bench.onednn_decision(results(slow))[0]
    assert bench.onednn_decision({"masked": {"M": {"jaxgru": {}}}}) == []
