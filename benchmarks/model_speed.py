"""Inference speed: onnxruntime CPU against torch eager CPU, same model, same batch, one run.

For each architecture (randomly initialised: speed does not depend on the weights), exports the
network, then times cells per second at batch 256 on both runtimes, best of several runs, with
the threads both would use on this machine. Needs the train extra (torch).

    .venv/bin/python benchmarks/model_speed.py [--batch 256]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from urbanfusion.models.contract import ModelContract
from urbanfusion.models.inference import Predictor
from urbanfusion.models.training.configs import NetworkConfig
from urbanfusion.models.training.export import export_onnx, sample_inputs
from urbanfusion.models.training.network import FusionNet

ARCHITECTURES = [
    ("resnet", "conv", "concat"),
    ("resnet", "bilstm", "bottleneck"),
    ("resnext", "conv", "cross"),
    ("vit", "mlp", "concat"),
]


def best_of(fn: object, repeat: int = 5) -> float:
    """The shortest of ``repeat`` timed calls of ``fn``, after one warm-up call."""
    fn()  # type: ignore[operator]
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    contract = ModelContract.for_urfc(
        bands=[1, 2, 3], image_mean=[0.5] * 3, image_std=[0.2] * 3, chip_px=32, cell_size_m=250
    )
    inputs = sample_inputs(contract, args.batch)
    tensors = [torch.from_numpy(a) for a in inputs]
    print(f"batch {args.batch}, torch {torch.__version__} ({torch.get_num_threads()} threads)")
    head = f"{'architecture':<28} {'params':>8} {'torch cells/s':>14}"
    print(f"{head} {'onnxruntime cells/s':>20} {'ratio':>6}")
    folder = Path(tempfile.mkdtemp(prefix="urbanfusion-speed-"))
    for image, activity, fusion in ARCHITECTURES:
        torch.manual_seed(0)
        net = FusionNet(
            NetworkConfig(image_encoder=image, activity_encoder=activity, fusion=fusion)
        ).eval()
        params = sum(p.numel() for p in net.parameters())
        path = folder / f"{image}-{activity}-{fusion}.onnx"
        export_onnx(net, contract, path)
        predictor = Predictor(path, ["CPUExecutionProvider"])

        def run_torch(net: FusionNet = net) -> None:
            with torch.inference_mode():
                net(*tensors)

        t_torch = best_of(run_torch)
        t_ort = best_of(lambda: predictor.predict(*inputs, batch=args.batch))  # noqa: B023
        name = f"{image}+{activity}+{fusion}"
        print(
            f"{name:<28} {params:>8,} {args.batch / t_torch:>14,.0f} {args.batch / t_ort:>20,.0f} "
            f"{t_torch / t_ort:>5.1f}x"
        )
    np.random.seed(0)


if __name__ == "__main__":
    main()
