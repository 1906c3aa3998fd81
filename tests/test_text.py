import gzip
import json
import re
import socket

import pytest
import torch

import replib.models.text as text
from replib.models.text import (
    KNOWN_IDS,
    MAX_LENGTH,
    VOCAB_SIZE,
    bpe_path,
    bytes_to_unicode,
    check_tokenizer,
    clip_tokenizer,
    read_bpe,
    small_text_encoder,
)
from replib.params import ParameterError


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No hub, no network: HF_HUB_OFFLINE=1 and any socket connection fails loudly."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return clip_tokenizer(cache_dir=tmp_path_factory.mktemp("clip-tok"))


@pytest.fixture(scope="module")
def bpe_data():
    return read_bpe()


def reference_encode(textline: str, vocab: dict[str, int], merges: list[str]) -> list[int]:
    """CLIP's BPE written out in plain Python (open_clip SimpleTokenizer.bpe/encode for lower-case ASCII text), an
    implementation independent of the tokenizers library the HF tokenizer uses."""
    ranks = {tuple(m.split()): i for i, m in enumerate(merges)}
    byte_enc = bytes_to_unicode()
    ids = [vocab["<|startoftext|>"]]
    for word in re.findall(r"'s|'t|'re|'ve|'m|'ll|'d|[a-z]+|[0-9]|[^\sa-z0-9]+", textline.lower()):
        symbols = [byte_enc[b] for b in word.encode("utf-8")]
        symbols[-1] += "</w>"
        while len(symbols) > 1:
            pairs = [(symbols[i], symbols[i + 1]) for i in range(len(symbols) - 1)]
            best = min(pairs, key=lambda p: ranks.get(p, float("inf")))
            if best not in ranks:
                break
            merged, i = [], 0
            while i < len(symbols):
                if i < len(symbols) - 1 and (symbols[i], symbols[i + 1]) == best:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        ids += [vocab[s] for s in symbols]
    return ids + [vocab["<|endoftext|>"]]


def test_shipped_file_is_found_from_the_package_not_the_cwd(monkeypatch, tmp_path):
    monkeypatch.delenv("REPLIB_CLIP_BPE", raising=False)
    monkeypatch.chdir(tmp_path)
    path = bpe_path()
    assert path.is_absolute() and path.name == "bpe_simple_vocab_16e6.txt.gz" and path.parent.name == "clip"
    assert (path.parent / "LICENSE").is_file()


def test_vocab_layout_matches_open_clip(bpe_data):
    vocab, merges = bpe_data
    assert len(vocab) == VOCAB_SIZE and len(merges) == 48894
    assert vocab["!"] == 0 and vocab["a</w>"] == 256 + 64 == 320
    assert vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407
    assert vocab[merges[0].replace(" ", "")] == 512  # first merge "i n" -> "in"


def test_tokenizer_vocab_size_and_known_ids(tok, bpe_data):
    assert len(tok) == VOCAB_SIZE and tok.model_max_length == MAX_LENGTH
    assert tok.pad_token == "<|endoftext|>" and tok.pad_token_id == 49407
    ids = tok("a photo of a cat").input_ids
    assert ids == KNOWN_IDS == [49406, 320, 1125, 539, 320, 2368, 49407]
    vocab, merges = bpe_data
    assert [vocab[w + "</w>"] for w in "a photo of a cat".split()] == KNOWN_IDS[1:-1]
    for sentence in ("a photo of a cat", "An astronaut riding a horse, 4k!", "the quick brown fox isn't lazy",
                     "glyph 7 in red on a blue background", "xylophonist's unbelievably tokenization"):
        assert tok(sentence).input_ids == reference_encode(sentence, vocab, merges), sentence


def test_round_trip_decode(tok):
    for sentence in ("a photo of a cat", "a red letter q on a white square", "two dogs playing in the snow"):
        ids = tok(sentence).input_ids
        assert tok.decode(ids, skip_special_tokens=True) == sentence


@pytest.mark.parametrize("length", [MAX_LENGTH, 16])
def test_padding_and_truncation(tok, length):
    prompts = ["a photo of a cat", "word " * 200, ""]
    ids = tok(prompts, padding="max_length", max_length=length, truncation=True, return_tensors="pt").input_ids
    assert ids.shape == (3, length)
    assert ids[0, :7].tolist() == KNOWN_IDS and (ids[0, 7:] == 49407).all()      # padded with <|endoftext|>
    assert ids[1, 0] == 49406 and ids[1, -1] == 49407 and len(set(ids[1, 1:-1].tolist())) == 1  # truncated, closed
    assert ids[2, :2].tolist() == [49406, 49407]


def test_cache_is_reused_and_rebuilt_when_damaged(tmp_path):
    clip_tokenizer(cache_dir=tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"vocab.json", "merges.txt", "source.json"}
    merges = (tmp_path / "merges.txt").read_text().split("\n")
    assert merges[0] == "#version: 0.2" and len(merges) == 48894 + 2  # header, merges, trailing newline
    stamp = (tmp_path / "vocab.json").stat().st_mtime_ns
    clip_tokenizer(cache_dir=tmp_path)
    assert (tmp_path / "vocab.json").stat().st_mtime_ns == stamp                 # loaded, not rewritten
    (tmp_path / "vocab.json").write_text("{")                                   # damaged cache
    with pytest.warns(UserWarning, match="rebuilding"):
        rebuilt = clip_tokenizer(cache_dir=tmp_path)
    assert len(rebuilt) == VOCAB_SIZE and json.loads((tmp_path / "vocab.json").read_text())["cat</w>"] == 2368


def test_default_cache_dir_is_under_replib_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("REPLIB_CACHE", str(tmp_path))
    clip_tokenizer()
    assert (tmp_path / "clip-tokenizer" / "vocab.json").is_file()


def test_check_tokenizer_rejects_the_offline_two_token_tokenizer(tmp_path):
    from transformers import CLIPTokenizer

    (tmp_path / "vocab.json").write_text(json.dumps({"<|startoftext|>": 0, "<|endoftext|>": 1}))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    tiny = CLIPTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"), model_max_length=77)
    assert len(tiny) == 2
    with pytest.raises(RuntimeError, match=r"only 2 tokens.*without network.*clip_tokenizer\(\)"):
        check_tokenizer(tiny)


def test_check_tokenizer_rejects_wrong_vocab_and_length(tok, bpe_data, tmp_path):
    vocab, merges = bpe_data
    swapped = dict(vocab)
    swapped["cat</w>"], swapped["dog</w>"] = vocab["dog</w>"], vocab["cat</w>"]
    (tmp_path / "vocab.json").write_text(json.dumps(swapped))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    from transformers import CLIPTokenizer

    wrong = CLIPTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"), model_max_length=77)
    with pytest.raises(RuntimeError, match="encodes 'a photo of a cat'"):
        check_tokenizer(wrong)
    with pytest.raises(RuntimeError, match="model_max_length is 77, not 16"):
        check_tokenizer(tok, max_length=16)
    assert check_tokenizer(tok) is tok


def test_env_var_overrides_the_bpe_file(monkeypatch, tmp_path):
    copy = tmp_path / "copy.txt.gz"
    copy.write_bytes(bpe_path().read_bytes())
    monkeypatch.setenv("REPLIB_CLIP_BPE", str(copy))
    assert bpe_path() == copy
    assert len(clip_tokenizer(cache_dir=tmp_path / "c")) == VOCAB_SIZE
    monkeypatch.setenv("REPLIB_CLIP_BPE", str(tmp_path / "missing.txt.gz"))
    with pytest.raises(FileNotFoundError, match="REPLIB_CLIP_BPE"):
        bpe_path()
    bad = tmp_path / "bad.txt.gz"
    bad.write_bytes(gzip.compress(b"#version: 0.2\ni n\nt h\n"))
    monkeypatch.setenv("REPLIB_CLIP_BPE", str(bad))
    with pytest.raises(RuntimeError, match="not CLIP's BPE file"):
        clip_tokenizer(cache_dir=tmp_path / "d")


def test_text_encoder_shapes_finite_and_seeded(tok):
    from replib.models.text import (
        tokenize,  # how training and StableDiffusionPipeline feed the encoder
    )

    enc = small_text_encoder(hidden=32, layers=1, heads=2, seed=3)
    assert enc.config.vocab_size == VOCAB_SIZE and enc.config.max_position_embeddings == MAX_LENGTH
    ids = tokenize(tok, ["a photo of a cat", "a blue circle", ""])
    with torch.no_grad():
        h = enc(ids)[0]
    assert h.shape == (3, MAX_LENGTH, 32) and torch.isfinite(h).all()
    assert not torch.allclose(h[0], h[1])
    state = torch.random.get_rng_state()
    same = small_text_encoder(hidden=32, layers=1, heads=2, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)                   # caller's RNG untouched
    other = small_text_encoder(hidden=32, layers=1, heads=2, seed=4)
    with torch.no_grad():
        assert torch.equal(same(ids)[0], h)
        assert not torch.allclose(other(ids)[0], h)


def test_encoder_parameter_checks():
    with pytest.raises(ParameterError, match="divisible"):
        small_text_encoder(hidden=30, heads=4)


def test_nothing_imports_open_clip():
    import sys

    assert "open_clip" not in sys.modules and text.__name__ == "replib.models.text"


def test_save_and_reload_like_a_pipeline_folder(tok, tmp_path):
    from transformers import CLIPTokenizer

    tok.save_pretrained(tmp_path)
    again = check_tokenizer(CLIPTokenizer.from_pretrained(tmp_path, local_files_only=True))
    assert again("a red square").input_ids == tok("a red square").input_ids
