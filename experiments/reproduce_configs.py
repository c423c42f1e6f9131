"""Train every shipped config from scratch and write the table of results the README quotes.

Run:  python experiments/reproduce_configs.py [NAME ...]     (or: make results)
Writes runs/results/<name>/ (each a full run directory), docs/results.md and
docs/results/<name>.png. Without names it runs default, sine, sunspots, copy and adding.
"""

from __future__ import annotations

import platform
import shutil
import sys
import time
from pathlib import Path

import jax

import jaxgru
from jaxgru import config
from jaxgru.experiment import train_run

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ["default", "sine", "sunspots", "copy", "adding"]
# The headline of each task: the test metric and the baseline it is judged against.
HEADLINE = {
    "default": ("loss", "last_value_mse", "test MSE"),
    "sine": ("loss", "last_value_mse", "test MSE"),
    "sunspots": ("loss", "last_value_mse", "test MSE (standardised)"),
    "copy": ("accuracy", "chance_accuracy", "test accuracy on the recalled symbols"),
    "adding": ("loss", "predict_1.0_mse", "test MSE"),
}


def run(name: str) -> dict:
    cfg = config.load(ROOT / "configs" / f"{name}.toml", [
        f"run.dir='{ROOT / 'runs' / 'results' / name}'", "run.progress_bar=false",
    ])  # fmt: skip
    shutil.rmtree(cfg["run"]["dir"], ignore_errors=True)
    start = time.perf_counter()
    results = train_run(cfg, log=lambda text: None)
    results["seconds"] = time.perf_counter() - start
    plots = ROOT / "docs" / "results"
    plots.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(cfg["run"]["dir"]) / "loss_curve.png", plots / f"{name}.png")
    metric, baseline, label = HEADLINE[name]
    print(f"{name:<9} {label}: {results['test'][metric]:.4g}  baseline {baseline}: "
          f"{results['baselines'][baseline]:.4g}  ({results['epochs']} epochs, "
          f"{results['seconds']:.0f} s)", flush=True)  # fmt: skip
    return results


def table(all_results: dict[str, dict]) -> str:
    rows = [
        "| config | result | value | trivial baseline | epochs | wall time |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in all_results.items():
        metric, baseline, label = HEADLINE[name]
        rows.append(
            f"| [`configs/{name}.toml`](../configs/{name}.toml) | {label} | "
            f"{r['test'][metric]:.4g} | {baseline.replace('_', ' ')}: "
            f"{r['baselines'][baseline]:.4g} | {r['epochs']} | {r['seconds']:.0f} s |"
        )
    return "\n".join(rows)


def main(names: list[str]) -> int:
    all_results = {name: run(name) for name in names or CONFIGS}
    machine = f"{platform.processor() or platform.machine()}, {jax.device_count()} JAX device(s)"
    text = f"""# Results of the shipped configs

Produced by `python experiments/reproduce_configs.py` (jaxgru {jaxgru.__version__}, JAX
{jax.__version__}, {machine}, Python {platform.python_version()}). Each config trained from
scratch with its own seed; the test split is never seen in training. The loss curves are in
`docs/results/<config>.png`.

{table(all_results)}
"""
    if not names:
        (ROOT / "docs" / "results.md").write_text(text)
        print("wrote docs/results.md")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
