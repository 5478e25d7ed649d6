"""The shipped experiment configs (``tnlib.configs``): one module per experiment.

Each defines ``get_config(arg)``; ``tnlib run NAME[:ARG]`` finds them by name wherever
tnlib is installed (``tnlib run mps_digits:smoke``), and the checkout path
(``tnlib run configs/mps_digits.py``) works too. They are loaded by path, not imported
as modules of this package.
"""
