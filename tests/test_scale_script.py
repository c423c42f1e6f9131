"""experiments/scale.py (make scale) runs its measurements and renders them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.benchmark

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "scale.py"


def _point(time_steps: int, chunk: int) -> dict:
    cmd = [sys.executable, str(SCRIPT), "--memory-point", str(time_steps), str(chunk)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_memory_points_show_what_remat_saves_and_render():
    plain, remat = _point(1_000, 0), _point(1_000, 100)
    assert plain["remat_chunk"] is None and remat["remat_chunk"] == 100
    assert remat["xla_temp_mb"] < plain["xla_temp_mb"] / 3  # measured 3.6 MB against 20 MB
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import scale
    finally:
        sys.path.remove(str(SCRIPT.parent))
    report = scale.render({
        "command": "test", "device": "cpu", "jax": "x", "memory": [plain, remat],
        "speed": {"S": {"float32": 1.0, "bfloat16": 2.0, "ratio": 2.0}}, "speed_note": "note",
    })  # fmt: skip
    row = f"| 1,000 | {plain['xla_temp_mb']:.1f} MB | {remat['xla_temp_mb']:.1f} MB |"
    assert row in report
    assert "| S (32, 50, 8, 32) | 1.00 ms | 2.00 ms | 2.00x |" in report
