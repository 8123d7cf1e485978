import numpy as np
import pytest
import torch


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def random_complex(shape, dtype=torch.complex64, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    real_dtype = torch.float64 if dtype == torch.complex128 else torch.float32
    return torch.complex(torch.randn(shape, generator=g, dtype=real_dtype), torch.randn(shape, generator=g, dtype=real_dtype))
