"""Device selection: full fp32 on CUDA (TF32 off), clear refusals."""

import pytest
import torch

from robustkit.device import full_fp32, resolve_device
from robustkit.errors import RobustkitError

NEW_API = hasattr(getattr(torch.backends.cudnn, "conv", None), "fp32_precision")


def _allow_tf32(allowed: bool) -> None:
    """Set PyTorch's TF32 flags for cuDNN and matmuls, through the API this torch has."""
    if NEW_API:
        value = "tf32" if allowed else "ieee"
        torch.backends.cudnn.conv.fp32_precision = torch.backends.cudnn.rnn.fp32_precision = value
        torch.backends.cuda.matmul.fp32_precision = value
    else:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = allowed


def _tf32_allowed() -> tuple[bool, bool]:
    """(cuDNN convolutions, CUDA matmuls) may use TF32."""
    if NEW_API:
        return torch.backends.cudnn.conv.fp32_precision == "tf32", torch.backends.cuda.matmul.fp32_precision == "tf32"
    return torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32


@pytest.fixture
def tf32_default():
    """Start from PyTorch's default for convolutions (TF32 allowed) and put the flags back after."""
    if NEW_API:
        b = torch.backends
        saved = (b.cudnn.conv.fp32_precision, b.cudnn.rnn.fp32_precision, b.cuda.matmul.fp32_precision)
    else:
        saved = _tf32_allowed()
    _allow_tf32(True)
    yield
    if NEW_API:
        b.cudnn.conv.fp32_precision, b.cudnn.rnn.fp32_precision, b.cuda.matmul.fp32_precision = saved
    else:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_full_fp32_turns_tf32_off_for_convolutions_and_matmuls(tf32_default):
    assert _tf32_allowed() == (True, True)
    full_fp32()
    assert _tf32_allowed() == (False, False)


def test_resolve_device_cuda_sets_full_fp32(monkeypatch, tf32_default):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("cuda").type == "cuda"
    assert _tf32_allowed() == (False, False)


def test_resolve_device_cpu_leaves_the_flags_alone(monkeypatch, tf32_default):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto").type == "cpu"
    assert _tf32_allowed() == (True, True)


def test_cuda_without_a_gpu_is_refused_in_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RobustkitError, match="no CUDA device is available; use --device cpu"):
        resolve_device("cuda")
