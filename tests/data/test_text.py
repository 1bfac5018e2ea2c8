"""Text tasks: pydoc text, WikiText folders and single files, cut into shifted-by-one windows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from ghn.data import ByteTokenizer, TokenWindows, load_pydoc, load_textfile
from ghn.data.text import PYDOC_SPLIT, read_pydoc_text, split_tokens
from ghn.errors import ConfigError, ShapeError


def test_pydoc_text_size_and_byte_round_trip():
    text = read_pydoc_text()
    assert 400_000 < len(text) < 600_000  # 465,048 characters on CPython 3.11.7
    assert text.startswith('The "assert" statement')
    tokenizer = ByteTokenizer()
    tokens = tokenizer.encode_to_tensor(text)
    assert tokens.dtype == torch.uint8 and len(tokens) == len(text.encode("utf-8"))
    assert tokenizer.decode(tokens.tolist()) == text


def test_pydoc_splits_are_contiguous_and_deterministic():
    task = load_pydoc(context=128)
    tokens = ByteTokenizer().encode_to_tensor(read_pydoc_text())
    pieces = [task.train.tokens, task.val.tokens, task.test.tokens]
    assert torch.equal(torch.cat(pieces), tokens)
    assert abs(len(pieces[0]) / len(tokens) - PYDOC_SPLIT[0]) < 1e-4
    assert task.vocab_size == 256 and task.context == 128
    x, y = task.val[5]
    again = load_pydoc(context=128)
    assert torch.equal(again.val[5][0], x) and torch.equal(again.val[5][1], y)


def test_windows_are_shifted_by_one():
    task = load_pydoc(context=64)
    for split in (task.train, task.val, task.test):
        for index in (0, len(split) // 2, len(split) - 1, -1):
            x, y = split[index]
            assert x.shape == y.shape == (64,) and x.dtype == torch.long
            assert torch.equal(y[:-1], x[1:])


def test_token_windows_tile_the_sequence():
    windows = TokenWindows(torch.arange(10), 3)
    assert len(windows) == 3 and repr(windows) == "TokenWindows(num_windows=3, context=3, stride=3)"
    assert [windows[i][0].tolist() for i in range(3)] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert windows[2][1].tolist() == [7, 8, 9]
    overlapping = TokenWindows(torch.arange(10), 3, stride=1)
    assert len(overlapping) == 7 and overlapping[6][1].tolist() == [7, 8, 9]
    with pytest.raises(IndexError):
        windows[3]
    with pytest.raises(ShapeError, match="Expected tokens of shape \\(L,\\), got \\(2, 5\\)"):
        TokenWindows(torch.zeros(2, 5), 3)
    with pytest.raises(ConfigError, match="Got 4 tokens, fewer than context \\+ 1 = 5"):
        TokenWindows(torch.arange(4), 4)


def test_train_stride_option():
    dense, tiled = load_pydoc(context=32, stride=8), load_pydoc(context=32)
    assert dense.train.stride == 8 and dense.val.stride == 32
    assert 3.9 < len(dense.train) / len(tiled.train) < 4.1
    assert len(dense.val) == len(tiled.val)


def test_split_tokens_fractions():
    pieces = split_tokens(torch.arange(100), (0.8, 0.1, 0.1))
    assert [len(p) for p in pieces.values()] == [80, 10, 10]
    assert pieces["test"].tolist() == list(range(90, 100))


def test_wikitext_folder(wikitext_dir: Path):
    train_text = (wikitext_dir / "wiki.train.raw").read_text(encoding="utf-8")
    test_text = (wikitext_dir / "wiki.test.raw").read_text(encoding="utf-8")
    task = load_textfile(path=wikitext_dir, context=16)
    assert task.name == "textfile" and task.vocab_size == 256
    assert ByteTokenizer().decode(task.train.tokens.tolist()) == train_text
    assert ByteTokenizer().decode(task.test.tokens.tolist()) == test_text
    x, y = task.train[1]
    assert ByteTokenizer().decode(x.tolist()) == train_text[16:32]
    assert torch.equal(y[:-1], x[1:])


def test_single_text_file_is_split_contiguously(text_file: Path):
    task = load_textfile(path=text_file, context=32, split=(0.8, 0.1, 0.1))
    text = text_file.read_text(encoding="utf-8")
    tokens = torch.cat([task.train.tokens, task.val.tokens, task.test.tokens])
    assert ByteTokenizer().decode(tokens.tolist()) == text
    assert len(task.train.tokens) == round(0.8 * len(text.encode("utf-8")))


def test_missing_text_paths(tmp_path: Path, wikitext_dir: Path):
    with pytest.raises(ConfigError, match="Expected a text file or a folder with wiki.train.raw.*at .*absent"):
        load_textfile(path=tmp_path / "absent")
    (wikitext_dir / "wiki.valid.raw").unlink()
    with pytest.raises(ConfigError, match=re.escape("lacks 'wiki.valid.raw'. Put the WikiText-2/103 raw files")):
        load_textfile(path=wikitext_dir)


def test_split_shorter_than_context(wikitext_dir: Path):
    with pytest.raises(ConfigError, match="Split 'val' of task 'textfile' has \\d+ tokens, fewer than context \\+ 1"):
        load_textfile(path=wikitext_dir, context=1000)


def test_non_utf8_file(tmp_path: Path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\xe9 ".encode("latin-1") * 100)
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load_textfile(path=path, context=8)
