"""``tnlib figures``: regenerate the paper figures, running whatever results are missing.

Each figure in :data:`FIGURES` names the runs it reads (a config spec ``CONFIG[:ARG]``,
``--set`` overrides and a seed) in full and in quick mode, and a plot script
``paper_figures/<name>.py``. :func:`make_figure` first completes every run whose
directory has no ``summary.json`` (through the same code path as ``tnlib run``:
``get_task(config.task).train_and_evaluate(config, workdir)``, which resumes a partial
run from its checkpoint), then calls the script's ``plot(runs, out_dir, quick=...)``,
which only reads the run directories and writes ``<name>.png``, ``<name>.pdf`` and
``<name>.md`` (our numbers beside the paper's, with the commit and the device).

Run directories follow ``tnlib run``'s layout, ``<root>/<config stem>/<arg>/seed<k>/``;
a run with overrides gets ``<arg>+<key=value>+...`` as its argument component, so
the same result is reachable by hand with
``tnlib run CONFIG:ARG --set KEY=VALUE ... --workdir DIR`` (:meth:`RunSpec.command`).

The plot scripts ship as :mod:`tnlib.paper_figures` and the configs as
:mod:`tnlib.configs`, so this works from an installed wheel as well as a checkout.
Outputs go to ``paper_figures/out/`` in full mode (committed) and to
``paper_figures/out/quick/`` in quick mode (git-ignored) in a checkout; from an
installed wheel to ``paper_figures_out/`` (``.../quick/``) under the current directory;
``--out`` overrides both.

This module imports no JAX at import time, so ``tnlib --help`` stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from . import records, runner
from .config import ConfigError, apply_overrides, find_config, load_config, parse_spec, run_dir

__all__ = [
    "FIGURES",
    "Figure",
    "RunSpec",
    "add_parser",
    "command",
    "default_out_dir",
    "ensure_run",
    "in_checkout",
    "load_script",
    "make_figure",
]

def _scripts_dir() -> Path:
    """The folder of :mod:`tnlib.paper_figures` (``paper_figures/`` in a checkout)."""
    import tnlib.paper_figures

    return Path(tnlib.paper_figures.__file__).resolve().parent


def in_checkout() -> bool:
    """Whether tnlib runs from a source checkout (editable install) rather than a wheel."""
    return (_scripts_dir().parent / "pyproject.toml").is_file()


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One run a figure reads: ``tnlib run CONFIG[:ARG] --set OVERRIDES... --seed SEED``.

    ``config`` names a shipped config (``configs/<name>.py``, found in
    :mod:`tnlib.configs` wherever tnlib is installed) or is an absolute path.
    """

    config: str
    overrides: tuple[str, ...] = ()
    seed: int = 0

    def config_path(self) -> tuple[Path, str | None]:
        path, arg = parse_spec(self.config)
        p = Path(path)
        return (p if p.is_absolute() else find_config(path)), arg

    def workdir(self, root: str | Path) -> Path:
        """``<root>/<config stem>/<arg>[+<override>...]/seed<k>``."""
        path, arg = self.config_path()
        if self.overrides:
            arg = "+".join([arg or "default", *self.overrides])
        return run_dir(str(path), arg, self.seed, root=root)

    def load(self):
        """The config with the overrides and the seed applied."""
        path, arg = self.config_path()
        spec = f"{path}:{arg}" if arg else str(path)
        config, _, _ = load_config(spec)
        return apply_overrides(config, [*self.overrides, f"seed={self.seed}"])

    def command(self, root: str | Path = "runs") -> str:
        """The equivalent ``tnlib run`` command line."""
        parts = ["tnlib run", self.config, *(f"--set {o}" for o in self.overrides)]
        if self.seed:
            parts.append(f"--seed {self.seed}")
        if self.overrides:
            parts.append(f"--workdir {self.workdir(root)}")
        return " ".join(parts)


@dataclasses.dataclass(frozen=True)
class Figure:
    """A paper figure: its runs in full and quick mode and the paper it reproduces."""

    name: str
    paper: str
    full: tuple[RunSpec, ...]
    quick: tuple[RunSpec, ...]

    def runs(self, quick: bool) -> tuple[RunSpec, ...]:
        return self.quick if quick else self.full

    @property
    def script(self) -> Path:
        return _scripts_dir() / f"{self.name}.py"


# --------------------------------------------------------------------------- registry


def _mps_bond_dim() -> Figure:
    # The paper's two-site sweeps (three seeds where a CPU affords them), and
    # gradient-trained MPS (Adam on all cores) for comparison.
    sweep = "configs/mps_mnist_sweep.py:max_bond={}"
    full = (tuple(RunSpec(sweep.format(chi), seed=s) for chi in (10, 20) for s in range(3))
            + tuple(RunSpec(sweep.format(chi)) for chi in (40, 120))
            + tuple(RunSpec(f"configs/mps_mnist.py:chi={chi}") for chi in (10, 20, 40, 80, 120)))
    quick = tuple(
        RunSpec(sweep.format(chi), ("data.n_train=5000", "data.n_test=2000",
                                    "train.num_sweeps=1"), seed=s)
        for chi in (6, 10) for s in range(2)) + tuple(
        RunSpec(f"configs/mps_mnist.py:chi={chi},smoke",
                (f"model.bond_dim={chi}", "data.n_train=10000", "train.num_epochs=3",
                 "train.lr=0.003", "train.warmup_steps=20", "train.eval_every=50"))
        for chi in (10, 20))
    return Figure("mps_bond_dim", "Stoudenmire & Schwab 2016", full, quick)


# Residual widths per structure (the official code's 64 * scale_factor), chosen so that
# the structures' forward FLOPs overlap over about 1.5 decades within this CPU's budget
SCALING_WIDTHS = {"dense": (32, 64, 128, 256), "lowrank": (64, 128, 256, 512),
                  "kronecker": (64, 128, 256, 512, 1024), "monarch": (64, 128, 256, 512),
                  "btt": (64, 128, 256, 512, 1024), "tt": (32, 64, 128, 256)}


def _structured_scaling() -> Figure:
    # 3 seeds per point, seed-major so a grid cut short has every point at some seeds
    full = tuple(RunSpec(f"configs/scaling_mlp_mnist.py:layer={layer},width={w}", seed=s)
                 for s in range(3) for layer, ws in SCALING_WIDTHS.items() for w in ws)
    quick = tuple(RunSpec(f"configs/scaling_mlp_mnist.py:layer={layer},width={w},smoke", seed=s)
                  for s in range(2) for layer in SCALING_WIDTHS for w in (32, 64)
                  if not (layer == "monarch" and w == 32))
    return Figure("structured_scaling", "Qiu et al. 2024", full, quick)


SEARCH_ALGOS = ("tnale", "tnls", "tnga", "greedy")


def _structure_search() -> Figure:
    # TN permutation search on planted rings: 3 instances per order, 5 search seeds each;
    # seed-major, so a grid cut short still has every algorithm at some seeds
    full = tuple(RunSpec(f"configs/search_planted.py:algo={a},order={n},instance={i}", seed=s)
                 for s in range(5) for n in (4, 6, 8) for i in range(3) for a in SEARCH_ALGOS)
    quick = tuple(RunSpec(f"configs/search_planted.py:algo={a},instance={i},smoke", seed=s)
                  for s in range(2) for i in range(2) for a in SEARCH_ALGOS)
    return Figure("structure_search", "Li et al. 2023 (TnALE)", full, quick)


def _core_shapes() -> Figure:
    return Figure("core_shapes", "Ghadiri et al. 2023",
                  (RunSpec("configs/core_shapes.py"),), (RunSpec("configs/core_shapes.py:quick"),))


def _tt_layer_compression() -> Figure:
    # TensorNet's network (TT input layer), 3 seeds per point, 45 epochs: the official
    # schedule's log-spaced decay (its last 55 epochs stay at the final 1e-5);
    # seed-major, so a grid cut short has every point
    def runs(points, seeds, extra):
        return tuple(RunSpec(f"configs/tensornet_mnist.py:{p}{extra}", seed=s)
                     for s in range(seeds) for p in points)

    points = ("layer=dense", "layer=none", *(f"rank={r}" for r in (1, 2, 4, 8)),
              *(f"layer=lowrank,rank={r}" for r in (1, 2, 3)))
    return Figure("tt_layer_compression", "Novikov et al. 2015",
                  runs(points, 3, ",epochs=45"),
                  runs(("layer=dense", "layer=none", "rank=1", "rank=4", "layer=lowrank,rank=1"),
                       1, ",smoke"))


def _low_rank_training() -> Figure:
    # seed-major, so a run cut short still has every tolerance at some seeds
    full = tuple(RunSpec(f"configs/dlrt_mnist.py:{arg}", seed=s) for s in range(3)
                 for arg in ("dense", "tau=0.09", "tau=0.13", "tau=0.17"))
    # 50 epochs (the paper's 250 take about an hour a run here): 3 seeds, dense 1
    full += tuple(RunSpec(f"configs/dlrt_mnist.py:{arg},epochs=50", seed=s) for s in range(3)
                  for arg in (("dense",) if s == 0 else ()) + ("tau=0.09", "tau=0.13",
                                                                "tau=0.17"))
    # then the paper's second phase from the 50-epoch runs: 30 epochs at fixed rank
    full += tuple(RunSpec(f"configs/dlrt_mnist.py:tau={tau},epochs=50,finetune=30", seed=s)
                  for s in range(3) for tau in (0.09, 0.13, 0.17))
    quick = tuple(RunSpec(f"configs/dlrt_mnist.py:tau={tau},smoke", seed=s)
                  for tau in (0.05, 0.4) for s in range(2)) + (
        RunSpec("configs/dlrt_mnist.py:dense,smoke"),) + tuple(
        RunSpec("configs/dlrt_mnist.py:tau=0.4,smoke,finetune=1", seed=s) for s in range(2))
    return Figure("low_rank_training", "Schotthoefer et al. 2022 (DLRT)", full, quick)


def _compress_finetune() -> Figure:
    # seed-major, so a grid cut short still has every model at some seeds
    args = ("model=cnn", "model=vit", "model=vit,adapt")
    full = tuple(RunSpec(f"configs/compress_mnist.py:{a}", seed=s)
                 for s in range(3) for a in args)
    quick = tuple(RunSpec(f"configs/compress_mnist.py:{a},smoke", seed=s)
                  for s in range(2) for a in args)
    return Figure("compress_finetune", "compress-then-fine-tune; LoRA / LoTR / DoTA",
                  full, quick)


FIGURES: dict[str, Figure] = {f.name: f for f in (
    _mps_bond_dim(), _structured_scaling(), _structure_search(), _core_shapes(),
    _tt_layer_compression(), _low_rank_training(), _compress_finetune())}


# --------------------------------------------------------------------------- running


def ensure_run(spec: RunSpec, root: str | Path, *, log=print) -> Path:
    """Complete the run of ``spec`` under ``root`` unless its ``summary.json`` exists.

    A finished run whose ``config.json`` differs from what ``spec`` now gives is an
    error (the config file changed since): delete the directory to redo it.
    Returns the run directory.
    """
    from . import get_task

    workdir = spec.workdir(root)
    config = spec.load()
    want = json.loads(config.to_json())
    done = (workdir / "summary.json").is_file()
    if done and (workdir / "config.json").is_file():
        if not runner.same_config(records.read_json(workdir / "config.json"), want):
            raise ConfigError(f"{workdir} holds a finished run of a different config than "
                              f"{spec.config} now gives; delete that directory to redo it")
    if done:
        _write_model_cost(config, workdir)  # a run finished by hand may lack it
        return workdir
    task = get_task(config.task)
    task.check_config(config)
    log(f"[figures] {spec.command(root)}", flush=True)
    t0 = time.perf_counter()
    task.train_and_evaluate(config, workdir)
    log(f"[figures] done in {time.perf_counter() - t0:.1f} s: {workdir}", flush=True)
    _write_model_cost(config, workdir)
    return workdir


# Models of the classification task that count their FLOPs (``model.flops()``).
COSTED_MODELS = ("structured_mlp", "residual_mlp")


def _write_model_cost(config, workdir: Path) -> None:
    """``model_cost.json`` (forward FLOPs per example, parameters) for a classification
    run whose model counts its FLOPs (``StructuredMLP.flops()``): what the scaling
    figure reads to put training compute on its x axis. Builds the model (no training,
    no checkpoint read); a no-op for other runs or when the file exists."""
    if (config.task != "classification" or config.model.name not in COSTED_MODELS
            or (workdir / "model_cost.json").exists()):
        return
    from . import classification

    model = _build(classification, config, workdir)
    records.write_json(workdir / "model_cost.json", {
        "flops_per_example": int(model.flops()), "n_params": int(model.num_params()),
        "source": f"{type(model).__name__}.flops(): forward pass, 2 per multiply-add"})


def _build(classification, config, workdir: Path):
    meta = records.read_json(workdir / "meta.json")
    from . import data

    splits = data.from_config(config.data)
    n_classes = int(max(y.max() for _, y in splits.values())) + 1
    return classification.build_model(config.model, int(meta["n_sites"]), n_classes,
                                      config.seed)


def load_script(figure: Figure) -> ModuleType:
    """Import ``paper_figures/<name>.py`` by path."""
    path = figure.script
    if not path.is_file():
        raise ConfigError(f"figure script {path} is missing")
    spec = importlib.util.spec_from_file_location(f"tnlib_figure_{figure.name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def default_out_dir(quick: bool) -> Path:
    """In a checkout ``paper_figures/out`` (full, committed) or ``paper_figures/out/quick``
    (ignored); from an installed wheel ``paper_figures_out[/quick]`` in the current
    directory."""
    out = _scripts_dir() / "out" if in_checkout() else Path("paper_figures_out")
    return out / "quick" if quick else out


def make_figure(name: str, *, quick: bool = False, root: str | Path = "runs",
                out_dir: str | Path | None = None, plot_only: bool = False,
                allow_missing: bool = False, runs: Sequence[RunSpec] | None = None,
                log=print) -> dict[str, Path]:
    """Run what figure ``name`` is missing (unless ``plot_only``), then plot it.

    ``runs`` replaces the figure's own list (e.g. smoke-size runs in a test).
    ``allow_missing`` (with ``plot_only``) plots the runs that finished and lists the
    others, with their commands, in a "Not run" section of the ``.md``: a partial figure
    that says it is partial (e.g. the sizes a CPU could finish). At least one run must
    have finished.
    Returns ``{"png": ..., "pdf": ..., "md": ...}``, the files written to ``out_dir``
    (default :func:`default_out_dir`).
    """
    if name not in FIGURES:
        raise ConfigError(f"unknown figure {name!r}; known: {', '.join(FIGURES)}")
    figure = FIGURES[name]
    script = load_script(figure)
    specs = tuple(runs) if runs is not None else figure.runs(quick)
    t0 = time.perf_counter()
    if not plot_only:
        for spec in specs:
            spec.load()  # every config error before the first run starts
        for spec in specs:
            ensure_run(spec, root, log=log)
    else:  # runs finished by `tnlib run` may lack the files a figure derives from them
        for spec in specs:
            if (spec.workdir(root) / "summary.json").is_file():
                _write_model_cost(spec.load(), spec.workdir(root))
    found = [{"spec": s.config, "overrides": list(s.overrides), "seed": s.seed,
              "dir": s.workdir(root), "command": s.command(root)} for s in specs]
    missing = [r for r in found if not (r["dir"] / "summary.json").is_file()]
    if missing and (not allow_missing or len(missing) == len(found)):
        raise ConfigError(f"figure {name}: {len(missing)} of {len(found)} run(s) have no "
                          f"summary.json, e.g. {missing[0]['dir']}; run `tnlib figures "
                          f"{name}` without --plot-only"
                          + ("" if allow_missing else " (or plot the rest with --allow-missing)"))
    out = Path(out_dir) if out_dir is not None else default_out_dir(quick)
    out.mkdir(parents=True, exist_ok=True)
    files = script.plot([r for r in found if r not in missing], out, quick=quick)
    if missing:
        _note_missing(files["md"], missing, len(found))
    log(f"[figures] {name}: {time.perf_counter() - t0:.1f} s; wrote "
        + ", ".join(str(p) for p in files.values()), flush=True)
    return files


def _note_missing(md: Path, missing: Sequence[dict[str, Any]], total: int) -> None:
    """Append the runs a partial figure lacks (``allow_missing``) to its ``.md``."""
    lines = ["", f"## Not run ({len(missing)} of {total} runs)", "",
             "This figure is partial: it plots only the runs that finished. The missing "
             "ones, each reproducible with its command:", "",
             *(f"- `{r['command']}`" for r in missing), ""]
    md.write_text(md.read_text().rstrip("\n") + "\n" + "\n".join(lines))


# --------------------------------------------------------------------------- CLI

EPILOG = """\
examples:
  tnlib figures --list
  tnlib figures mps_bond_dim --quick       # small runs, minutes on a CPU
  tnlib figures all                         # every figure at full size (GPU)
  tnlib figures core_shapes --plot-only     # re-plot from existing run directories
  tnlib figures mps_bond_dim --plot-only --allow-missing   # plot the finished runs only

Runs land in <workdir-root>/<config>/<arg>/seed<k>/ exactly as `tnlib run` puts them;
a run directory with summary.json is reused, a partial one resumes.
"""


def add_parser(sub) -> argparse.ArgumentParser:
    """Add the ``figures`` subcommand to ``tnlib``'s subparsers ``sub``."""
    p = sub.add_parser(
        "figures", help="regenerate a paper figure (runs what is missing first)",
        description="Regenerate paper figures: complete the runs each one reads, then plot "
        "paper_figures/out/<name>.png/.pdf/.md (quick: paper_figures/out/quick/).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="*", metavar="NAME", help="figure name(s), or 'all'")
    p.add_argument("--list", action="store_true", help="list the figures and their runs")
    p.add_argument("--quick", action="store_true", help="small runs (minutes on a CPU)")
    p.add_argument("--workdir-root", default="runs", metavar="DIR",
                   help="where run directories live (default: runs)")
    p.add_argument("--out", metavar="DIR", help="output directory (default in a checkout: "
                   "paper_figures/out, or paper_figures/out/quick with --quick; from an "
                   "installed wheel: ./paper_figures_out[/quick])")
    p.add_argument("--plot-only", action="store_true",
                   help="do not run anything; plot from the existing run directories")
    p.add_argument("--allow-missing", action="store_true",
                   help="with --plot-only: plot the finished runs and list the missing ones "
                   "in the .md (a partial figure)")
    return p


def command(args: argparse.Namespace) -> int:
    """``tnlib figures``: list, or make each named figure; returns the exit status."""
    if args.list or not args.names:
        for f in FIGURES.values():
            print(f"{f.name:22s} {f.paper}: {len(f.full)} runs (quick: {len(f.quick)})")
            for spec in f.runs(args.quick) if args.list and f.name in args.names else ():
                print(f"    {spec.command(args.workdir_root)}")
        if not args.list:
            print("tnlib figures: error: give a figure name (or 'all'); see --list",
                  file=sys.stderr)
            return 2
        return 0
    names = list(FIGURES) if args.names == ["all"] else list(args.names)
    for name in names:
        if name not in FIGURES:
            raise ConfigError(f"unknown figure {name!r}; known: {', '.join(FIGURES)}, all")
    for name in names:
        make_figure(name, quick=args.quick, root=args.workdir_root, out_dir=args.out,
                    plot_only=args.plot_only, allow_missing=args.allow_missing)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tnlib.experiments.figures ...`` (same as ``tnlib figures ...``)."""
    parser = argparse.ArgumentParser(prog="tnlib")
    add_parser(parser.add_subparsers(dest="command"))
    return command(parser.parse_args(["figures", *(argv if argv is not None else sys.argv[1:])]))


if __name__ == "__main__":
    sys.exit(main())
