"""Strategies: one module per method, registered in :data:`STRATEGIES`."""

from clbench.strategies.base import STRATEGIES, StrategyContext

__all__ = ["STRATEGIES", "StrategyContext"]
