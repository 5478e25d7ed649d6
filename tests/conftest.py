"""Test-wide settings: float64 available (references are computed in float64) and a
derandomized hypothesis profile so CI runs the same examples every time."""

import os

# XLA's CPU compiles dominate this suite (eager per-op compiles, small jitted graphs), and
# at these sizes optimized code barely runs faster: optimization level 0 without LLVM's
# expensive passes cut a tucker + README + MPS subset from 165 to 110 CPU-seconds and the
# experiments smoke / reliability subset from 79 to 59 (numerics unchanged: every test
# still passes). XLA:CPU's MLIR fusion emitters (the default in jax 0.10) cost more to
# compile than the classic LLVM IR emitters they replace: turning them off took
# tests/tnlib/test_tucker.py from 53 to 25 s and test_tt.py + test_structured.py from 89
# to 57 s (serial, same load), again with every test passing. One codegen thread and no
# Eigen thread pool: the two xdist workers already fill both cores. Set in the
# environment, so the subprocesses that tests start (`tnlib run`, the simulated
# multi-device runs) inherit them.
_XLA_FLAGS = (
    "--xla_cpu_multi_thread_eigen=false",
    "--xla_cpu_parallel_codegen_split_count=1",
    "--xla_backend_optimization_level=0",
    "--xla_llvm_disable_expensive_passes=true",
    "--xla_cpu_use_fusion_emitters=false",
)
_given = os.environ.get("XLA_FLAGS", "")
os.environ["XLA_FLAGS"] = " ".join(
    [_given] * bool(_given) + [f for f in _XLA_FLAGS if f.split("=")[0] not in _given]
)

import jax  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

jax.config.update("jax_enable_x64", True)

# `make test` runs the "ci" profile; `make test-fast` passes --hypothesis-profile=fast
# (the same derandomized examples, fewer of them: most of a property test's time is
# compiling each new shape).
_common = dict(derandomize=True, deadline=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("ci", max_examples=12, **_common)
settings.register_profile("fast", max_examples=3, **_common)
settings.load_profile("ci")

# Modules whose tests run longest, collected first (longest first, from a serial
# `--durations=0` run of each directory with the flags above): subprocess runs, the README
# blocks, 1000-site chains, the layers trained on digits. pytest-xdist's worksteal
# scheduler hands each worker a contiguous half of the collection and idle workers steal
# from the end of the other's queue, so long tests at the front run early and the run
# ends on short ones: neither worker sits idle while the other finishes a minute-long
# test. Whole modules move, so module-scoped fixtures are set up once.
RUN_FIRST = (
    "test_exp_reliability.py",
    "test_exp_multihost.py",
    "test_exp_faults.py",
    "test_exp_multidevice.py",
    "test_exp_sweep_multidevice.py",
    "test_readme.py",
    "test_prop_grads_chains.py",
    "test_prop_riemannian_tucker.py",
    "test_structured.py",
    "test_conv_embedding.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(RUN_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(RUN_FIRST)))  # stable
