"""Regenerate the worked examples of docs/gru-math.md and the explain golden file.

The examples are the output of ``jaxgru explain`` / ``jaxgru inspect`` on the two seed models,
``docs/examples/seed1.keras`` and ``seed2.keras`` (written by Keras). Each generated part of
docs/gru-math.md sits between ``<!-- generated: NAME -->`` and ``<!-- end: NAME -->``.

Run:
    python experiments/gru_math_doc.py            # rewrite the generated parts
    python experiments/gru_math_doc.py --check    # exit 1 if anything is out of date (tests)
    python experiments/gru_math_doc.py --keras-files   # rewrite the two .keras files (Keras)
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
from pathlib import Path

from seed_questions import SEED1_WEIGHTS, SEED2_WEIGHTS

from jaxgru.cli import main as jaxgru_main

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "gru-math.md"
GOLDEN = ROOT / "tests" / "golden" / "explain_seed1.txt"
SEED1 = "docs/examples/seed1.keras"
SEED2 = "docs/examples/seed2.keras"

# name -> the jaxgru command line whose output fills that part of the doc.
COMMANDS = {
    "seed1-explain": ["explain", SEED1, "--input", "[[1],[2],[9],[8]]", "--format", "markdown"],
    "seed2-inspect": ["inspect", SEED2],
    "seed2-explain": ["explain", SEED2, "--input", "[[0.1],[0.5],[-0.3]]", "--format", "markdown"],
}
GOLDEN_COMMAND = ["explain", SEED1, "--input", "[[1],[2],[9],[8]]"]


def run_jaxgru(args: list[str]) -> str:
    """What ``jaxgru ARGS`` prints (file paths are relative to the repository root)."""
    out = io.StringIO()
    absolute = [str(ROOT / a) if a.endswith(".keras") else a for a in args]
    with contextlib.redirect_stdout(out):
        code = jaxgru_main(absolute)
    if code != 0:
        raise RuntimeError(f"jaxgru {' '.join(args)} exited with {code}")
    return out.getvalue()


def _quote(args: list[str]) -> str:
    return " ".join(f"'{a}'" if any(c in a for c in "[], ") else a for a in args)


def generated_doc(text: str) -> str:
    """``text`` with every generated part replaced by fresh output."""
    for name, args in COMMANDS.items():
        output = run_jaxgru(args).rstrip()
        if args[0] == "inspect":
            output = f"```\n{output}\n```"
        body = f"```bash\njaxgru {_quote(args)}\n```\n\n{output}\n"
        pattern = re.compile(rf"(<!-- generated: {name} -->\n).*?(<!-- end: {name} -->)", re.S)
        if not pattern.search(text):
            raise RuntimeError(f"{DOC} has no generated part {name!r}")
        text = pattern.sub(lambda m, body=body: m.group(1) + body + m.group(2), text)
    return text


def write_keras_files() -> None:
    """The two seed models, written by real Keras (needs Keras and TensorFlow)."""
    import os

    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    seeds = [
        (SEED1, (4, 1), 1, "tanh", SEED1_WEIGHTS),
        (SEED2, (3, 1), 2, "linear", SEED2_WEIGHTS),
    ]
    for path, shape, units, activation, weights in seeds:
        model = keras.Sequential(
            [keras.Input(shape), keras.layers.GRU(units, activation=activation)]
        )
        model.set_weights(weights)
        model.save(ROOT / path)


def main(argv: list[str]) -> int:
    if "--keras-files" in argv:
        write_keras_files()
    expected = {DOC: generated_doc(DOC.read_text()), GOLDEN: run_jaxgru(GOLDEN_COMMAND)}
    stale = [path for path, text in expected.items() if not path.exists()
             or path.read_text() != text]  # fmt: skip
    if "--check" in argv:
        for path in stale:
            print(f"{path.relative_to(ROOT)} is out of date: run python {Path(__file__).name}")
        return 1 if stale else 0
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(expected[path])
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
