"""Benchmarks: one module per family, registered in :data:`BENCHMARKS`."""

from clbench.datasets.base import BENCHMARKS, Benchmark, DataContext, ImageArrays, ImageSplits, load_benchmark

__all__ = ["BENCHMARKS", "Benchmark", "DataContext", "ImageArrays", "ImageSplits", "load_benchmark"]
