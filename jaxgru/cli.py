"""The ``jaxgru`` command: train, evaluate, predict; inspect, explain; convert.

User errors (``jaxgru.errors.JaxgruError``: a bad config key, a file jaxgru cannot read, data
that does not fit; or an ``OSError`` such as a missing file) print one line to stderr and exit
with status 2; a diverged run exits with 1. Anything else is a bug in jaxgru: its traceback is
printed, then one line saying so, and the status is 70 (``EX_SOFTWARE``).
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path

import jaxgru
from jaxgru.errors import JaxgruError, RunError

BUG_EXIT_STATUS = 70  # sysexits.h EX_SOFTWARE: an internal error


def _train(args) -> int:
    from jaxgru import config
    from jaxgru.distributed import initialize_from_env, is_primary
    from jaxgru.experiment import run_dir_of, train_run

    cfg = config.load(args.config, args.set or [])
    initialize_from_env()  # a no-op unless launched as one of several processes
    results = train_run(cfg, resume=args.resume, log=lambda text: print(text, flush=True))
    if not is_primary():
        return 0
    run_dir = run_dir_of(cfg)
    print(_results_table(results))
    print(f"run directory: {run_dir}")
    if cfg["run"]["plot"]:
        print(f"loss curve:    {run_dir / 'loss_curve.png'}")
    print(f"keras model:   {run_dir / 'model.keras'}")
    return 0


def _evaluate(args) -> int:
    from jaxgru.experiment import open_run

    exp, params = open_run(args.run_dir)
    results = {
        name: exp.evaluate(params, split)
        for name, split in (("val", exp.data.val), ("test", exp.data.test))
        if len(split)
    }
    results["baselines"] = exp.data.baselines
    print(json.dumps(results, indent=1) if args.json else _results_table(results))
    return 0


def _predict(args) -> int:
    import numpy as np

    from jaxgru._files import atomic_write
    from jaxgru.experiment import predict_run

    if args.output is not None:
        _check_output(args.output, [args.input, args.run_dir], args.force)
    y = predict_run(args.run_dir, args.input)
    flat = y.reshape(len(y), -1)
    if args.output is None:
        np.savetxt(sys.stdout, flat, delimiter=",", fmt="%.7g")
    elif args.output.suffix == ".npy":
        atomic_write(args.output, lambda f: np.save(f, y))
    else:
        atomic_write(args.output, lambda f: np.savetxt(f, flat, delimiter=",", fmt="%.7g"))
    return 0


def _inspect(args) -> int:
    from jaxgru.keras_io.manifest import verify
    from jaxgru.report import inspect_report

    if args.verify:
        print(verify(args.file))
        return 0
    model, params = jaxgru.load_keras(args.file)
    print(inspect_report(model, params))
    return 0


def _explain(args) -> int:
    from jaxgru.report import explain_report, parse_input

    model, params = jaxgru.load_keras(args.file)
    x = parse_input(args.input, model)
    print(explain_report(model, params, x, args.layer, args.format))
    return 0


def _convert(args) -> int:
    from jaxgru.convert import read_model, write_model

    _check_output(args.output, [args.input], args.force)
    model, params = read_model(args.input, args.from_format, torch_prefix=args.torch_prefix)
    what = write_model(model, params, args.output, args.to_format)
    layers = ", ".join(f"{layer.name} ({type(layer).__name__})" for layer in model.layers)
    print(f"read {args.input}: {layers}")
    print(f"wrote {args.output}: {what}")
    return 0


def _check_output(output: Path, inputs: list[Path], force: bool) -> None:
    """Refuse to write ``output`` onto an input, into a run directory, or (without
    ``--force``) over any other existing file."""
    from jaxgru.run_dir import run_dir_holding

    for given in inputs:
        if given.exists() and output.exists() and output.samefile(given):
            raise RunError(f"{output} is also the input; write the output to another file")
    run = run_dir_holding(output.parent)
    if run is not None:
        raise RunError(
            f"{output} lies in the run directory {run}, whose files belong to the run; write "
            "the output outside it"
        )
    if output.is_dir():
        raise RunError(f"{output} is a folder; give a file name for the output")
    if output.exists() and not force:
        raise RunError(f"{output} already exists; pass --force to replace it")


def _results_table(results: dict) -> str:
    """``section name: value`` lines, e.g. ``test loss: 0.004``."""
    lines = []
    for section, values in results.items():
        if isinstance(values, dict):
            lines += [f"{section} {name}: {value:.6g}" for name, value in values.items()]
        else:
            lines.append(f"{section}: {values}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxgru", description=jaxgru.__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"jaxgru {jaxgru.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train a config into a run directory")
    train.add_argument("config", type=Path, help="a TOML config, e.g. configs/adding.toml")
    train.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override, e.g. train.epochs=5"
    )
    train.add_argument(
        "--resume", action="store_true", help="continue from the newest good checkpoint"
    )
    train.set_defaults(run=_train)
    evaluate = sub.add_parser("evaluate", help="the loss and metrics of a run on val and test")
    evaluate.add_argument("run_dir", type=Path)
    evaluate.add_argument("--json", action="store_true", help="print JSON")
    evaluate.set_defaults(run=_evaluate)
    predict = sub.add_parser("predict", help="a run's predictions for new input")
    predict.add_argument("run_dir", type=Path)
    predict.add_argument("input", type=Path, help=".npy (batch, time, features) or .csv")
    predict.add_argument("--output", type=Path, help=".npy or .csv; default CSV on stdout")
    predict.add_argument("--force", action="store_true", help="replace an existing --output")
    predict.set_defaults(run=_predict)
    inspect = sub.add_parser("inspect", help="a Keras file's layers, GRU settings and blocks")
    inspect.add_argument("file", type=Path, help=".keras, full-model .h5 (Keras 3 or tf_keras)")
    inspect.add_argument(
        "--verify", action="store_true",
        help="compare the file with the checksum manifest saved beside it (FILE.sha256.json)",
    )  # fmt: skip
    inspect.set_defaults(run=_inspect)
    explain = sub.add_parser("explain", help="every gate of a GRU, step by step, on an input")
    explain.add_argument("file", type=Path, help=".keras, full-model .h5 (Keras 3 or tf_keras)")
    explain.add_argument(
        "--input", required=True, help='JSON, e.g. "[[1],[2],[9],[8]]" (time, features), or .npy'
    )
    explain.add_argument("--layer", help="the GRU (or Bidirectional) to trace; default the first")
    explain.add_argument("--format", choices=("table", "json", "markdown"), default="table")
    explain.set_defaults(run=_explain)
    convert = sub.add_parser(
        "convert", help="a model between Keras, PyTorch and ONNX files, e.g. IN.keras OUT.pt"
    )
    convert.add_argument("input", type=Path, help=".keras, .h5, or .pt (nn.GRU state_dict)")
    convert.add_argument("output", type=Path, help=".keras, .weights.h5, .pt or .onnx")
    convert.add_argument("--from", dest="from_format", choices=("keras", "h5", "torch"))
    convert.add_argument("--to", dest="to_format", choices=("keras", "h5", "torch", "onnx"))
    convert.add_argument("--force", action="store_true", help="replace an existing output")
    convert.add_argument(
        "--torch-prefix", help="the nn.GRU's key prefix in a larger state_dict, e.g. 'gru.'"
    )
    convert.set_defaults(run=_convert)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``jaxgru`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    from jaxgru.train import TrainingDiverged

    try:
        return args.run(args)
    except TrainingDiverged as error:
        print(f"jaxgru: training diverged: {error}", file=sys.stderr)
        return 1
    except (JaxgruError, OSError) as error:
        print(f"jaxgru: error: {error}", file=sys.stderr)
        return 2
    except Exception:  # not a user error: show where it broke
        traceback.print_exc()
        print(
            "jaxgru: internal error: the traceback above is a bug in jaxgru, not a problem with "
            "your input; please report it with the command you ran",
            file=sys.stderr,
        )
        return BUG_EXIT_STATUS


if __name__ == "__main__":
    sys.exit(main())
