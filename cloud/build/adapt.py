"""Distil the cloud's answers on collected examples into the fashion edge ensemble (needs the
"build" extra: torch, onnx).

The serving edge ONNX (BatchNorm folded into its convolutions by the export) is loaded back
into the training code's nets, so fine-tuning starts from the weights edges run. Each step
mixes a batch of collected examples, whose targets are the cloud's probabilities (soft labels,
KL divergence at a temperature), with a batch of the original training images and their hard
labels, so the old domain is not forgotten. BatchNorm stays frozen (folded statistics).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import torch
from numpy.typing import NDArray
from onnx import numpy_helper
from torch import nn

from edgecascade.cloud.build.adapt_recipe import Recipe
from edgecascade.cloud.build.families.fashion_train import (
    NUM_CLASSES,
    PIXEL_MEAN,
    PIXEL_STD,
    RECIPES,
    Members,
    edge_net,
)
from edgecascade.cloud.build.families.onnx_export import Uint8Nhwc

Step = Callable[[int, int, float], None]  # (step, steps, loss)


def load_edge_members(path: Path) -> Uint8Nhwc:
    """The fashion edge ensemble of `path` (as fashion_train exports it) as torch modules: each
    Conv and Gemm of the graph, in order, gives its weights to the next Conv2d or Linear of the
    members' nets, and the BatchNorm after each conv passes its input through unchanged."""
    graph = onnx.load(str(path)).graph
    weights = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    layers = [node for node in graph.node if node.op_type in ("Conv", "Gemm")]
    members = Members([edge_net() for _ in range(len(layers) // 4)])
    targets = [m for m in members.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    norms = [m for m in members.modules() if isinstance(m, nn.BatchNorm2d)]
    if len(targets) != len(layers) or len(norms) != sum(n.op_type == "Conv" for n in layers):
        raise ValueError(f"{path}: not a fashion edge ensemble ({len(layers)} Conv/Gemm nodes)")
    with torch.no_grad():
        for node, module in zip(layers, targets):
            module.weight.copy_(torch.from_numpy(weights[node.input[1]].copy()))
            bias = torch.from_numpy(weights[node.input[2]].copy())
            if isinstance(module, nn.Linear):
                module.bias.copy_(bias)
            else:
                norm = norms.pop(0)
                norm.weight.fill_(1.0)
                norm.bias.copy_(bias)
                norm.running_mean = torch.zeros_like(bias)
                norm.running_var = torch.full_like(bias, 1.0 - norm.eps)
    return Uint8Nhwc(members, PIXEL_MEAN, PIXEL_STD)


def distil(
    model: Uint8Nhwc,
    images: NDArray[np.uint8],
    cloud_probabilities: NDArray[np.float32],
    original_images: NDArray[np.uint8],
    original_labels: NDArray[np.int64],
    recipe: Recipe,
    step: Step | None = None,
) -> Uint8Nhwc:
    """Fine-tune every member of `model` in place on mixed batches: collected `images` [N, H,
    W, C] against the cloud's probabilities (KL at `recipe.temperature`, scaled by T^2), and
    original images with their labels (cross-entropy); `step` hears of each step."""
    torch.manual_seed(recipe.seed)
    generator = torch.Generator().manual_seed(recipe.seed)
    x_new = torch.from_numpy(np.ascontiguousarray(images))
    soft = torch.from_numpy(np.ascontiguousarray(cloud_probabilities, np.float32))
    x_old = torch.from_numpy(np.ascontiguousarray(original_images))
    y_old = torch.from_numpy(np.ascontiguousarray(original_labels))
    per_epoch = (len(x_new) + recipe.batch - 1) // recipe.batch
    steps = recipe.epochs * per_epoch
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, recipe.lr, total_steps=steps)
    t = recipe.temperature
    flip = RECIPES["edge"].augment
    model.train()
    for norm in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        norm.eval()  # the folded statistics stay as exported
    done = 0
    for _ in range(recipe.epochs):
        order = torch.randperm(len(x_new), generator=generator)
        for i in range(0, len(x_new), recipe.batch):
            idx = order[i : i + recipe.batch]
            old = torch.randint(len(x_old), (recipe.original_batch,), generator=generator)
            logits = model(flip(torch.cat([x_new[idx], x_old[old]]), generator))
            members = logits.shape[1]
            new_logits = logits[: len(idx)].reshape(-1, NUM_CLASSES)
            targets = soft[idx].repeat_interleave(members, 0)
            distillation = nn.functional.kl_div(
                torch.log_softmax(new_logits / t, -1),
                _soften(targets, t),
                reduction="batchmean",
            ) * (t * t)
            hard = nn.functional.cross_entropy(
                logits[len(idx) :].reshape(-1, NUM_CLASSES),
                y_old[old].repeat_interleave(members, 0),
            )
            loss = distillation + hard
            optimizer.zero_grad()
            torch.autograd.backward(loss)
            optimizer.step()
            schedule.step()
            done += 1
            if step:
                step(done, steps, loss.item())
    model.eval()
    return model


def _soften(probabilities: torch.Tensor, temperature: float) -> torch.Tensor:
    """The distribution `probabilities` becomes at `temperature` (p^(1/T), renormalised)."""
    logp = torch.log(probabilities.clamp_min(1e-8)) / temperature
    return torch.softmax(logp, -1)
