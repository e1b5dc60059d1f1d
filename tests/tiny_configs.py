"""Experiment configs small enough for a CLI test: two seeds of fine-tuning on a tiny synthetic stream."""

TWO_SEED_GRID = """\
name: tiny
benchmarks: [{name: synthetic, args: {n_tasks: 2, n_classes: 4, train_per_class: 8, test_per_class: 2}}]
strategies: [finetune]
seeds: [1, 2]
backbone: {name: mlp, args: {hidden: [4]}}
training: {epochs: 1, batch_size: 8}
device: cpu
"""
