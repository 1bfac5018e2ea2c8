"""Next-token prediction tasks: 'pydoc' (CPython's bundled help text) and 'textfile' (WikiText raw or any file).

Shapes: `L` tokens in a split, `T` context (tokens per input window).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from ghn._checks import check_fractions, check_int_arg
from ghn._logging import get_logger
from ghn.data.task import TASKS, TaskData, TaskSpec
from ghn.data.tokenizers import Tokenizer, load_tokenizer
from ghn.errors import ConfigError, MissingDependencyError, ShapeError

__all__ = [
    "TokenWindows",
    "split_tokens",
    "read_pydoc_text",
    "load_pydoc",
    "load_textfile",
    "PYDOC_SPLIT",
    "WIKITEXT_FILES",
]

logger = get_logger(__name__)

PYDOC_SPLIT = (0.90, 0.05, 0.05)
"""Fractions of the pydoc tokens in (train, val, test), taken contiguously in that order."""
WIKITEXT_FILES = {"train": "wiki.train.raw", "val": "wiki.valid.raw", "test": "wiki.test.raw"}
"""File names a 'textfile' folder must hold, as in the extracted WikiText-2/103 raw archives."""


class TokenWindows(Dataset):
    """Language-model windows over one token sequence: item i is `(w[:-1], w[1:])`, `w` the T + 1 tokens at i * stride.

    With `stride == context` (the default) the windows tile the sequence and every token but the first is a target
    exactly once; a smaller stride gives overlapping windows, more training samples from the same text.

    Args:
        tokens: Token ids (L,), any integer dtype (uint8 keeps bytes at 1 byte per token).
        context: Tokens T per input window.
        stride: Tokens between the starts of consecutive windows; defaults to `context`.

    Shapes:
        item: `(x, y)`, both long (T,), with `y[:-1] == x[1:]`.
    """

    def __init__(self, tokens: torch.Tensor, context: int, *, stride: int | None = None) -> None:
        if tokens.dim() != 1:
            raise ShapeError(f"Expected tokens of shape (L,), got {tuple(tokens.shape)}. Flatten them first.")
        self.context = check_int_arg("context", context)
        self.stride = context if stride is None else check_int_arg("stride", stride)
        if len(tokens) <= context:
            raise ConfigError(f"Got {len(tokens)} tokens, fewer than context + 1 = {context + 1}. Lower 'context'.")
        self.tokens = tokens

    def __len__(self) -> int:
        return (len(self.tokens) - self.context - 1) // self.stride + 1

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"Window {index} is out of range for {len(self)} windows.")
        start = (index % len(self)) * self.stride
        window = self.tokens[start : start + self.context + 1].long()  # (T + 1,)
        return window[:-1], window[1:]

    def __repr__(self) -> str:
        return f"TokenWindows(num_windows={len(self)}, context={self.context}, stride={self.stride})"


def split_tokens(tokens: torch.Tensor, fractions: tuple[float, float, float]) -> dict[str, torch.Tensor]:
    """Contiguous train/val/test pieces of `tokens` (L,) holding round(fraction * L) tokens (test gets the rest)."""
    num_train = round(fractions[0] * len(tokens))
    num_val = round(fractions[1] * len(tokens))
    return {
        "train": tokens[:num_train],
        "val": tokens[num_train : num_train + num_val],
        "test": tokens[num_train + num_val :],
    }


def read_pydoc_text() -> str:
    """CPython's `pydoc_data.topics` help texts joined in sorted topic order with a newline between them.

    On CPython 3.11.7 that is 79 topics, 465,048 characters, 466,195 UTF-8 bytes; other versions differ a little.

    Raises:
        MissingDependencyError: this Python was installed without `pydoc_data` (some minimal distro builds).
    """
    try:
        from pydoc_data.topics import topics
    except ImportError as err:
        raise MissingDependencyError(
            "Task 'pydoc' needs the standard-library module 'pydoc_data', which this Python lacks. Install the full "
            "Python (for example the distro's python3 package rather than python3-minimal) or use task 'textfile'."
        ) from err
    return "\n".join(topics[key] for key in sorted(topics))


def _make_task(
    name: str, pieces: dict[str, torch.Tensor], tokenizer: Tokenizer, *, context: int, stride: int | None
) -> TaskData:
    """A text `TaskData` with windows over each split's tokens; every split must fit at least one window."""
    for split, tokens in pieces.items():
        if len(tokens) <= context:
            raise ConfigError(
                f"Split {split!r} of task {name!r} has {len(tokens)} tokens, fewer than context + 1 = {context + 1}. "
                "Lower 'context' or give the task more text."
            )
    return TaskData(
        name=name,
        kind="text",
        train=TokenWindows(pieces["train"], context, stride=stride),
        val=TokenWindows(pieces["val"], context),
        test=TokenWindows(pieces["test"], context),
        vocab_size=tokenizer.vocab_size,
        context=context,
        tokenizer=tokenizer,
    )


def _check_window_args(context: int, stride: int | None) -> None:
    check_int_arg("context", context)
    if stride is not None:
        check_int_arg("stride", stride)


def load_pydoc(*, context: int = 128, stride: int | None = None, tokenizer: str | Tokenizer = "bytes") -> TaskData:
    """The pydoc task: next-token prediction on CPython's bundled help text, split 90/5/5 contiguously.

    With the default byte tokenizer the text (see `read_pydoc_text`; 466,195 bytes on CPython 3.11.7) gives about
    419.6K/23.3K/23.3K train/val/test tokens, so 3277/182/182 windows at context 128. Train, val and test are the
    first 90 %, the next 5 % and the last 5 % of the tokens.

    Args:
        context: Tokens T per input window.
        stride: Tokens between the starts of consecutive train windows; defaults to `context` (no overlap). Val and
            test windows always use stride `context`.
        tokenizer: 'bytes' (vocab 256) or the path of a local Hugging Face tokenizer folder.

    Raises:
        ConfigError: an argument is out of range, or a split is shorter than context + 1 tokens.
        MissingDependencyError: `pydoc_data` is missing, or a tokenizer folder was given without `transformers`.
    """
    _check_window_args(context, stride)
    tokenizer = load_tokenizer(tokenizer)
    text = read_pydoc_text()
    pieces = split_tokens(tokenizer.encode_to_tensor(text), PYDOC_SPLIT)
    task = _make_task("pydoc", pieces, tokenizer, context=context, stride=stride)
    logger.info(
        "Loaded task 'pydoc': %d characters, %d/%d/%d tokens with %r, context %d.",
        len(text),
        len(pieces["train"]),
        len(pieces["val"]),
        len(pieces["test"]),
        tokenizer,
        context,
    )
    return task


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"File '{path}' is not UTF-8 text ({err}). Convert it to UTF-8 first.") from err


def _read_wikitext(folder: Path) -> dict[str, str]:
    """The train/val/test texts of a WikiText raw folder."""
    missing = [name for name in WIKITEXT_FILES.values() if not (folder / name).is_file()]
    if missing:
        raise ConfigError(
            f"Folder '{folder}' lacks {', '.join(map(repr, missing))}. Put the WikiText-2/103 raw files "
            f"({', '.join(WIKITEXT_FILES.values())}) there, or pass path= to a single text file."
        )
    return {split: _read_text(folder / name) for split, name in WIKITEXT_FILES.items()}


def load_textfile(
    *,
    path: str | Path,
    tokenizer: str | Tokenizer = "bytes",
    context: int = 128,
    stride: int | None = None,
    split: tuple[float, float, float] = (0.90, 0.05, 0.05),
) -> TaskData:
    """Next-token prediction on local text: a WikiText raw folder, or one UTF-8 file split contiguously.

    A folder must hold `wiki.train.raw`, `wiki.valid.raw` and `wiki.test.raw` (as extracted from the WikiText-2/103
    raw archives), used as train, val and test. A single file is tokenized whole and split contiguously by `split`.

    Args:
        path: The WikiText raw folder or the text file.
        tokenizer: 'bytes' (vocab 256) or the path of a local Hugging Face tokenizer folder, loaded with
            `AutoTokenizer.from_pretrained(path, local_files_only=True)`.
        context: Tokens T per input window.
        stride: Tokens between the starts of consecutive train windows; defaults to `context`.
        split: (train, val, test) fractions for a single file; ignored for a folder.

    Raises:
        ConfigError: `path` or a file in it is missing or not UTF-8, an argument is out of range, or a split is shorter
            than context + 1 tokens.
        MissingDependencyError: a tokenizer folder was given but `transformers` is not installed.
    """
    _check_window_args(context, stride)
    fractions = check_fractions("split", split)
    path = Path(path).expanduser()
    if not path.exists():
        raise ConfigError(
            f"Expected a text file or a folder with {', '.join(WIKITEXT_FILES.values())} at '{path}', but nothing is "
            "there. Put the extracted WikiText raw files in that folder, or pass path= to a UTF-8 text file."
        )
    tokenizer = load_tokenizer(tokenizer)
    if path.is_dir():
        pieces = {name: tokenizer.encode_to_tensor(text) for name, text in _read_wikitext(path).items()}
    else:
        pieces = split_tokens(tokenizer.encode_to_tensor(_read_text(path)), fractions)
    task = _make_task("textfile", pieces, tokenizer, context=context, stride=stride)
    logger.info(
        "Loaded task 'textfile' from '%s': %d/%d/%d tokens with %r, context %d.",
        path,
        len(pieces["train"]),
        len(pieces["val"]),
        len(pieces["test"]),
        tokenizer,
        context,
    )
    return task


TASKS.register("pydoc", TaskSpec(name="pydoc", kind="text", load=load_pydoc, summary="CPython pydoc_data help text"))
TASKS.register(
    "textfile", TaskSpec(name="textfile", kind="text", load=load_textfile, summary="WikiText raw or a text file")
)
