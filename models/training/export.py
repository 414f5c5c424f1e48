"""Export a trained network to ONNX with its contract, checked against torch.

Only the batch axis is dynamic. The contract goes into the file's metadata, so the file alone
is enough for inference. The parity check runs onnxruntime and torch on the same cells and
fails the export when probabilities differ by more than :data:`PARITY_TOLERANCE`.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import torch

from urbanfusion.models.calibration import (
    DOMAIN_KEY,
    FEATURES,
    IN_DOMAIN_QUANTILE,
    LOGITS,
    NEIGHBOURS,
    DomainModel,
    calibration_error,
    fit_temperature,
    negative_log_likelihood,
    softmax,
)
from urbanfusion.models.contract import INPUT_NAMES, METADATA_KEY, OUTPUT_NAME, ModelContract
from urbanfusion.models.dataset import CellData
from urbanfusion.models.inference import Predictor
from urbanfusion.models.training.network import FusionNet
from urbanfusion.pipeline.atomic import replacing
from urbanfusion.pipeline.errors import ModelError

OPSET = 18
PARITY_TOLERANCE = 1e-4
PARITY_CELLS = 256


def sample_inputs(contract: ModelContract, n: int, seed: int = 0) -> list[np.ndarray]:
    """Random but plausible inputs for ``n`` cells, some with a missing modality."""
    rng = np.random.default_rng(seed)
    bands, chip = len(contract.bands), contract.chip_px
    has_image = (rng.random((n, 1)) > 0.1).astype(np.float32)
    has_activity = (rng.random((n, 1)) > 0.1).astype(np.float32)
    return [
        rng.normal(0, 1, (n, bands, chip, chip)).astype(np.float32),
        -np.abs(rng.normal(0, 0.7, (n, contract.days, contract.hours))).astype(np.float32),
        has_image,
        has_activity,
    ]


def parity(model: FusionNet, path: Path, contract: ModelContract, n: int = PARITY_CELLS) -> float:
    """Max absolute difference of probabilities, torch vs onnxruntime (CPU), on ``n`` cells."""
    inputs = sample_inputs(contract, n)
    with torch.no_grad():
        expected = model.cpu().eval()(*(torch.from_numpy(a) for a in inputs)).numpy()
    image, activity, has_image, has_activity = inputs
    got = Predictor(path, ["CPUExecutionProvider"]).predict(
        image, activity, has_image, has_activity
    )
    return float(np.abs(got - expected).max())


@contextlib.contextmanager
def _quiet_exporter_logs() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def export_onnx(model: FusionNet, contract: ModelContract, path: Path) -> float:
    """Write ``model`` to ``path`` as ONNX with ``contract`` in its metadata.

    Returns:
        The parity (max abs difference of probabilities) measured on the written file.

    Raises:
        ModelError: the exported file disagrees with torch beyond the tolerance.
    """
    model = model.cpu().eval()
    example = tuple(torch.from_numpy(a) for a in sample_inputs(contract, 4))
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    with replacing(path) as tmp:  # a model file is meant to be shared: 0644
        # The exporter warns about optional torchvision ops and internal deprecations, and its
        # optimiser logs notes: none of it is for the user.
        with warnings.catch_warnings(), _quiet_exporter_logs():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model,
                example,
                dynamo=True,
                input_names=list(INPUT_NAMES),
                output_names=[OUTPUT_NAME],
                dynamic_shapes=tuple({0: batch} for _ in INPUT_NAMES),
                opset_version=OPSET,
                external_data=False,
                verbose=False,
            )
        if program is None:  # dynamo=True always returns a program; None is the old exporter's
            raise ModelError("torch.onnx.export returned no ONNX program; check the torch install")
        proto = program.model_proto
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, contract.to_json()
        proto.producer_name = "urbanfusion"
        onnx.save(proto, str(tmp))
        diff = parity(model, tmp, contract)
        if diff > PARITY_TOLERANCE:
            raise ModelError(
                f"exported model disagrees with torch: max |dp| = {diff:.2e} > {PARITY_TOLERANCE}"
            )
    return diff


def add_score_outputs(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Also output the logits and each branch's embedding (what calibration and scores need).

    Found by structure, the same in every architecture: the logits are the input of the final
    softmax, a branch's embedding the input of its deep-supervision head (``image_head``,
    ``activity_head``). A single-source model outputs its fused head only, so the export drops
    both branch heads: it gets its logits (a temperature) but no embeddings (no in-domain
    score). Adding outputs changes no computation. Idempotent.

    Raises:
        ModelError: the graph has no such softmax (not an urbanfusion network).
    """
    graph = proto.graph
    if LOGITS in {o.name for o in graph.output}:
        return proto
    dims = {t.name: list(t.dims) for t in graph.initializer}
    softmax = next(
        (n for n in graph.node if n.op_type == "Softmax" and OUTPUT_NAME in n.output), None
    )
    heads = {
        branch: next(
            (n for n in graph.node if n.op_type == "Gemm" and f"{branch}_head.weight" in n.input),
            None,
        )
        for branch in FEATURES
    }
    found = {branch: node for branch, node in heads.items() if node is not None}
    if softmax is None:
        raise ModelError("the model's graph has no final softmax to score")
    prob = next(o for o in graph.output if o.name == OUTPUT_NAME)
    n_classes = prob.type.tensor_type.shape.dim[1].dim_value  # the logits are as wide
    sources = {LOGITS: (softmax.input[0], n_classes)}
    for branch, node in found.items():
        sources[FEATURES[branch]] = (node.input[0], dims[f"{branch}_head.weight"][1])
    for name, (source, width) in sources.items():
        graph.node.append(onnx.helper.make_node("Identity", [source], [name], name=f"out_{name}"))
        graph.output.append(
            onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, ["batch", width])
        )
    onnx.checker.check_model(proto)
    return proto


def _save_atomic(proto: onnx.ModelProto, path: Path) -> None:
    with replacing(path) as tmp:
        onnx.save(proto, str(tmp))


def calibrate_onnx(model: Path, data: CellData, validation: np.ndarray, out: Path) -> ModelContract:
    """Fit the temperature and the in-domain model of ``model`` and write it to ``out``.

    ``validation`` marks the cells (whole spatial blocks, as in training) that set the
    temperature, the in-domain radius and the calibration figures; the others are the training
    distribution of the embeddings. The weights are unchanged, so is every argmax.

    Raises:
        ModelError: the file is not an urbanfusion model, or the split leaves no cells to fit
            or to validate on.
    """
    Predictor(model, ["CPUExecutionProvider"])  # one-line errors for a file that is not one
    if not validation.any() or validation.all():
        raise ModelError(
            "calibration needs labelled cells both to fit and to validate on "
            f"({int(validation.sum())} of {len(validation)} validate); give more labelled cells"
        )
    proto = add_score_outputs(onnx.load(str(model)))
    out.parent.mkdir(parents=True, exist_ok=True)
    _save_atomic(proto, out)
    predictor = Predictor(out, ["CPUExecutionProvider"])
    logits, features, has_image, has_activity = predictor.raw_outputs(
        data.chips, data.activity, data.has_activity
    )
    labels, val, fit = data.labels, validation, ~validation
    temperature = fit_temperature(logits[val], labels[val])
    # A single-source model has the embeddings of its own branch only.
    present = {
        b: has for b, has in (("image", has_image), ("activity", has_activity)) if b in features
    }
    domain = {
        branch: DomainModel.fit(features[branch][fit & has], features[branch][val & has])
        for branch, has in present.items()
        if (fit & has).sum() >= NEIGHBOURS and (val & has).sum() > 0
    }
    stored = {branch: model.to_contract() for branch, model in domain.items()}
    before, after = softmax(logits[val]), softmax(logits[val], temperature)
    contract = replace(
        predictor.contract,
        temperature=temperature,
        domain={branch: fields for branch, (fields, _) in stored.items()},
        calibration={
            "cells": len(labels),
            "validation_cells": int(val.sum()),
            "ece_before": calibration_error(before, labels[val]),
            "ece_after": calibration_error(after, labels[val]),
            "nll_before": negative_log_likelihood(before, labels[val]),
            "nll_after": negative_log_likelihood(after, labels[val]),
            "in_domain_quantile": IN_DOMAIN_QUANTILE,
        },
    )
    entry = next(m for m in proto.metadata_props if m.key == METADATA_KEY)
    entry.value = contract.to_json()
    # The embeddings sit beside the contract, so that `model info` stays readable.
    keep = [m for m in proto.metadata_props if not m.key.startswith(DOMAIN_KEY.format(branch=""))]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    for branch, (_, blob) in stored.items():
        extra = proto.metadata_props.add()
        extra.key, extra.value = DOMAIN_KEY.format(branch=branch), blob
    _save_atomic(proto, out)
    return contract
