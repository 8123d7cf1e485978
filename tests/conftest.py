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


@pytest.fixture
def toy_data(tmp_path):
    """Two 16×16 slices with 3 coils, split ``test`` (:func:`robustkit.data.toy.toy_dataset`)."""
    from robustkit.data.toy import toy_dataset

    return str(toy_dataset(tmp_path / "toy.h5", n=2, shape=(16, 16), coils=3))


@pytest.fixture
def sense_solve_calls(monkeypatch):
    """A list that grows by one at every CG SENSE solve (``robustkit.physics.sense.sense_solve``,
    which ``sense_init`` calls), for tests of what is solved and what is remembered."""
    import robustkit.physics.sense as sense

    calls: list[int] = []
    solve = sense.sense_solve
    monkeypatch.setattr(sense, "sense_solve", lambda *a, **k: calls.append(1) or solve(*a, **k))
    return calls
