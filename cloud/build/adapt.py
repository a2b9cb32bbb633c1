"""Distil the cloud's answers on collected examples into the fashion edge model's members (needs
the "build" extra: torch, onnx).

The serving edge ONNX (BatchNorm folded into its convolutions by the export) is loaded back
into the training code's nets, so fine-tuning starts from the weights edges run. Each step
mixes a batch of collected examples, whose targets are the cloud's probabilities (soft labels,
KL divergence at a temperature), with a batch of the original training images, whose targets
are their hard labels and what the model answered before the round (KL to a frozen copy:
learning without forgetting, Li and Hoiem 2016), so the old domain is not forgotten. BatchNorm
stays frozen (folded statistics).
"""

from __future__ import annotations

import copy
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
    edge_wide_net,
)
from edgecascade.cloud.build.families.onnx_export import Uint8Nhwc

Step = Callable[[int, int, float], None]  # (step, steps, loss)
MEMBER_NETS = (edge_wide_net, edge_net)  # what a fashion edge model's members can be


def _layers(net: nn.Module) -> list[nn.Conv2d | nn.Linear]:
    return [m for m in net.modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def _member_nets(shapes: list[tuple[int, ...]]) -> list[nn.Module]:
    """The member nets whose Conv2d and Linear weights have `shapes`, in order."""
    nets: list[nn.Module] = []
    while shapes or not nets:
        for make in MEMBER_NETS:
            net = make()
            wanted = [tuple(layer.weight.shape) for layer in _layers(net)]
            if shapes[: len(wanted)] == wanted:
                nets.append(net)
                shapes = shapes[len(wanted) :]
                break
        else:
            raise ValueError(f"weights {shapes} are no edge member's")
    return nets


def load_edge_members(path: Path) -> Uint8Nhwc:
    """The fashion edge model of `path` (any edge tier fashion_train exports: logits [N,
    members, K]) as torch modules: each Conv and Gemm of the graph, in order, gives its weights
    to the next Conv2d or Linear of the members' nets (recognised by their weight shapes), and
    the BatchNorm after each conv passes its input through unchanged."""
    graph = onnx.load(str(path)).graph
    weights = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    layers = [node for node in graph.node if node.op_type in ("Conv", "Gemm")]
    shapes = [tuple(weights[node.input[1]].shape) for node in layers]
    try:
        members = Members(_member_nets(shapes))
    except ValueError as error:
        raise ValueError(f"{path}: not a fashion edge model ({error})") from None
    targets = _layers(members)
    norms = [m for m in members.modules() if isinstance(m, nn.BatchNorm2d)]
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
    original images against their labels (cross-entropy) and the model's own answers before
    the round (KL at temperature 1); `step` hears of each step."""
    before = copy.deepcopy(model).eval()
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
            x = flip(torch.cat([x_new[idx], x_old[old]]), generator)
            logits = model(x)
            members = logits.shape[1]
            new_logits = logits[: len(idx)].reshape(-1, NUM_CLASSES)
            targets = soft[idx].repeat_interleave(members, 0)
            distillation = nn.functional.kl_div(
                torch.log_softmax(new_logits / t, -1),
                _soften(targets, t),
                reduction="batchmean",
            ) * (t * t)
            old_logits = logits[len(idx) :].reshape(-1, NUM_CLASSES)
            hard = nn.functional.cross_entropy(old_logits, y_old[old].repeat_interleave(members, 0))
            with torch.no_grad():
                answered = torch.softmax(before(x[len(idx) :]).reshape(-1, NUM_CLASSES), -1)
            kept = nn.functional.kl_div(
                torch.log_softmax(old_logits, -1), answered, reduction="batchmean"
            )
            loss = distillation + hard + kept
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
