"""Small fused forward + backward calls for ``compute-sanitizer`` (memcheck finds out-of-bounds accesses,
racecheck shared-memory hazards), plus a run-to-run bit comparison.

    compute-sanitizer --tool memcheck python bench/sanitize_probe.py
    compute-sanitizer --tool racecheck python bench/sanitize_probe.py

Each case covers one backward path with several windows per program forced (the launcher only groups them on
large batches, which a sanitizer would take minutes over): 7x7 fp16 (one register tile, in-register dS fold),
7x7 fp32 (32-token tiles, dS scratch), 12x12 bf16 (keys resident, per-query-tile dS fold), 12x12 bf16 forced
onto the tiled path (64-token tiles) and with dq summed in pass A (32-token tiles, dq scratch), each padded and shifted so that every gradient path, the qkv-bias reduction
included, is live. Prints which output differs between two identical
calls, if any; exits 1 then.
"""
from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "0")
os.environ["SWIN_FUSED_AUTOTUNE"] = "0"  # the launch configs below, not the autotuner's timing runs

import torch  # noqa: E402
import triton  # noqa: E402

import swin_fused  # noqa: E402
from swin_fused.kernels import window_attention_bwd as bwd_module  # noqa: E402

_HEURISTIC = bwd_module.bwd_launch_config
_TILED = triton.Config({"BLOCK": 64, "BLOCK_N": 64, "DQ_IN_PASS_A": False}, num_warps=8, num_stages=2)
_DQ_IN_PASS_A = triton.Config({"BLOCK": 32, "BLOCK_N": 32, "DQ_IN_PASS_A": True}, num_warps=8, num_stages=2)

#: (name, batch, H, W, heads, head_dim, window, dtype, backward launch config for the window)
CASES = (
    ("7x7 fp16 one-tile", 2, 30, 30, 3, 32, 7, torch.float16, _HEURISTIC),
    ("7x7 fp32 tiled", 2, 30, 30, 3, 32, 7, torch.float32, _HEURISTIC),
    ("12x12 bf16 keys resident", 1, 26, 26, 2, 32, 12, torch.bfloat16, _HEURISTIC),
    ("12x12 bf16 tiled", 1, 26, 26, 2, 32, 12, torch.bfloat16, lambda *shape: _TILED),
    ("12x12 bf16 tiled, dq in pass A", 1, 26, 26, 2, 32, 12, torch.bfloat16, lambda *shape: _DQ_IN_PASS_A),
)
WINDOWS_PER_PROGRAM = 3


def run_once(qkv, table, pad, dout, heads, window):
    leaves = [t.detach().clone().requires_grad_() for t in (qkv, table, pad)]
    out = swin_fused.window_attention(leaves[0], leaves[1], heads, window, window // 2, pad_qkv=leaves[2],
                                      backend="triton")
    out.backward(dout)
    torch.cuda.synchronize()
    return {"out": out.detach(), "dqkv": leaves[0].grad, "dtable": leaves[1].grad, "dpad": leaves[2].grad}


def main() -> int:
    if not torch.cuda.is_available():
        print("sanitize_probe: needs a CUDA GPU")
        return 2
    bwd_module._windows_per_program = lambda n_windows, num_heads: WINDOWS_PER_PROGRAM
    failed = False
    for name, B, H, W, heads, head_dim, window, dtype, launch_config in CASES:
        bwd_module.bwd_launch_config = launch_config
        g = torch.Generator().manual_seed(0)
        C = heads * head_dim
        qkv = torch.randn(B, H, W, 3 * C, generator=g).to("cuda", dtype)
        table = torch.randn((2 * window - 1) ** 2, heads, generator=g).cuda()
        pad = torch.randn(3 * C, generator=g).to("cuda", dtype)
        dout = torch.randn(B, H, W, C, generator=g).to("cuda", dtype)
        first, second = (run_once(qkv, table, pad, dout, heads, window) for _ in range(2))
        diffs = {k: (first[k].float() - second[k].float()).abs().max().item() for k in first
                 if not torch.equal(first[k], second[k])}
        finite = all(torch.isfinite(t).all().item() for t in first.values())
        failed |= bool(diffs) or not finite
        print(f"sanitize_probe {name}: {'differs ' + str(diffs) if diffs else 'bit-identical'}"
              f"{'' if finite else ', NON-FINITE values'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
