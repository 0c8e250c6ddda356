"""torch.distributed on the CPU (gloo, 2 processes): DDP and FSDP train a swin_fused model like one process does.

One launch of two worker processes (this file, run as a script) trains, in turn:

- DDP, torch backend: two SGD steps on a small two-stage model whose maps need padding and shifting;
- DDP, triton backend (Triton's interpreter on the CPU): the same on a one-stage model, small enough for it;
- FSDP2 (``torch.distributed.fsdp.fully_shard``, which supports CPU / gloo), torch backend: every block and the
  root sharded.

Each rank takes its half of a fixed global batch. The test process runs the same steps on the whole batch in
one process with the torch backend; gradients of both steps and the parameters after them must agree (up to
the order of the gradient all-reduce, and fp32 rounding between the backends). DDP replicas must stay bit-identical across ranks, and rank 0's ``save_checkpoint`` of
the DDP-wrapped model must load back into a plain model bit for bit; FSDP's full state dict must load strictly.

Rendezvous goes through a file store in the test's tmp dir (no port to race for); every collective has a
timeout and the test kills the workers after WORKER_TIMEOUT seconds, so a hang fails instead of blocking CI.
"""
import datetime
import os
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
import torch

WORKER_TIMEOUT = 300  # seconds for the whole launch (imports, three modes, two steps each)
WORLD = 2
GLOBAL_BATCH = 4
MODES = ("ddp-torch", "ddp-triton", "fsdp-torch")

# Two stages (merging, shifted and clamped blocks); 36 x 44 images give 9 x 11 and 5 x 6 maps: padded.
TORCH_MODEL = dict(img_size=32, patch_size=4, embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=4,
                   num_classes=5, drop_path_rate=0.0)
TORCH_IMAGES = (36, 44)
# For the interpreter: one stage of one head on a 5 x 5 map (window 4: padded to 8 x 8, four windows).
TRITON_MODEL = dict(img_size=16, patch_size=4, embed_dim=16, depths=(2,), num_heads=(1,), window_size=4,
                    num_classes=5, drop_path_rate=0.0)
TRITON_IMAGES = (20, 20)


def mode_config(mode):
    backend = mode.split("-")[1]
    return (TRITON_MODEL, TRITON_IMAGES) if backend == "triton" else (TORCH_MODEL, TORCH_IMAGES)


def build_model(mode):
    import swin_fused

    torch.manual_seed(0)
    model = swin_fused.SwinTransformer(**mode_config(mode)[0])
    with torch.no_grad():  # away from the init, so every parameter has a non-trivial gradient
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def global_batch(mode):
    g = torch.Generator().manual_seed(1)
    images = torch.randn(GLOBAL_BATCH, 3, *mode_config(mode)[1], generator=g)
    labels = torch.randint(0, 5, (GLOBAL_BATCH,), generator=g)
    return images, labels


def train(model, images, labels, backend, full_grad=lambda p: p.grad, steps=2):
    """``steps`` SGD steps; returns each step's gradients by parameter name."""
    import swin_fused

    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    record = []
    with swin_fused.use_backend(backend):
        for _ in range(steps):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(images), labels)
            loss.backward()
            record.append({name: full_grad(p).detach().clone() for name, p in model.named_parameters()})
            opt.step()
    return record


# ------------------------------------------------------------------------------------------------- worker


def worker(rank, store, out_dir):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=120))
    results = {}
    for mode in MODES:
        try:
            results[mode] = run_mode(mode, rank, Path(out_dir))
        except Exception:  # noqa: BLE001 -- reported to the test process, which fails with it
            results[mode] = {"error": traceback.format_exc()}
        dist.barrier()
    torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()


def run_mode(mode, rank, out_dir):
    import torch.distributed as dist

    import swin_fused
    import swin_fused.ops

    fused_calls = []
    real_op = swin_fused.ops.fused_window_attention

    def counting_op(*args, **kwargs):  # proves the triton mode really ran the fused op
        fused_calls.append(1)
        return real_op(*args, **kwargs)

    swin_fused.ops.fused_window_attention = counting_op
    try:
        result = _run_mode(mode, rank, out_dir, swin_fused, dist)
    finally:
        swin_fused.ops.fused_window_attention = real_op
    result["fused_calls"] = len(fused_calls)
    return result


def _run_mode(mode, rank, out_dir, swin_fused, dist):
    model = build_model(mode)
    images, labels = global_batch(mode)
    per_rank = GLOBAL_BATCH // WORLD
    local = slice(rank * per_rank, (rank + 1) * per_rank)
    if mode.startswith("ddp"):
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        grads = train(ddp, images[local], labels[local], mode.split("-")[1])
        grads = [{k.removeprefix("module."): v for k, v in step.items()} for step in grads]
        result = {"grads": grads, "state": {k: v.clone() for k, v in model.state_dict().items()}}
        if rank == 0:
            swin_fused.save_checkpoint(ddp, out_dir / f"{mode}.pth")  # the wrapper is unwrapped
        return result
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (WORLD,))
    for layer in model.layers:
        for block in layer.blocks:
            fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    grads = train(model, images[local], labels[local], "torch", full_grad=lambda p: p.grad.full_tensor())
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    dist.barrier()
    return {"grads": grads, "state": state, "sharded": type(next(model.parameters())).__name__}


# --------------------------------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def distributed_run(tmp_path_factory):
    """Launch the two workers once; return (results per rank, output dir)."""
    out_dir = tmp_path_factory.mktemp("distributed")
    env = {k: v for k, v in os.environ.items() if k != "SWIN_FUSED_BACKEND"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    env["TRITON_INTERPRET"] = "1"  # gloo trains on the CPU: the triton mode runs Triton's interpreter
    env["OMP_NUM_THREADS"] = "1"  # two workers on a two-core CI machine
    store = out_dir / "store"
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", str(rank), str(store), str(out_dir)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in range(WORLD)]
    logs = []
    try:
        for proc in procs:
            logs.append(proc.communicate(timeout=WORKER_TIMEOUT)[0])
    except subprocess.TimeoutExpired:
        for proc in procs:
            proc.kill()
        pytest.fail(f"distributed workers did not finish within {WORKER_TIMEOUT} s (hang?)")
    for rank, (proc, log) in enumerate(zip(procs, logs)):
        assert proc.returncode == 0, f"rank {rank} exited with {proc.returncode}:\n{log[-4000:]}"
    results = [torch.load(out_dir / f"rank{rank}.pt", weights_only=True) for rank in range(WORLD)]
    return results, out_dir


@pytest.fixture(scope="module")
def single_process():
    """The same steps on the whole global batch in one process, per mode, on the torch backend (so the triton
    mode is also checked against PyTorch, and this runs on GPU machines, whose tests do not interpret)."""
    runs = {}
    for mode in MODES:
        model = build_model(mode)
        images, labels = global_batch(mode)
        runs[mode] = {"grads": train(model, images, labels, "torch"), "state": model.state_dict()}
    return runs


def mode_results(distributed_run, mode):
    results, _ = distributed_run
    for rank, result in enumerate(results):
        assert "error" not in result[mode], f"rank {rank}, {mode}:\n{result[mode]['error']}"
    return [result[mode] for result in results]


def assert_close_dicts(got, expected, what, rtol=1e-4, atol=1e-6):
    assert got.keys() == expected.keys(), what
    for name, value in expected.items():
        if not value.is_floating_point():
            assert torch.equal(got[name], value), f"{what} {name}"
            continue
        torch.testing.assert_close(got[name], value, rtol=rtol, atol=atol, msg=lambda m: f"{what} {name}: {m}")


@pytest.mark.distributed
@pytest.mark.parametrize("mode", MODES)
def test_gradients_equal_one_process_over_the_global_batch(distributed_run, single_process, mode):
    ranks = mode_results(distributed_run, mode)
    for rank, result in enumerate(ranks):  # 2 blocks x 2 steps through the fused op, or none on the torch backend
        assert result["fused_calls"] == (4 if mode.endswith("triton") else 0), (rank, result["fused_calls"])
    expected = single_process[mode]
    for rank, result in enumerate(ranks):
        for step, (got, want) in enumerate(zip(result["grads"], expected["grads"])):
            assert all(g.abs().sum() > 0 for g in want.values()), "a parameter without gradient: test too weak"
            assert_close_dicts(got, want, f"rank {rank} step {step} gradient")
    # After two steps the parameters agree too (rank 0 holds FSDP's full state dict).
    assert_close_dicts(ranks[0]["state"], expected["state"], "parameters after two steps")


@pytest.mark.distributed
@pytest.mark.parametrize("mode", ["ddp-torch", "ddp-triton"])
def test_ddp_replicas_stay_identical_and_checkpoint_round_trips(distributed_run, mode):
    import swin_fused

    ranks = mode_results(distributed_run, mode)
    for name, value in ranks[0]["state"].items():
        assert torch.equal(ranks[1]["state"][name], value), f"replicas diverged at {name}"
    _, out_dir = distributed_run
    fresh = build_model(mode)
    swin_fused.load_checkpoint(fresh, out_dir / f"{mode}.pth")  # strict; saved from the DDP wrapper
    for name, value in fresh.state_dict().items():
        assert torch.equal(value, ranks[0]["state"][name]), f"checkpoint round trip changed {name}"


@pytest.mark.distributed
def test_fsdp_shards_and_its_full_state_dict_loads_strictly(distributed_run):
    import swin_fused

    ranks = mode_results(distributed_run, "fsdp-torch")
    assert all(r["sharded"] == "DTensor" for r in ranks), "parameters were not sharded"
    assert ranks[1]["state"] == {}  # cpu_offload: the full state dict lives on rank 0 only
    model = build_model("fsdp-torch")
    swin_fused.load_checkpoint(model, ranks[0]["state"])
    for name, value in model.state_dict().items():
        assert torch.equal(value, ranks[0]["state"][name]), name


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "--worker":
    worker(int(sys.argv[2]), sys.argv[3], sys.argv[4])
