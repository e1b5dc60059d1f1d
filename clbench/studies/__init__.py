"""Studies and benches: code that trains and measures, built on clbench's public names.

``influence_fidelity`` (``clbench influence-bench``: estimators against a reference on a
trained model, HYDRA's fidelity), ``influence_agreement`` (``clbench influence-agreement``:
two estimators inside MetaSP's training), ``speed`` (``clbench bench step | loop | ihvp``)
and ``bench_all`` (``clbench bench all``). The influence library (:mod:`clbench.influence`)
imports nothing of this room or of training.
"""
