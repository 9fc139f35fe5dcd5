"""The CUDA device the GPU side runs on: torch imported and checked once, and the one error for "cannot run here"."""
from __future__ import annotations


class HarnessError(RuntimeError):
    """The GPU side cannot run at all (no GPU, bad case list); the message is one line."""


def cuda_torch():
    """The torch module, if it imports and sees a CUDA device; else a one-line :class:`HarnessError`."""
    try:
        import torch
    except ImportError as e:
        raise HarnessError(f"no CUDA GPU: torch is not importable ({e})") from None
    if not torch.cuda.is_available():
        raise HarnessError(f"no CUDA GPU: torch {torch.__version__} sees no CUDA device")
    return torch


def one_line(e: BaseException) -> str:
    """``Type: first line of the message`` (at most 240 characters): how a failed case records its error."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:240] if text else ''}".rstrip(": ")
