"""Example-influence estimators: a functional core over ``torch.func`` and thin estimators."""
