"""Error-bound helpers shared by the kernel tests (flash-attention's rule), and NaN-poisoned allocations.

A kernel passes when its max error against a float64 reference is at most ``factor`` times the error plain
PyTorch makes in the same dtype, plus a small per-dtype floor (read from the kernel module, where the op
declares it). The floor is a few ulps at unit scale, so it scales with the largest reference value when that
exceeds 1: a gradient of magnitude 9 (scale 1.0, head_dim 16) carries ulps 8x those of 1, and two correct
fp32 dots summed in different orders (another BLAS kernel under the interpreter, say) differ by several of
them. Where the reference is exactly 0 the floor stays the unit-scale one.
"""
import contextlib

import torch
import torch.utils.deterministic

from swin_fused.kernels.launch import ERROR_FLOOR


def max_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    return (x.double() - ref.double()).abs().max().item()


def relative_error(x: torch.Tensor, ref: torch.Tensor) -> float:
    """max |x - ref| over max |ref|: the agreement of two models' outputs, whatever their scale."""
    return max_err(x, ref) / ref.double().abs().max().clamp_min(1e-30).item()


def perturb_(model: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Every parameter moved off its init (bias tables and biases start at or near zero, norms at one, which
    would hide position and padding mistakes), in eval mode: the model an equivalence test compares."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            big = param.ndim == 1 or "relative_position_bias_table" in name
            param.add_(torch.randn(param.shape, generator=g).to(param.device, param.dtype) * (0.5 if big else 0.05))
    return model.eval()


def assert_within_torch_error(name, kernel, torch_same_dtype, ref64, dtype, factor=2.0):
    """``err(kernel) <= factor * err(torch in the same dtype) + floor[dtype] * max(1, max|ref|)``; NaN
    (unwritten) fails."""
    assert not torch.isnan(kernel).any(), f"{name}: NaN in kernel output (an element was never written)"
    k_err = max_err(kernel, ref64)
    t_err = max_err(torch_same_dtype, ref64)
    floor = ERROR_FLOOR[dtype] * max(1.0, ref64.abs().max().item() if ref64.numel() else 0.0)
    bound = factor * t_err + floor
    assert k_err <= bound, (f"{name}: kernel error {k_err:.3e} > {factor} x torch error {t_err:.3e} + floor "
                            f"{floor:.1e}")


@contextlib.contextmanager
def nan_filled_empty():
    """torch.use_deterministic_algorithms(True): torch.empty then returns NaN-filled memory, so any read of a
    buffer element the kernels did not write first (or any element left unwritten) poisons the result."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    assert torch.utils.deterministic.fill_uninitialized_memory
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)
