import pytest
import torch


@pytest.fixture
def float64():
    """Run a test in double precision (the influence tests compare to tight tolerances)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)
