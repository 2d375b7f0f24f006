"""tools/cuda_emulator.py: the CPU pretends to be a T4 or an A100, and GPU-only bugs raise as on one.

Everything runs on the mini model (tests/mini_model.py); each test is a few seconds.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mini_model import mini_model_dir

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools.cuda_emulator import (MIX_MESSAGE, NUMPY_MESSAGE, EmulatedCudaTensor, emulated_cuda,  # noqa: E402
                                 is_emulated, setup_cell)

from course_utils.hardware import detect  # noqa: E402


@pytest.fixture(scope="module")
def model_dir():
    return mini_model_dir()


@pytest.fixture
def cpu_model(model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)


def ids(batch=2, length=8):
    return torch.randint(0, 100, (batch, length), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("gpu, dtype, capability, gib", [("T4", torch.float16, (7, 5), 14.74),
                                                         ("A100", torch.bfloat16, (8, 0), 39.39)])
def test_detect_sees_the_emulated_gpu(gpu, dtype, capability, gib):
    with emulated_cuda(gpu):
        profile = detect()
        assert profile.is_gpu and profile.device == "cuda"
        assert profile.compute_dtype == dtype
        assert profile.compute_capability == capability
        assert profile.memory_gib == pytest.approx(gib, abs=0.01)
        assert torch.cuda.device_count() == 1 and torch.cuda.current_device() == 0
        assert torch.cuda.get_device_capability(0) == capability
        assert torch.cuda.is_bf16_supported(including_emulation=False) == (gpu == "A100")
        free, total = torch.cuda.mem_get_info()
        assert total == torch.cuda.get_device_properties(0).total_memory and free <= total
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.set_device(0)
    assert not torch.cuda.is_available()
    assert not detect().is_gpu


def test_model_on_cuda_forward_backward_and_gpu_bugs(cpu_model):
    with emulated_cuda("T4"):
        model = cpu_model.to("cuda")
        assert model is cpu_model
        assert all(p.device.type == "cuda" and isinstance(p, torch.nn.Parameter) for p in model.parameters())
        assert model.device == torch.device("cuda", 0)

        batch = ids()
        with pytest.raises(RuntimeError, match="Expected all tensors to be on the same device"):
            model(batch)  # input_ids left on the CPU

        out = model(batch.to(model.device), labels=batch.cuda())
        assert out.logits.device.type == "cuda" and out.loss.device.type == "cuda"
        out.loss.backward()
        grads = [p.grad for p in model.parameters()]
        assert all(g is not None and g.device.type == "cuda" for g in grads)

        with pytest.raises(TypeError, match="can't convert cuda:0 device type tensor to numpy"):
            out.logits.detach().numpy()
        host = out.logits.detach().cpu()
        assert type(host) is torch.Tensor and host.device.type == "cpu"
        assert torch.equal(host, out.logits.detach().to("cpu"))
        assert host.numpy().shape == (2, 8, model.config.vocab_size)
        torch.cuda.synchronize()

        model.cpu()  # back: plain parameters again
        assert all(type(p) is torch.nn.Parameter and p.device.type == "cpu" for p in model.parameters())
    assert all(type(p) is torch.nn.Parameter for p in cpu_model.parameters())


def test_tensor_semantics():
    with emulated_cuda("T4"):
        for make in (lambda: torch.empty(3, device="cuda"), lambda: torch.zeros(3, device=torch.device("cuda")),
                     lambda: torch.ones(3, device="cuda:0"), lambda: torch.arange(3, device="cuda"),
                     lambda: torch.tensor([1.0, 2.0, 3.0], device="cuda"), lambda: torch.full((3,), 2.0, device=0),
                     lambda: torch.randn(3, device="cuda"), lambda: torch.rand(3, device="cuda"),
                     lambda: torch.ones(3).cuda(), lambda: torch.ones(3).to("cuda"),
                     lambda: torch.ones(3).to(torch.device("cuda"))):
            t = make()
            assert is_emulated(t) and t.device == torch.device("cuda", 0) and t.is_cuda
        x = torch.ones(3, device="cuda")
        assert is_emulated(torch.ones(3).to(x)) and is_emulated(torch.zeros_like(x)) and is_emulated(x.new_zeros(2))
        assert not is_emulated(torch.zeros_like(x, device="cpu")) and not is_emulated(torch.ones(3))
        assert (x * torch.tensor(2.0)).device.type == "cuda"  # a 0-dim CPU tensor is allowed, as on CUDA
        with pytest.raises(RuntimeError) as mixed:
            x + torch.ones(3)
        assert str(mixed.value) == MIX_MESSAGE
        with pytest.raises(RuntimeError, match="same device"):
            torch.cat([x, torch.ones(3)])
        with pytest.raises(TypeError) as numpy:
            x.numpy()
        assert str(numpy.value) == NUMPY_MESSAGE
        y = x.cpu()
        y += 1  # a copy, as from a GPU: the emulated tensor is unchanged
        assert torch.equal(x.cpu(), torch.ones(3)) and x.sum().item() == 3.0 and x.tolist() == [1.0, 1.0, 1.0]
        assert "device='cuda:0'" in repr(x)
        assert x.to(torch.float16).device.type == "cuda"
        x[0] = torch.tensor(5.0)  # CUDA takes CPU values in setitem
        assert x.cpu()[0] == 5.0
    assert not is_emulated(torch.ones(3))
    assert not torch.__future__.get_swap_module_params_on_conversion()
    assert "data" not in torch.Tensor.__dict__


def test_memory_queries_count_emulated_tensors():
    with emulated_cuda("A100"):
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        block = torch.empty(1024, 1024, device="cuda")  # 4 MiB
        assert torch.cuda.memory_allocated() - before == 4 * 1024**2
        assert torch.cuda.max_memory_allocated() >= before + 4 * 1024**2
        del block
        assert torch.cuda.memory_allocated() == before
        assert torch.cuda.max_memory_reserved() >= before + 4 * 1024**2


def test_cuda_autocast_runs_as_cpu_autocast():
    with emulated_cuda("T4"):
        a = torch.randn(4, 4, device="cuda")
        with torch.autocast("cuda", dtype=torch.float16):
            assert (a @ a).dtype == torch.float16
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            assert (a @ a).dtype == torch.bfloat16


def test_from_pretrained_device_map_cuda_fp16(model_dir):
    from transformers import AutoModelForCausalLM

    with emulated_cuda("T4"):
        model = AutoModelForCausalLM.from_pretrained(model_dir, device_map={"": "cuda"}, dtype=torch.float16)
        assert model.device.type == "cuda" and model.dtype == torch.float16
        assert all(p.device.type == "cuda" for p in model.parameters())
        assert all(b.device.type == "cuda" for b in model.buffers())
        with pytest.raises(RuntimeError, match="same device"):
            model(ids())
        logits = model(ids().to(model.device)).logits
        assert logits.device.type == "cuda" and logits.dtype == torch.float16


def test_peft_and_trainer_fp16_on_a_t4(model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    with emulated_cuda("T4"):
        model = AutoModelForCausalLM.from_pretrained(model_dir, device_map={"": "cuda"}, dtype=torch.float32)
        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
        assert all(p.device.type == "cuda" for p in model.parameters())
        rows = ids(8, 16)
        data = [{"input_ids": row, "labels": row} for row in rows]  # CPU rows: the Trainer moves them
        args = TrainingArguments(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=2, fp16=True,
                                 report_to=[], logging_steps=1, save_strategy="steps", save_steps=3)
        trainer = Trainer(model=model, args=args, train_dataset=data)
        assert args.device.type == "cuda" and trainer.accelerator.device.type == "cuda"
        assert trainer.accelerator.mixed_precision == "fp16" and trainer.accelerator.scaler is not None
        before = {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad}
        trainer.train()
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
        after = {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad}
        assert any(not torch.equal(before[n], after[n]) for n in before)  # lora_B moved off zero
        assert all(p.device.type == "cuda" for p in model.parameters())
        states = torch.load(tmp_path / "checkpoint-3" / "rng_state.pth", weights_only=False)
        assert "cuda" in states  # the checkpoint saved the (emulated) CUDA generator, via torch.cuda.random


def test_bitsandbytes_nf4_on_the_emulated_gpu(model_dir):
    bnb = pytest.importorskip("bitsandbytes")
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    with emulated_cuda("T4"):
        config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                    bnb_4bit_compute_dtype=torch.float16)
        model = AutoModelForCausalLM.from_pretrained(model_dir, device_map={"": "cuda"}, dtype=torch.float16,
                                                     quantization_config=config)
        layer = model.model.layers[0].self_attn.q_proj
        assert isinstance(layer, bnb.nn.Linear4bit) and isinstance(layer.weight, bnb.nn.Params4bit)
        assert layer.weight.dtype == torch.uint8 and layer.weight.device.type == "cuda"
        assert layer.weight.quant_state.absmax.device.type == "cuda"
        assert all(p.device.type == "cuda" for p in model.parameters())
        with pytest.raises(RuntimeError, match="same device"):
            model(ids())
        out = model(ids().to("cuda"), labels=ids().to("cuda"))
        assert out.logits.device.type == "cuda" and torch.isfinite(out.loss.cpu())
        # The dequantized weight is what course_utils' NF4 gives (bitsandbytes' CPU kernels underneath).
        weight = bnb.functional.dequantize_4bit(layer.weight.data, layer.weight.quant_state)
        assert weight.device.type == "cuda" and weight.shape == (64, 64)


def test_threads_and_subclass_param_to_cuda():
    """Work submitted to a thread pool (transformers loads weights in one) is emulated too."""
    from concurrent.futures import ThreadPoolExecutor

    with emulated_cuda("T4"):
        with ThreadPoolExecutor(1) as pool:
            t = pool.submit(lambda: torch.ones(2).to("cuda")).result()
        assert is_emulated(t)
        param = torch.nn.Parameter(torch.ones(2))
        param.data = torch.zeros(2, device="cuda")  # `.data =` moves a parameter, as on CUDA
        assert param.device.type == "cuda" and isinstance(param, torch.nn.Parameter)


def test_a_notebook_kernel_can_turn_it_on():
    code = setup_cell("A100") + "\nimport torch\nfrom course_utils.hardware import detect\n" \
        "assert detect().compute_dtype == torch.bfloat16\nassert torch.zeros(1, device='cuda').is_cuda\nprint('ok')"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT / "notebooks", env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("ok") and "emulates one NVIDIA A100" in done.stderr


def test_it_refuses_to_nest_and_restores_after_an_error():
    with pytest.raises(ValueError):
        with emulated_cuda("T4"):
            with pytest.raises(RuntimeError, match="already on"):
                with emulated_cuda("A100"):
                    pass
            raise ValueError
    assert not torch.cuda.is_available() and not isinstance(torch.ones(1), EmulatedCudaTensor)


def test_a_4bit_layer_is_quantized_where_its_weight_lives():
    """Module moves swap parameters only when they go to cuda: a bitsandbytes layer built for the CPU (its
    Params4bit cannot be swapped) quantizes on the CPU as without the emulator, and one for cuda on cuda."""
    from course_utils.qlora import dequantize_weight, four_bit_linear

    weight = torch.randn(64, 128, generator=torch.Generator().manual_seed(0))
    with emulated_cuda("T4"):
        on_cpu = four_bit_linear(weight, "nf4", double_quant=False)
        assert on_cpu.weight.device.type == "cpu" and not is_emulated(on_cpu.weight)
        on_gpu = four_bit_linear(weight.cuda(), "nf4", double_quant=False)
        assert on_gpu.weight.device.type == "cuda"
        error = weight.cuda() - dequantize_weight(on_gpu)  # same device: no error
        assert error.device.type == "cuda"
        with pytest.raises(RuntimeError, match="same device"):
            weight - dequantize_weight(on_gpu)  # lesson 09's defect: a CPU W minus a GPU Q(W)
        assert torch.equal(dequantize_weight(on_cpu), dequantize_weight(on_gpu).cpu())


def test_results_land_where_cuda_puts_them():
    """As CUDA does (pytorch/pytorch#119609): a CPU 0-dim tensor goes with CUDA ones, a CUDA 0-dim tensor not
    with CPU ones; a CUDA tensor takes CPU indices, a CPU tensor no CUDA ones, and the result is the indexed
    tensor's device."""
    with emulated_cuda("T4"):
        cpu = torch.arange(4)
        scalar = torch.tensor(2, device="cuda")
        with pytest.raises(RuntimeError, match="same device"):
            cpu + scalar
        gpu = torch.arange(4, device="cuda")
        assert is_emulated(gpu + torch.tensor(2)) and is_emulated(scalar + torch.tensor(1))
        assert is_emulated(gpu[torch.tensor([0, 1])])  # CPU indices into a CUDA tensor: fine, on cuda
        with pytest.raises(IndexError, match="indices should be either on cpu"):
            cpu[torch.tensor([0, 1], device="cuda")]
        with pytest.raises(IndexError, match="indices should be either on cpu"):
            cpu[:, None][torch.tensor([0, 1], device="cuda"), 0]
        cpu[0] = torch.tensor(7, device="cuda")  # a value from another device is copied
        assert cpu[0].item() == 7 and not is_emulated(cpu)
        with pytest.raises(RuntimeError, match="same device"):
            cpu + gpu


def test_a_0_dim_gpu_tensor_formats_like_a_number():
    with emulated_cuda("T4"):
        x = torch.tensor(0.00123).to("cuda")
        assert is_emulated(x) and f"{x:.2e}" == "1.23e-03" and f"{x.max():.1f}" == "0.0"
        with pytest.raises(TypeError):
            f"{torch.ones(2).cuda():.1f}"  # as on CUDA: a tensor with dimensions has no number format


def test_joins_generators_and_type_as_behave_as_on_cuda():
    with emulated_cuda("T4"):
        gpu_scalar = torch.tensor(1.0, device="cuda")
        with pytest.raises(RuntimeError, match="same device"):
            torch.stack([gpu_scalar, torch.tensor(2.0)])  # a CPU scalar is not moved for a join
        assert is_emulated(torch.stack([gpu_scalar, torch.tensor(2.0, device="cuda")]))
        with pytest.raises(RuntimeError, match="generator"):
            torch.randn(3, generator=torch.Generator(), device="cuda")
        moved = torch.ones(2).type_as(torch.zeros(2, device="cuda", dtype=torch.float16))
        assert is_emulated(moved) and moved.dtype == torch.float16


def test_16bit_products_on_the_device_accumulate_in_fp32_as_cuda_does():
    """A GPU multiplies 16-bit values and accumulates in fp32, rounding the result once; the CPU's fp16
    kernels are several times slower. On the emulated device a 16-bit product (stored 16-bit inputs, a
    GEMM under autocast, bitsandbytes' 4-bit GEMM) is the fp32 product of the 16-bit values, rounded once,
    and gradients still flow; CPU tensors keep the CPU's kernels."""
    from course_utils.qlora import dequantize_weight, four_bit_linear

    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(8, 256, generator=g), torch.randn(64, 256, generator=g)
    once = lambda a, b, dtype: torch.nn.functional.linear(a.to(dtype).float(), b.to(dtype).float()).to(dtype)
    cpu_fp16 = torch.nn.functional.linear(x.half(), w.half())
    with emulated_cuda("T4"):
        for dtype in (torch.float16, torch.bfloat16):
            xh = x.to("cuda", dtype).requires_grad_()
            y = torch.nn.functional.linear(xh, w.to("cuda", dtype))
            assert y.device.type == "cuda" and y.dtype == dtype
            assert torch.equal(y.cpu(), once(x, w, dtype))
            y.float().sum().backward()
            assert xh.grad.dtype == dtype and xh.grad.device.type == "cuda"
            assert torch.equal((xh.cuda() @ w.to("cuda", dtype).T).cpu(), once(x, w, dtype))
        with torch.autocast("cuda", dtype=torch.float16):
            y = torch.nn.functional.linear(x.cuda(), w.cuda())
        assert y.dtype == torch.float16 and torch.equal(y.cpu(), once(x, w, torch.float16))
        assert torch.equal(torch.nn.functional.linear(x.half(), w.half()), cpu_fp16)  # CPU tensors: CPU kernels
        layer = four_bit_linear(w.cuda(), "nf4", double_quant=True, compute_dtype=torch.float16)
        y = layer(x.to("cuda", torch.float16))
        assert y.device.type == "cuda" and y.dtype == torch.float16
        expected = once(x, dequantize_weight(layer).cpu(), torch.float16)
    assert torch.equal(y.cpu(), expected)
