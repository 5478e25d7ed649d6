"""The ``tnlib`` command line.

    tnlib run CONFIG[:ARG] [--set key=value ...] [--workdir DIR] [--seed K]
    tnlib figures NAME|all [--quick] [--workdir-root DIR] [--out DIR] [--plot-only] | --list

Errors in what was asked (unknown keys, wrong types, impossible values, missing
data sets, a run directory locked by another run) print ``tnlib: error: ...`` to
stderr and exit with status 2; a diverged run or a checkpoint that does not fit the
model exits with status 1. A corrupt checkpoint that was set aside prints
``tnlib: warning: ...`` and the run goes on from the previous one.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence

from . import TASKS, get_task
from .config import ConfigError, apply_overrides, load_config, run_dir
from .data import DataUnavailableError
from .records import CheckpointError, CheckpointWarning, MetricsWarning, RunLockedError

__all__ = ["build_parser", "main", "run"]

RUN_EPILOG = """\
CONFIG is a Python file defining get_config(arg), or the name of a config that
ships with tnlib (tnlib.configs: mps_digits, mps_mnist, search_planted, ...);
ARG (after the colon) is a comma-separated list of that config's options, e.g.
`smoke` or `chi=20,smoke`. Each config's docstring lists its options.

examples:
  tnlib run mps_digits                               # the demo (digits, MPS classifier)
  tnlib run mps_digits:smoke                         # a few seconds
  tnlib run path/to/my_config.py:smoke               # your own config file
  tnlib run configs/mps_mnist.py:chi=20 --set train.lr=2e-3 --set train.num_epochs=5
  tnlib run configs/mps_digits.py --print-config     # show the keys --set accepts

The run directory (default runs/<config>/<arg or default>/seed<k>/) receives
config.json, meta.json (tnlib version, git commit, package versions), metrics.jsonl, checkpoints/,
summary.json and curves.png. Running the same command again resumes from the latest
checkpoint (a corrupt one is reported and set aside, and the previous one is used); a
finished run is only re-evaluated. While a run works, run.lock in its directory keeps a
second run on the same directory out.
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``tnlib`` and its subcommands."""
    parser = argparse.ArgumentParser(
        prog="tnlib",
        description="tnlib: tensor networks for machine learning in JAX. "
        "Run configured experiments; see `tnlib run --help`.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run_p = sub.add_parser(
        "run",
        help="train and evaluate a configured experiment (resumes when run again)",
        description="Train and evaluate the experiment a config file describes.",
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run_p.add_argument("config", metavar="CONFIG[:ARG]",
                       help="config file or shipped config name, and its argument")
    run_p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field by dotted key, e.g. --set train.lr=3e-3 "
        "(repeatable; values must match the field's type)",
    )
    run_p.add_argument("--workdir", metavar="DIR", help="run directory (overrides the default)")
    run_p.add_argument("--seed", type=int, metavar="K", help="shortcut for --set seed=K")
    run_p.add_argument(
        "--print-config",
        action="store_true",
        help="print the final config and run directory, then exit without training",
    )
    from .figures import add_parser as add_figures_parser  # light: no JAX at import

    add_figures_parser(sub)
    return parser


def run(args: argparse.Namespace) -> int:
    """``tnlib run``: resolve the config, check it, and hand it to its task."""
    config, path, arg = load_config(args.config)
    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    config = apply_overrides(config, overrides)
    task_name = config.get("task")
    if task_name not in TASKS:
        raise ConfigError(f"task={task_name!r} is not one of {', '.join(sorted(TASKS))}")
    task = get_task(task_name)
    if config.get("mesh") is not None:  # before anything touches the devices
        from .sharding import initialize_distributed

        initialize_distributed()
    task.check_config(config)
    if args.workdir is not None and not args.workdir.strip():
        raise ConfigError("--workdir is empty; pass a directory, or leave --workdir out for "
                          "the default runs/<config>/<arg>/seed<k>/")
    workdir = args.workdir or run_dir(path, arg, config.get("seed", 0))
    if args.print_config:
        print(config)
        print(f"workdir: {workdir}")
        return 0
    print(f"workdir: {workdir}", flush=True)
    task.train_and_evaluate(config, workdir)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tnlib`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    with warnings.catch_warnings():
        show = warnings.showwarning

        def showwarning(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, CheckpointWarning | MetricsWarning):
                print(f"tnlib: warning: {message}", file=sys.stderr, flush=True)
            else:
                show(message, category, filename, lineno, file, line)

        warnings.showwarning = showwarning
        return _main(args)


def _main(args: argparse.Namespace) -> int:
    try:
        if args.command == "figures":
            from .figures import command

            return command(args)
        return run(args)
    except (ConfigError, DataUnavailableError, RunLockedError) as e:
        print(f"tnlib: error: {e}", file=sys.stderr)
        return 2
    except (FloatingPointError, CheckpointError) as e:
        print(f"tnlib: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # the disk: full, read-only, removed under the run
        print(f"tnlib: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("tnlib: interrupted; run the same command again to resume from the last "
              "checkpoint", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
