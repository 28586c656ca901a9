"""Byte-level language modelling on Python's own standard-library sources (no download).

A fixed list of stdlib files is read once (cached in memory), cut into blocks of
``block_size`` bytes, and the blocks are split into train/validation by a seeded permutation.
Bytes >= 128 (rare in these sources) map to 0, so the vocabulary is 128.
"""

from __future__ import annotations

import functools
import sysconfig
from pathlib import Path

import torch

__all__ = ["STDLIB_FILES", "VOCAB_SIZE", "CharLM", "stdlib_text"]

VOCAB_SIZE = 128

# A deterministic list; files missing in a given Python version are skipped.
STDLIB_FILES: tuple[str, ...] = (
    "argparse.py",
    "ast.py",
    "calendar.py",
    "collections/__init__.py",
    "configparser.py",
    "dataclasses.py",
    "datetime.py",
    "difflib.py",
    "email/message.py",
    "enum.py",
    "fractions.py",
    "functools.py",
    "heapq.py",
    "inspect.py",
    "json/decoder.py",
    "logging/__init__.py",
    "random.py",
    "shutil.py",
    "statistics.py",
    "string.py",
    "subprocess.py",
    "tempfile.py",
    "textwrap.py",
    "threading.py",
    "typing.py",
)


@functools.lru_cache(maxsize=1)
def stdlib_text() -> bytes:
    """The concatenated sources of :data:`STDLIB_FILES` found in this Python (about 1.5 MB)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    parts = []
    for rel in STDLIB_FILES:
        path = root / rel
        if path.is_file():
            parts.append(path.read_bytes())
    if not parts:
        raise FileNotFoundError(f"no standard-library sources found under {root}")
    return b"\n".join(parts)


class CharLM:
    """Next-byte prediction on stdlib sources with a seeded block-level train/val split.

    Args:
        seq_len: tokens per example.
        seed: seeds the train/validation split (not the batches: those take a generator).
        val_fraction: share of blocks held out for validation.
        train_tokens: keep only this many training tokens (a small training set seen for many
            epochs, the regime where weight decay matters); None keeps all.
        val_sequences: number of fixed validation windows (``val_sequences * seq_len`` tokens).
        block_size: split granularity in bytes.

    Example:
        >>> data = CharLM(seq_len=32)
        >>> x, y = data.batch(4, torch.Generator().manual_seed(0))
        >>> x.shape, bool((x[:, 1:] == y[:, :-1]).all())
        (torch.Size([4, 32]), True)
    """

    vocab_size = VOCAB_SIZE

    def __init__(
        self,
        seq_len: int = 64,
        *,
        seed: int = 0,
        val_fraction: float = 0.1,
        train_tokens: int | None = None,
        val_sequences: int = 256,
        block_size: int = 4096,
    ) -> None:
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        raw = torch.frombuffer(bytearray(stdlib_text()), dtype=torch.uint8).long()
        raw[raw >= VOCAB_SIZE] = 0
        n_blocks = raw.numel() // block_size
        blocks = raw[: n_blocks * block_size].view(n_blocks, block_size)
        perm = torch.randperm(n_blocks, generator=torch.Generator().manual_seed(seed))
        n_val = max(1, round(val_fraction * n_blocks))
        self.val_tokens = blocks[perm[:n_val].sort().values].reshape(-1)
        self.train_tokens = blocks[perm[n_val:].sort().values].reshape(-1)
        if train_tokens is not None:
            if train_tokens < seq_len + 1:
                raise ValueError(f"train_tokens must be > seq_len ({seq_len}), got {train_tokens}")
            self.train_tokens = self.train_tokens[:train_tokens]
        self.seq_len = seq_len
        # fixed validation windows, evenly spaced over the held-out text
        n_windows = min(val_sequences, (self.val_tokens.numel() - 1) // seq_len)
        starts = torch.linspace(0, self.val_tokens.numel() - seq_len - 1, n_windows).long()
        self._val_x = torch.stack([self.val_tokens[s : s + seq_len] for s in starts])
        self._val_y = torch.stack([self.val_tokens[s + 1 : s + seq_len + 1] for s in starts])

    def batch(self, batch_size: int, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Random training windows: inputs and next-byte targets, both ``(batch, seq_len)``."""
        hi = self.train_tokens.numel() - self.seq_len - 1
        starts = torch.randint(0, hi + 1, (batch_size,), generator=generator)
        offsets = torch.arange(self.seq_len)
        idx = starts[:, None] + offsets
        return self.train_tokens[idx], self.train_tokens[idx + 1]

    def val_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The fixed validation windows ``(n, seq_len)`` and their targets."""
        return self._val_x, self._val_y

    loss_name = "cross_entropy"

    @staticmethod
    def loss(output: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(
            output.reshape(-1, output.shape[-1]).float(), target.reshape(-1), label_smoothing=label_smoothing
        )
