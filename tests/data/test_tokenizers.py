"""The byte tokenizer, tokenizer lookup, and Hugging Face tokenizers loaded from a local folder."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from ghn.data import ByteTokenizer, HFTokenizer, Tokenizer, load_textfile, load_tokenizer
from ghn.data import tokenizers as tokenizers_module
from ghn.errors import ConfigError, MissingDependencyError


def test_byte_tokenizer_round_trip():
    tokenizer = ByteTokenizer()
    text = "héllo, wörld ✓\n"
    ids = tokenizer.encode(text)
    assert ids == list(text.encode("utf-8")) and max(ids) < tokenizer.vocab_size == 256
    assert tokenizer.decode(ids) == text
    assert tokenizer.encode_to_tensor(text).tolist() == ids
    assert repr(tokenizer) == "ByteTokenizer(vocab_size=256)"
    assert isinstance(tokenizer, Tokenizer)


def test_byte_tokenizer_replaces_invalid_bytes():
    assert ByteTokenizer().decode([104, 0xC3]) == "h\ufffd"


def test_load_tokenizer_by_name_or_instance():
    assert isinstance(load_tokenizer("bytes"), ByteTokenizer)
    tokenizer = ByteTokenizer()
    assert load_tokenizer(tokenizer) is tokenizer
    with pytest.raises(ConfigError, match="Tokenizer 'gpt9' is neither a registered tokenizer \\(bytes\\) nor a local"):
        load_tokenizer("gpt9")


def test_missing_transformers_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` raise ImportError
    with pytest.raises(MissingDependencyError, match="pip install 'ghn\\[hf\\]'"):
        load_tokenizer(tmp_path)


@pytest.fixture
def hf_tokenizer_dir(tmp_path: Path) -> Path:
    """A word-level fast tokenizer saved with save_pretrained: ids 0..5 for [UNK], the, cat, sat, on, mat."""
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer as RawTokenizer
    from tokenizers import models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {word: i for i, word in enumerate(["[UNK]", "the", "cat", "sat", "on", "mat"])}
    raw = RawTokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    folder = tmp_path / "word-tokenizer"
    PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]").save_pretrained(folder)
    return folder


def test_hf_tokenizer_from_local_folder(hf_tokenizer_dir: Path, monkeypatch: pytest.MonkeyPatch):
    tokenizer = load_tokenizer(str(hf_tokenizer_dir))
    assert isinstance(tokenizer, HFTokenizer) and tokenizer.vocab_size == 6
    assert tokenizer.encode("the cat sat on the dog") == [1, 2, 3, 4, 1, 0]
    assert tokenizer.decode([1, 2]) == "the cat"
    text = "the cat sat\non the mat\n" * 50
    monkeypatch.setattr(tokenizers_module, "_CHUNK_CHARS", 40)  # many chunks, cut at line ends
    monkeypatch.setattr(tokenizers_module, "_CHUNKS_PER_CALL", 3)  # several tokenizer calls
    ids = tokenizer.encode_to_tensor(text)
    assert ids.dtype == torch.int32 and ids.tolist() == tokenizer.encode(text)
    assert repr(tokenizer) == f"HFTokenizer(path='{hf_tokenizer_dir}', vocab_size=6)"


def test_textfile_with_hf_tokenizer(hf_tokenizer_dir: Path, tmp_path: Path):
    path = tmp_path / "story.txt"
    path.write_text("the cat sat on the mat\n" * 40, encoding="utf-8")
    task = load_textfile(path=path, tokenizer=str(hf_tokenizer_dir), context=8)
    assert task.vocab_size == 6 and task.tokenizer.vocab_size == 6
    assert len(task.train.tokens) == 216  # 90 % of 240 words
    x, y = task.train[0]
    assert x.tolist() == [1, 2, 3, 4, 1, 5, 1, 2] and torch.equal(y[:-1], x[1:])


def test_folder_without_tokenizer_files(tmp_path: Path):
    pytest.importorskip("transformers")
    with pytest.raises(ConfigError, match="holds no tokenizer transformers can load"):
        HFTokenizer(tmp_path)


def test_missing_tokenizer_folder(tmp_path: Path):
    with pytest.raises(ConfigError, match="Tokenizer folder .*absent' does not exist"):
        HFTokenizer(tmp_path / "absent")
