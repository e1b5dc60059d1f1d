"""Test-wide settings."""

import torch

# The test models are tiny: one intra-op thread is fastest and avoids oversubscribing the
# cores when anything else is running.
torch.set_num_threads(1)
