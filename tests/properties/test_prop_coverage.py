"""Every public function of the covered modules has a property test.

To cover a new module: add it to ``MODULES`` (its short name is the part after the
last dot, ``tnlib.models`` -> ``models``) and mark its property tests with
``@covers("<short>.<name>", ...)`` (``props.covers``) in a ``test_prop_*.py`` file here.
"""

import importlib
import pathlib

from props import COVERED

MODULES = [
    "tnlib.tt", "tnlib.tucker", "tnlib.tree", "tnlib.cp", "tnlib.tr", "tnlib.network",
    "tnlib.btt", "tnlib.linalg", "tnlib.riemannian", "tnlib.sweep", "tnlib.sweep_born",
    "tnlib.serialize", "tnlib.struct", "tnlib.search", "tnlib.models", "tnlib.dlrt",
    "tnlib.optim",
]

HERE = pathlib.Path(__file__).parent


def test_every_public_function_has_a_property_test():
    for path in sorted(HERE.glob("test_prop_*.py")):
        importlib.import_module(path.stem)  # registers its @covers marks
    missing, unknown = [], []
    public = set()
    for name in MODULES:
        mod = importlib.import_module(name)
        short = name.rsplit(".", 1)[-1]
        assert hasattr(mod, "__all__"), f"{name} has no __all__"
        for fn in mod.__all__:
            public.add(f"{short}.{fn}")
            if f"{short}.{fn}" not in COVERED:
                missing.append(f"{short}.{fn}")
    shorts = {m.rsplit(".", 1)[-1] for m in MODULES}
    unknown = [n for n in COVERED if n.split(".")[0] in shorts and n not in public]
    assert not missing, f"public functions without a property test: {missing}"
    assert not unknown, f"@covers names that are not public: {unknown}"
