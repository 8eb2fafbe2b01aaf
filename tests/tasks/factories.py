"""User task factories for tests of `package.module:function` task names."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import TensorDataset

from slimsearch.tasks import Task
from slimsearch.tasks.digits import digits_splits

not_callable = 42


def good() -> Task:
    """A tiny digits task with an untrained linear teacher: builds in well under a second."""
    train, val, test = digits_splits(size=8)
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    return Task(name="tiny-digits", teacher=teacher, train=train, val=val, test=test,
                example_input=train.tensors[0][:1], num_classes=10, info={"dataset": "digits"})


def bad_return() -> int:
    return 42


def raises() -> Task:
    raise RuntimeError("the user's data is missing")


# Factories whose Task does not fit together: each is refused when the task is made, with one
# line naming the problem, instead of failing minutes later inside a trial.

def _tiny_parts(**overrides) -> dict:
    train, val, test = digits_splits(size=8)
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Conv2d(1, 8, 3), nn.Flatten(), nn.Linear(8 * 6 * 6, 10)).eval()
    parts = dict(name="tiny-conv", teacher=teacher, train=train, val=val, test=test,
                 example_input=train.tensors[0][:1], num_classes=10)
    return {**parts, **overrides}


def wrong_channels() -> Task:
    """RGB data for a model whose first conv takes one channel."""
    train, val, test = digits_splits(size=8, channels=3)
    return Task(**_tiny_parts(train=train, val=val, test=test, example_input=train.tensors[0][:1]))


def wrong_num_classes() -> Task:
    """The model has 10 outputs but the task says 12 classes."""
    return Task(**_tiny_parts(num_classes=12))


def labels_out_of_range() -> Task:
    train, val, test = digits_splits(size=8)
    return Task(**_tiny_parts(test=TensorDataset(test.tensors[0], test.tensors[1] + 10)))


def float_labels() -> Task:
    train, val, test = digits_splits(size=8)
    return Task(**_tiny_parts(val=TensorDataset(val.tensors[0], val.tensors[1].float())))


def example_batch_of_two() -> Task:
    train, _, _ = digits_splits(size=8)
    return Task(**_tiny_parts(example_input=train.tensors[0][:2]))


def teacher_not_a_module() -> Task:
    return Task(**_tiny_parts(teacher="resnet18"))


def mixed_size_images() -> Task:
    """A user's own torchvision ImageFolder read with ToTensor alone, over images of two sizes:
    refused when the task is made, naming the odd image, instead of failing to batch mid-trial."""
    import shutil
    import tempfile
    from pathlib import Path

    import torchvision
    from PIL import Image

    root = Path(tempfile.gettempdir()) / "slimsearch-test-mixed-sizes"
    shutil.rmtree(root, ignore_errors=True)
    for split in ("train", "val", "test"):
        for label in ("a", "b"):
            (root / split / label).mkdir(parents=True)
            for number in range(3):
                side = 40 if (split, label, number) == ("train", "b", 2) else 32
                Image.new("RGB", (side, side), (40 * number, 90, 200)).save(root / split / label / f"{number}.png")
    splits = [torchvision.datasets.ImageFolder(str(root / split), torchvision.transforms.ToTensor())
              for split in ("train", "val", "test")]
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(48, 2)).eval()
    return Task(name="mixed-sizes", teacher=teacher, train=splits[0], val=splits[1], test=splits[2],
                example_input=splits[0][0][0].unsqueeze(0), num_classes=2)


class _TiedWeights(nn.Module):
    """A CNN whose middle conv is applied through its weight (F.conv2d), not called as a module:
    pruning the conv before it cannot reach that weight, so a probe must leave that knob out."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 16, 3, padding=1)
        self.body = nn.Conv2d(16, 16, 3, padding=1)
        self.down = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = torch.relu(torch.nn.functional.conv2d(x, self.body.weight, self.body.bias, padding=1))
        return self.head(torch.relu(self.down(x)).mean((2, 3)))


def tied_weights() -> Task:
    train, val, test = digits_splits(size=8)
    torch.manual_seed(0)
    return Task(name="tied-weights", teacher=_TiedWeights().eval(), train=train, val=val, test=test,
                example_input=train.tensors[0][:1], num_classes=10)
