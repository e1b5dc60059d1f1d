"""The methods: one module (or, with helpers of its own, one sub-package) per strategy.

Each registers itself in :data:`clbench.training.STRATEGIES`, which imports every module of
this package on its first look-up. The contract they are written against (context,
recipe, step template, memory interface) is :mod:`clbench.training`.
"""
