"""Strategies: one module per method, registered in :data:`STRATEGIES`."""

from clbench.strategies.base import STRATEGIES, Recipe, StrategyContext, build_strategy

__all__ = ["STRATEGIES", "Recipe", "StrategyContext", "build_strategy"]
