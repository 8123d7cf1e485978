"""robustkit.memo.LastResult: reuse only for the same objects, unchanged, with the same settings."""

import torch

from robustkit.memo import LastResult


def test_a_result_is_reused_only_while_its_inputs_are_the_same_and_unchanged():
    memo, calls = LastResult(), []
    x, w = torch.randn(3), torch.randn(3)

    def twice(t: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return 2 * t * w

    first = memo(lambda: twice(x), (x,), (x, w), ("a",))
    again = memo(lambda: twice(x), (x,), (x, w), ("a",))
    assert len(calls) == 1 and torch.equal(again, first)
    again.add_(1)  # the caller's copy; what is kept is unchanged
    assert torch.equal(memo(lambda: twice(x), (x,), (x, w), ("a",)), first) and len(calls) == 1
    memo(lambda: twice(x), (x,), (x, w), ("b",))  # other settings
    assert len(calls) == 2
    y = x.clone()  # equal values, another object
    memo(lambda: twice(y), (y,), (y, w), ("b",))
    assert len(calls) == 3
    w.mul_(3)  # an in-place change of any tracked tensor
    assert torch.equal(memo(lambda: twice(y), (y,), (y, w), ("b",)), 2 * y * w) and len(calls) == 4
    memo.clear()
    memo(lambda: twice(y), (y,), (y, w), ("b",))
    assert len(calls) == 5


def test_nothing_is_reused_when_autograd_needs_the_graph_or_for_inference_tensors():
    memo, calls = LastResult(), []
    x = torch.randn(3, requires_grad=True)

    def square() -> torch.Tensor:
        calls.append(1)
        return x * x

    for _ in range(2):
        assert memo(square, (x,), (x,)).requires_grad
    assert len(calls) == 2
    with torch.no_grad():  # no graph needed: reused
        memo(square, (x,), (x,))
        memo(square, (x,), (x,))
    assert len(calls) == 3
    with torch.inference_mode():
        z = torch.randn(3)
        for _ in range(2):
            memo(lambda: (calls.append(1), z + 1)[1], (z,), (z,))
    assert len(calls) == 5


def test_one_result_is_kept_per_settings_for_the_most_recent_settings():
    """Two settings asked for in turn on the same inputs (an MnM-MOL's SENSE start and its SENSE
    anchor with another λ_S) are both reused; a third evicts the least recently used."""
    memo, calls = LastResult(slots=2), []
    x = torch.randn(3)

    def scaled(s: float) -> torch.Tensor:
        calls.append(s)
        return s * x

    for _ in range(3):
        assert torch.equal(memo(lambda: scaled(1.0), (x,), (x,), (1.0,)), x)
        assert torch.equal(memo(lambda: scaled(2.0), (x,), (x,), (2.0,)), 2 * x)
    assert calls == [1.0, 2.0]
    memo(lambda: scaled(1.0), (x,), (x,), (1.0,))  # 1.0 is now the most recent, 2.0 the oldest
    memo(lambda: scaled(3.0), (x,), (x,), (3.0,))  # evicts 2.0
    memo(lambda: scaled(1.0), (x,), (x,), (1.0,))
    memo(lambda: scaled(2.0), (x,), (x,), (2.0,))
    assert calls == [1.0, 2.0, 3.0, 2.0]
    x.add_(1)  # an in-place change invalidates every settings' result
    memo(lambda: scaled(1.0), (x,), (x,), (1.0,))
    assert calls == [1.0, 2.0, 3.0, 2.0, 1.0]
