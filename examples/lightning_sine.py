"""Train DIRU with PyTorch Lightning on the study's sine task (pip install 'diru_fast[lightning]').

    python examples/lightning_sine.py [--epochs 5] [--hidden 32]

Prints the validation MSE before and after, then reloads the best checkpoint.
"""

import argparse
import tempfile

import lightning
from torch.utils.data import DataLoader

from diru_fast.experiments.datasets import make_dataset
from diru_fast.lightning import DIRURegressor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=32)
    args = parser.parse_args()
    lightning.seed_everything(0, workers=True)
    train = DataLoader(make_dataset("sine", 800, 50, seed=0), batch_size=32, shuffle=True)
    val = DataLoader(make_dataset("sine", 200, 50, seed=1), batch_size=200)
    model = DIRURegressor(input_size=1, hidden_size=args.hidden, output_size=1, lr=1e-3)
    with tempfile.TemporaryDirectory() as root:
        checkpoint = lightning.pytorch.callbacks.ModelCheckpoint(dirpath=root, monitor="val_loss")
        trainer = lightning.Trainer(max_epochs=args.epochs, accelerator="cpu", logger=False,
                                    enable_progress_bar=False, callbacks=[checkpoint], default_root_dir=root)
        before = trainer.validate(model, val, verbose=False)[0]["val_loss"]
        trainer.fit(model, train, val)
        best = DIRURegressor.load_from_checkpoint(checkpoint.best_model_path)
        after = trainer.validate(best, val, verbose=False)[0]["val_loss"]
    print(f"validation MSE: {before:.4f} before, {after:.4f} after {args.epochs} epochs (best checkpoint)")


if __name__ == "__main__":
    main()
