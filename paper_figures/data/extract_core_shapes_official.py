"""Write ``core_shapes_official.csv`` from the official outputs of Ghadiri et al. 2023.

    git clone https://github.com/fahrbach/approximately-optimal-core-shapes OFFICIAL
    python paper_figures/data/extract_core_shapes_official.py OFFICIAL
    python -m tnlib.paper_figures.data.extract_core_shapes_official OFFICIAL  # from a wheel

For every data set of ``src/output/`` and every budget where the official repository
holds both the paper's packing solver (``algorithm-hosvd-ip``: HOSVD + integer program)
and the greedy true-loss baseline (``algorithm-rre-greedy``), one row: the two core
shapes, their solve seconds, and the relative reconstruction error (``rre``) of the
official Tucker decomposition at each shape (``tucker-decomposition-solve-results/
rank-<shape>_trial-0.txt``: tensorly HOOI, 20 iterations, random init). The figure
``core_shapes`` reads the CSV (it ships with tnlib; nothing is fetched at run time).
"""

from __future__ import annotations

import csv
import re
import sys
from pathlib import Path

DATASETS = ("cardiac-mri", "hyperspectral", "traffic", "coil-100")
FIELDS = ("dataset", "input_shape", "budget", "ip_shape", "ip_rre", "ip_seconds",
          "greedy_shape", "greedy_rre", "greedy_seconds")


def _parse(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(" ")
        out[key] = value
    return out


def _shape(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in re.findall(r"\d+", text))


def rows(root: Path):
    for ds in DATASETS:
        out = root / "src" / "output" / ds
        solves: dict[int, dict[str, dict[str, str]]] = {}
        for f in sorted((out / "core-shape-solve-results").glob("*_trial-0.txt")):
            m = re.match(r"algorithm-(.+)_budget-(\d+)_trial-0\.txt", f.name)
            if m and m.group(1) in ("hosvd-ip", "rre-greedy"):
                solves.setdefault(int(m.group(2)), {})[m.group(1)] = _parse(f)
        for budget, by_algo in sorted(solves.items()):
            if len(by_algo) < 2:
                continue
            row = {"dataset": ds, "budget": budget}
            for algo, prefix in (("hosvd-ip", "ip"), ("rre-greedy", "greedy")):
                shape = _shape(by_algo[algo]["core_shape"])
                tucker = out / "tucker-decomposition-solve-results" / (
                    "rank-" + "-".join(map(str, shape)) + "_trial-0.txt")
                if not tucker.is_file():
                    break
                row["input_shape"] = "x".join(map(str, _shape(by_algo[algo]["input_shape"])))
                row[f"{prefix}_shape"] = "x".join(map(str, shape))
                row[f"{prefix}_rre"] = float(_parse(tucker)["rre"])
                row[f"{prefix}_seconds"] = float(by_algo[algo]["solve_time_seconds"])
            else:
                yield row


def main(argv: list[str]) -> int:
    root = Path(argv[0])
    dest = Path(__file__).with_name("core_shapes_official.csv")
    with dest.open("w", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        w.writeheader()
        n = 0
        for row in rows(root):
            w.writerow(row)
            n += 1
    print(f"{n} rows -> {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
