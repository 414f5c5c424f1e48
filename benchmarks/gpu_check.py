"""The model on a GPU: CUDA training (step time, determinism), export, onnxruntime's CUDA provider.

Trains the default fusion network twice with one seed on generated cells (class-dependent chips and
daily rhythms, so accuracy means something), checks that both runs give the same weights, exports
with the parity check, then times inference: torch eager on the device, onnxruntime with the
providers it really uses (numpy in and out), and onnxruntime's CPU provider. Needs the train extra
and, for the CUDA provider, onnxruntime-gpu. Runs on a CPU too (then it only checks the code path).

    python benchmarks/gpu_check.py [--cells 8192] [--epochs 3] [--batch 4096]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from model_speed import best_of

from urbanfusion.models.classes import CLASS_NAMES
from urbanfusion.models.dataset import CellData
from urbanfusion.models.inference import Predictor
from urbanfusion.models.training.checkpoint import contract_of
from urbanfusion.models.training.configs import TrainConfig
from urbanfusion.models.training.export import export_onnx, sample_inputs
from urbanfusion.models.training.loop import pick_device
from urbanfusion.models.training.train import train


def cells(n: int, seed: int = 0) -> CellData:
    """``n`` labelled cells whose chips and rhythms depend on the class, plus noise."""
    rng = np.random.default_rng(seed)
    k = len(CLASS_NAMES)
    labels = rng.integers(0, k, n)
    tint = rng.uniform(0.2, 0.8, (k, 3)).astype(np.float32)
    chips = tint[labels][:, :, None, None] + rng.normal(0, 0.15, (n, 3, 32, 32))
    rhythm = rng.uniform(0, 2, (k, 7, 24)).astype(np.float32)
    activity = rhythm[labels] + rng.normal(0, 0.5, (n, 7, 24))
    return CellData(
        chips=np.clip(chips, 0, 1).astype(np.float32),
        activity=activity.astype(np.float32),
        has_activity=np.ones(n, np.float32),
        labels=labels.astype(np.int64),
        blocks=np.arange(n, dtype=np.int64) // 16,
        city=np.zeros(n, np.int64),
        bands=[1, 2, 3],
        chip_px=32,
        cell_size_m=250.0,
    )


def cells_per_second(fn: object, n: int, repeat: int = 5) -> float:
    """Cells per second of ``fn`` (``n`` cells a call), best of ``repeat`` after a warm-up."""
    return n / best_of(fn, repeat)


# onnxruntime CUDA provider settings tried with IO binding (the first is the default).
CUDA_VARIANTS: dict[str, dict[str, str]] = {
    "default": {},
    "exhaustive cuDNN search": {"cudnn_conv_algo_search": "EXHAUSTIVE"},
    "NHWC": {"prefer_nhwc": "1", "cudnn_conv_algo_search": "EXHAUSTIVE"},
    "CUDA graph": {"enable_cuda_graph": "1", "cudnn_conv_algo_search": "EXHAUSTIVE"},
}


def io_binding(
    predictor: Predictor, inputs: tuple[np.ndarray, ...], reference: np.ndarray, n: int
) -> None:
    """onnxruntime CUDA with inputs and output bound on the device at a fixed batch of ``n``.

    Once per provider setting of :data:`CUDA_VARIANTS`, each in its own session.
    """
    c = predictor.contract
    for label, options in CUDA_VARIANTS.items():
        try:
            session = ort.InferenceSession(
                str(predictor.path),
                providers=[("CUDAExecutionProvider", options), "CPUExecutionProvider"],
            )
        except Exception as err:  # a setting this build lacks: say so, go on
            print(f"onnxruntime CUDA, {label}: not available ({str(err).splitlines()[0]})")
            continue
        binding = session.io_binding()
        for name, value in zip(c.inputs, inputs, strict=True):
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value, "cuda", 0))
        output = ort.OrtValue.ortvalue_from_shape_and_type(
            [n, len(c.classes)], np.float32, "cuda", 0
        )
        binding.bind_ortvalue_output(c.output, output)

        def bound(session: ort.InferenceSession = session, binding: object = binding) -> None:
            session.run_with_iobinding(binding)
            binding.synchronize_outputs()  # type: ignore[attr-defined]

        rate = cells_per_second(bound, n)
        gap = np.abs(output.numpy() - reference).max()
        print(
            f"onnxruntime CUDA, IO binding, batch {n}, {label}: {rate:,.0f} cells/s; "
            f"vs torch {gap:.1e}"
        )


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=8192)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4096, help="inference batch")
    args = parser.parse_args()
    device = pick_device()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device {name}; torch {torch.__version__}; onnxruntime {ort.__version__}")
    print(f"onnxruntime providers available: {ort.get_available_providers()}")

    data = cells(args.cells)
    cfg = TrainConfig(epochs=args.epochs, batch=256, seed=0, patience=args.epochs)
    runs = []
    for _ in range(2):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        runs.append(train(data, list(CLASS_NAMES), cfg, quiet=True))
        seconds = time.perf_counter() - start
        steps = args.epochs * -(-int(len(data) * 0.8) // cfg.batch)
        print(
            f"train {args.epochs} epochs on {len(data)} cells: {seconds:.1f} s, about "
            f"{1000 * seconds / steps:.1f} ms a step of {cfg.batch} (validation included); "
            f"val accuracy {runs[-1].history[-1]['val_accuracy']:.3f}"
        )
    a, b = (r.model.state_dict() for r in runs)
    same = all(torch.equal(a[key], b[key]) for key in a)
    print(f"two runs, one seed: weights {'identical' if same else 'DIFFERENT'}")

    result = runs[0]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        diff = export_onnx(result.model, contract_of(result.checkpoint), path)
        predictor = Predictor(path)
        print(f"export parity torch (CPU) vs onnxruntime: {diff:.1e}")
        print(f"onnxruntime session providers: {predictor.session.get_providers()}")
        image, act, hi, ha = sample_inputs(predictor.contract, args.batch)
        model = result.model.to(device).eval()
        feeds = [torch.from_numpy(x).to(device) for x in (image, act, hi, ha)]

        @torch.no_grad()
        def torch_eager() -> None:
            model(*feeds)
            if device.type == "cuda":
                torch.cuda.synchronize()

        with torch.no_grad():
            reference = model(*feeds).cpu().numpy()
        got = predictor.predict(image, act, hi, ha, batch=args.batch)
        gap = np.abs(got - reference).max()
        print(f"probabilities torch ({device.type}) vs onnxruntime: {gap:.1e}")
        n = args.batch
        print(f"torch eager {device.type}: {cells_per_second(torch_eager, n):,.0f} cells/s")
        rate = cells_per_second(lambda: predictor.predict(image, act, hi, ha, batch=n), n)
        print(f"onnxruntime {predictor.provider} (numpy in and out): {rate:,.0f} cells/s")
        if predictor.provider == "CUDAExecutionProvider":
            io_binding(predictor, (image, act, hi, ha), reference, n)
        if device.type == "cuda":
            # TF32 convolutions are torch's CUDA default: the gap to onnxruntime without them.
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
            with torch.no_grad():
                exact = model(*feeds).cpu().numpy()
            gap = np.abs(got - exact).max()
            print(f"probabilities torch (cuda, no TF32) vs onnxruntime: {gap:.1e}")
        cpu = Predictor(path, ["CPUExecutionProvider"])
        rate = cells_per_second(lambda: cpu.predict(image, act, hi, ha, batch=256), n, repeat=2)
        print(f"onnxruntime CPUExecutionProvider (batch 256): {rate:,.0f} cells/s")


if __name__ == "__main__":
    main()
