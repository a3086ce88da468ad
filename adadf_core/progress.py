"""What a training run shows while it runs: a bar over an epoch's steps and one line per finished epoch."""
from __future__ import annotations


def epoch_bar(cfg, steps: int, epoch: int):
    """A tqdm bar over the ``steps`` of ``epoch`` (None with ``cfg.progress`` off)."""
    if not cfg.progress:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=steps, desc=f"epoch {epoch}/{cfg.epochs}", leave=False, dynamic_ncols=True)


def epoch_line(cfg, row: dict) -> None:
    """One line per finished epoch: loss, training and test accuracy, seconds."""
    if cfg.progress:
        from tqdm.auto import tqdm
        tqdm.write(f"epoch {row['epoch']}/{cfg.epochs}: loss {row.get('loss', float('nan')):.4f}  "
                   f"train_acc {row.get('train_acc', float('nan')):.4f}  test_acc {row['test_acc']:.4f}  "
                   f"({row['seconds']:.1f}s)")
