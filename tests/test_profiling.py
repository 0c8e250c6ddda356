"""``swin-fused profile``'s category breakdown without a GPU: the name classifier on real kernel names (as
Kineto reports them on H100 / A100, cuBLAS, cuDNN, inductor, aten), the per-step breakdown of synthetic rows,
which profiler rows count (each kernel once), and the ``--compile`` / ``--warmup`` checks. No model runs here;
the real CPU profile is in test_cli.py.
"""
from types import SimpleNamespace

import pytest
from torch.autograd import DeviceType

from swin_fused.tools.cli import main
from swin_fused.tools.profiling import (CATEGORIES, CATEGORY_PATTERNS, FUSED_KERNELS, category_breakdown,
                                        format_breakdown, kernel_category, largest_non_gemm_line, profiled_rows)

GEMM_HOPPER = ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1_execute_segment_k_off_"
               "kernel__5x_cublas")
LN_BACKWARD = "triton_red_fused_native_layer_norm_native_layer_norm_backward_12"

KERNELS = {
    "gemm": [
        GEMM_HOPPER,
        "nvjet_tst_128x256_64x4_1x2_h_bz_coopA_NNN",
        "void cutlass::Kernel2<cutlass_80_tensorop_bf16_s16816gemm_relu_bf16_64x64_32x6_tn_align8>"
        "(cutlass_80_tensorop_bf16_s16816gemm_relu_bf16_64x64_32x6_tn_align8::Params)",
        "ampere_bf16_s16816gemm_bf16_128x128_ldg8_f2f_stages_64x3_tn",
        "void cublasLt::splitKreduce_kernel<32, 16, int, float, __nv_bfloat16, float, __nv_bfloat16, false, false, "
        "false>(cublasLt::cublasSplitKParams<float>, float const*, __nv_bfloat16 const*, __nv_bfloat16*, float const*, "
        "float const*, __nv_bfloat16 const*, void*, long, float*, int*)",
        "sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc_tilesize128x64x64_warpgroupsize1x1x1_g1_"
        "execute_kernel__5x_cudnn",  # the patch embedding's conv
        "triton_tem_fused_addmm_0",
        "triton_tem_fused_mm_5",
        "aten::mm", "aten::addmm", "aten::bmm", "aten::mkldnn_convolution", "aten::convolution_backward",
    ],
    "window_attention": list(FUSED_KERNELS) + ["_window_attention_fwd_kernel_0"],  # inductor's copy of the kernel
    "attention": [
        "void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64, 128, 128, 4, false, false, "
        "cutlass::bfloat16_t, Flash_kernel_traits<64, 128, 128, 4, cutlass::bfloat16_t> >, false, false, false, false, "
        "false, true, false, false>(pytorch_flash::Flash_fwd_params)",
        "fmha_cutlassF_bf16_aligned_64x64_rf_sm80(PyTorchMemEffAttention::AttentionKernel<cutlass::bfloat16_t, "
        "cutlass::arch::Sm80, true, 64, 64, 64, true, true>::Params)",
    ],
    "inductor_fused": [
        "triton_per_fused_gelu_3",
        "triton_poi_fused_clone_7",
        "triton_red_fused_sum_9",
        "triton_poi_fused_convolution_0",  # the conv's bias add: pointwise, not the conv
        "## Call CompiledFxGraph fwyeirvgbyelx7q2cqkjomv525kao7wyzdqrg6dzp5f744ejfpoc ##",
    ],
    "norm": [
        "triton_poi_fused_add_native_layer_norm_0",
        LN_BACKWARD,
        "void at::native::(anonymous namespace)::vectorized_layer_norm_kernel<float, float>(int, float, float const*, "
        "float const*, float const*, float*, float*, float*)",
        "void at::native::(anonymous namespace)::GammaBetaBackwardCUDAKernelTemplate<float, float, 32u, 32u, 256u, "
        "false, true, false>(long, long, float const*, float const*, float const*, float const*, float*, float*)",
        "void at::native::(anonymous namespace)::layer_norm_grad_input_kernel_vectorized<float, float>(float const*, "
        "float const*, float const*, float const*, float const*, float*, int)",
        "aten::native_layer_norm", "aten::native_layer_norm_backward",
    ],
    "elementwise": [
        "void at::native::vectorized_elementwise_kernel<4, at::native::GeluCUDAKernelImpl(at::TensorIteratorBase&, "
        "at::native::GeluType)::{lambda()#2}::operator()() const::{lambda()#4}::operator()() const::"
        "{lambda(c10::BFloat16)#1}, std::array<char*, 2ul> >(int, at::native::GeluCUDAKernelImpl("
        "at::TensorIteratorBase&, at::native::GeluType)::{lambda()#2}::operator()() const::{lambda()#4}::"
        "operator()() const::{lambda(c10::BFloat16)#1}, std::array<char*, 2ul>)",
        "void at::native::elementwise_kernel<128, 2, at::native::gpu_kernel_impl_nocast<"
        "at::native::BinaryFunctor<float, float, float, at::native::binary_internal::MulFunctor<float> > >("
        "at::TensorIteratorBase&, "
        "at::native::BinaryFunctor<float, float, float, at::native::binary_internal::MulFunctor<float> > const&)::"
        "{lambda(int)#1}>(int, at::native::gpu_kernel_impl_nocast<at::native::BinaryFunctor<float, float, float, "
        "at::native::binary_internal::MulFunctor<float> > >(at::TensorIteratorBase&, at::native::BinaryFunctor<float, "
        "float, float, at::native::binary_internal::MulFunctor<float> > const&)::{lambda(int)#1})",
        "aten::add", "aten::add_", "aten::mul", "aten::gelu", "aten::gelu_backward",
    ],
    "reduction": [
        "void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float, at::native::func_wrapper_t<float, "
        "at::native::sum_functor<float, float, float>::operator()(at::TensorIterator&)::{lambda(float, float)#1}>, "
        "unsigned int, float, 4, 4> >(at::native::ReduceOp<float, at::native::func_wrapper_t<float, "
        "at::native::sum_functor<float, float, float>::operator()(at::TensorIterator&)::{lambda(float, float)#1}>, "
        "unsigned int, float, 4, 4>)",
        "void (anonymous namespace)::softmax_warp_forward<float, float, float, 6, true, false>(float*, float const*, "
        "int, int, int, bool const*, int, bool)",
        "void at::native::(anonymous namespace)::cunn_SoftMaxForward<4, float, float, float, "
        "at::native::(anonymous namespace)::LogSoftMaxForwardEpilogue>(float*, float const*, int)",
        "void at::native::(anonymous namespace)::nll_loss_forward_reduce_cuda_kernel_2d<float, float, long>(float*, "
        "float*, float const*, long const*, float const*, bool, long, long, long, long)",
        "aten::sum", "aten::_softmax", "aten::_softmax_backward_data",
    ],
    "copy": [
        "Memcpy DtoD (Device -> Device)", "Memcpy HtoD (Pageable -> Device)", "Memset (Device)",
        "void at::native::elementwise_kernel<128, 4, at::native::gpu_kernel_impl_nocast<at::native::direct_copy_kernel_"
        "cuda(at::TensorIteratorBase&)::{lambda()#3}::operator()() const::{lambda()#7}::operator()() const::"
        "{lambda(float)#1}>(at::TensorIteratorBase&, at::native::direct_copy_kernel_cuda(at::TensorIteratorBase&)::"
        "{lambda()#3}::operator()() const::{lambda()#7}::operator()() const::{lambda(float)#1} const&)::"
        "{lambda(int)#1}>(int, at::native::gpu_kernel_impl_nocast<at::native::direct_copy_kernel_cuda("
        "at::TensorIteratorBase&)::{lambda()#3}::operator()() const::{lambda()#7}::operator()() const::"
        "{lambda(float)#1}>(at::TensorIteratorBase&, at::native::direct_copy_kernel_cuda(at::TensorIteratorBase&)::"
        "{lambda()#3}::operator()() const::{lambda()#7}::operator()() const::{lambda(float)#1} const&)::"
        "{lambda(int)#1})",
        "void at::native::(anonymous namespace)::CatArrayBatchedCopy_contig<at::native::(anonymous namespace)::"
        "OpaqueType<2u>, unsigned int, 4, 128, 1>(at::native::(anonymous namespace)::OpaqueType<2u>*, "
        "at::native::(anonymous namespace)::CatArrInputTensorMetadata<at::native::(anonymous namespace)::"
        "OpaqueType<2u>, unsigned int, 128, 1>, at::native::(anonymous namespace)::TensorSizeStride<unsigned int, 4u>, "
        "int, unsigned int)",
        "void at::native::index_elementwise_kernel<128, 4, at::native::gpu_index_kernel<at::native::index_kernel_impl"
        "<at::native::OpaqueType<2> >(at::TensorIteratorBase&, c10::ArrayRef<long>, c10::ArrayRef<long>)::"
        "{lambda(char*, char const*, long)#1}>(at::TensorIteratorBase&, c10::ArrayRef<long>, c10::ArrayRef<long>, "
        "at::native::index_kernel_impl<at::native::OpaqueType<2> >(at::TensorIteratorBase&, c10::ArrayRef<long>, "
        "c10::ArrayRef<long>)::{lambda(char*, char const*, long)#1} const&)::{lambda(int)#1}>(long, "
        "at::native::gpu_index_kernel<...>::{lambda(int)#1})",
        "void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<float>, std::array<char*, 1ul> >"
        "(int, at::native::FillFunctor<float>, std::array<char*, 1ul>)",
        "void cudnn::engines_precompiled::nchwToNhwcKernel<float, float, float, false, true, (cudnnKernelDataType_t)2>"
        "(cudnn::engines_precompiled::nchw2nhwc_params_t<float>, float const*, float*)",
        "aten::copy_", "aten::index_select", "aten::index", "aten::cat",
    ],
    "optimizer": [
        "void at::native::(anonymous namespace)::multi_tensor_apply_kernel<at::native::(anonymous namespace)::"
        "TensorListMetadata<2>, at::native::(anonymous namespace)::BinaryOpListAlphaFunctor<float, 2, 2, 0>, "
        "std::plus<float>, float>(at::native::(anonymous namespace)::TensorListMetadata<2>, at::native::"
        "(anonymous namespace)::BinaryOpListAlphaFunctor<float, 2, 2, 0>, std::plus<float>, float)",
        "aten::_foreach_add_", "Optimizer.step#SGD.step",
    ],
    "other": [
        "forward", "backward", "optimizer", "swin_fused.step", "aten::view",
        "autograd::engine::evaluate_function: NativeLayerNormBackward0", "NativeLayerNormBackward0", "GeluBackward0",
        "torch::autograd::AccumulateGrad", "_TableRowsBackward",
    ],
}


@pytest.mark.parametrize("category", list(KERNELS))
def test_kernel_names_fall_in_their_category(category):
    wrong = {name[:80]: kernel_category(name) for name in KERNELS[category] if kernel_category(name) != category}
    assert not wrong, wrong


def test_every_pattern_names_a_printed_category():
    assert {category for category, _ in CATEGORY_PATTERNS} <= set(CATEGORIES)
    assert set(KERNELS) == set(CATEGORIES)


ROWS = [  # (name, µs over 3 steps, count over 3 steps)
    (GEMM_HOPPER, 600.0, 30),
    ("nvjet_tst_128x256_64x4_1x2_h_bz_coopA_NNN", 300.0, 15),
    (LN_BACKWARD, 240.0, 6),
    ("triton_poi_fused_add_native_layer_norm_0", 60.0, 6),
    ("_window_attention_fwd_kernel", 150.0, 12),
    ("Memcpy DtoD (Device -> Device)", 20.0, 3),
    ("Memcpy DtoD (Device -> Device)", 10.0, 3),  # one name over two rows: merged
    ("mystery_kernel", 20.0, 3),
]


def test_breakdown_is_per_step_and_shares_sum_to_100():
    breakdown = category_breakdown(ROWS, steps=3, top=1)
    categories = breakdown["categories"]
    assert list(categories) == list(CATEGORIES)
    assert breakdown["total_us_per_step"] == pytest.approx(1400 / 3)
    assert sum(c["share_pct"] for c in categories.values()) == pytest.approx(100)
    assert categories["gemm"]["us_per_step"] == pytest.approx(300) and categories["gemm"]["count_per_step"] == 15
    assert categories["gemm"]["share_pct"] == pytest.approx(900 / 14)
    norm = categories["norm"]
    assert (norm["us_per_step"], norm["kernels"], norm["count"]) == (pytest.approx(100), 2, 12)
    assert norm["top"] == [{"name": LN_BACKWARD, "us_per_step": pytest.approx(80), "share_pct": pytest.approx(240 / 14),
                            "count": 6, "count_per_step": 2}]  # top=1: the largest only
    assert categories["copy"]["us_per_step"] == pytest.approx(10) and categories["copy"]["count"] == 6
    assert categories["other"]["top"][0]["name"] == "mystery_kernel"
    assert categories["optimizer"] == {"us_per_step": 0, "share_pct": 0, "count": 0, "count_per_step": 0,
                                       "kernels": 0, "top": []}
    assert breakdown["largest_non_gemm"]["category"] == "norm"
    line = largest_non_gemm_line(breakdown)
    assert line == (f"largest non-GEMM cost: norm 21.4% (0.100 ms/step) — {LN_BACKWARD}: 0.080 ms/step over 2 "
                    f"calls/step")
    table = format_breakdown(breakdown).splitlines()
    assert table[0].split()[:4] == ["category", "/", "top", "kernels"]
    assert [row.split()[0] for row in table[2:] if not row.startswith("  ")] == [
        "gemm", "norm", "window_attention", "copy", "other", "total"]  # largest first, empty ones left out
    assert "  " + LN_BACKWARD in table[5] and table[5].split()[1:] == ["0.080", "17.1%", "2"]


def test_largest_non_gemm_says_when_nothing_but_gemm_ran_or_the_names_are_unknown():
    only_gemm = category_breakdown([(GEMM_HOPPER, 10.0, 1)], steps=1)
    assert only_gemm["largest_non_gemm"] is None
    assert largest_non_gemm_line(only_gemm) == "largest non-GEMM cost: none (no time recorded outside gemm)"
    unknown = largest_non_gemm_line(category_breakdown([("mystery_kernel", 5.0, 1), (GEMM_HOPPER, 1.0, 1)], steps=1))
    assert unknown.startswith("largest non-GEMM cost: other 83.3%") and "CATEGORY_PATTERNS" in unknown
    empty = category_breakdown([], steps=2)
    assert empty["total_us_per_step"] == 0 and empty["largest_non_gemm"] is None
    with pytest.raises(ValueError, match="steps=0"):
        category_breakdown(ROWS, steps=0)


def _row(key, device_type, self_device=0.0, self_cpu=0.0, count=1, annotation=False):
    return SimpleNamespace(key=key, device_type=device_type, self_device_time_total=self_device,
                           self_cpu_time_total=self_cpu, count=count, is_user_annotation=annotation)


def test_profiled_rows_count_each_kernel_once():
    """On CUDA an op's self device time is its kernels' time again, and the record_function ranges are mirrored
    on the device timeline: only the device rows count. On a CPU: every CPU row's self time."""
    averages = [
        _row("aten::mm", DeviceType.CPU, self_device=50.0, self_cpu=8.0, count=2),
        _row("swin_fused.step", DeviceType.CPU, self_cpu=3.0, annotation=True),
        _row("swin_fused.step", DeviceType.CUDA, self_device=70.0, annotation=True),
        _row(GEMM_HOPPER, DeviceType.CUDA, self_device=50.0, count=2),
        _row("Memset (Device)", DeviceType.CUDA, self_device=5.0),
        _row("_window_attention_fwd_kernel", DeviceType.CUDA, self_device=15.0, count=3),
    ]
    assert profiled_rows(averages, on_cuda=True) == [(GEMM_HOPPER, 50.0, 2), ("Memset (Device)", 5.0, 1),
                                                     ("_window_attention_fwd_kernel", 15.0, 3)]
    assert profiled_rows(averages, on_cuda=False) == [("aten::mm", 8.0, 2), ("swin_fused.step", 3.0, 1)]
    # a torch whose kernel rows carry no device: each CPU op's own kernels, still once
    untagged = [r for r in averages if r.device_type == DeviceType.CPU]
    assert profiled_rows(untagged, on_cuda=True) == [("aten::mm", 50.0, 2)]


def test_compile_mode_is_validated_by_argparse(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["profile", "--compile", "fast"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert "'fast'" in err and "reduce-overhead" in err and "max-autotune" in err


@pytest.mark.parametrize("mode,warmup,least", [("default", 1, 2), ("max-autotune", 0, 2), ("reduce-overhead", 2, 3)])
def test_compiled_profile_refuses_a_warmup_that_would_profile_compilation(capsys, mode, warmup, least):
    code = main(["profile", "--device", "cpu", "--compile", mode, "--warmup", str(warmup), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"--warmup {warmup} with --compile {mode}" in err and f"--warmup >= {least}" in err
