"""Test-wide settings: float64 available (references are computed in float64) and a
derandomized hypothesis profile so CI runs the same examples every time."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")

import jax  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

jax.config.update("jax_enable_x64", True)

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    max_examples=12,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("ci")

# Modules whose tests run longest (subprocess runs, the README tour, 1000-site chains),
# collected first. pytest-xdist's worksteal scheduler hands each worker a contiguous
# half of the collection and idle workers steal from the end of the other's queue, so
# long tests at the front run early and the run ends on short ones: neither worker
# sits idle while the other finishes a minute-long test. Whole modules move, so
# module-scoped fixtures are set up once.
RUN_FIRST = (
    "test_readme.py",
    "test_exp_multidevice.py",
    "test_exp_reliability.py",
    "test_exp_multihost.py",
    "test_prop_grads_chains.py",
    "test_exp_sweep_multidevice.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(RUN_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(RUN_FIRST)))  # stable
