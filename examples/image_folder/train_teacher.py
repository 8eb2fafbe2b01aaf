"""Train a torchvision model on an image folder the ordinary way, and save its state dict.

    python examples/image_folder/train_teacher.py images/ teacher.pt [--model resnet18] [--size 64] [--epochs 4]

This is the user's side of the story, in plain PyTorch and torchvision (no slimsearch): the
model is built with random weights (nothing is downloaded), trained on images/train with
torchvision's ImageFolder, resized and normalised as slimsearch will read them (a square
resize and ImageNet's mean and standard deviation), and saved with
torch.save(model.state_dict(), path): the checkpoint `slimsearch run --weights` takes.
"""

from __future__ import annotations

import argparse
import time

import torch
import torchvision
from torchvision import transforms


def train(data: str, out: str, *, model: str = "resnet18", size: int = 64, epochs: int = 4,
          batch_size: int = 64, lr: float = 3e-3, seed: int = 0, workers: int = 1) -> float:
    """Train, save the state dict to `out`, return the validation accuracy."""
    torch.manual_seed(seed)
    preprocess = transforms.Compose([
        transforms.Resize((size, size)),
        transforms.ToTensor(),
        transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ])
    train_set = torchvision.datasets.ImageFolder(f"{data}/train", preprocess)
    val_set = torchvision.datasets.ImageFolder(f"{data}/val", preprocess)
    net = torchvision.models.get_model(model, weights=None, num_classes=len(train_set.classes))
    loader = torch.utils.data.DataLoader(train_set, batch_size=batch_size, shuffle=True, num_workers=workers)
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * len(loader))
    for epoch in range(epochs):
        net.train()
        for images, labels in loader:
            loss = torch.nn.functional.cross_entropy(net(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    net.eval()
    correct = 0
    with torch.no_grad():
        for images, labels in torch.utils.data.DataLoader(val_set, batch_size=256, num_workers=workers):
            correct += int((net(images).argmax(1) == labels).sum())
    torch.save(net.state_dict(), out)
    return correct / len(val_set)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", help="image folder with train/ and val/")
    parser.add_argument("out", help="checkpoint to write, e.g. teacher.pt")
    parser.add_argument("--model", default="resnet18", help="a torchvision classification model (default resnet18)")
    parser.add_argument("--size", type=int, default=64, help="image side the model is trained at (default 64)")
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    started = time.perf_counter()
    accuracy = train(args.data, args.out, model=args.model, size=args.size, epochs=args.epochs)
    print(f"trained {args.model} in {time.perf_counter() - started:.0f} s: validation accuracy {accuracy:.1%}; "
          f"saved its state dict to {args.out}")


if __name__ == "__main__":
    main()
