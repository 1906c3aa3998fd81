"""Text for the text-to-image model: the real CLIP tokenizer, built offline, and a small CLIP text encoder.

The tokenizer is CLIP's (and Stable Diffusion v1's): 49,408 byte-pair-encoding tokens, 77 positions. Its merge list
ships with the kit (`data/clip/bpe_simple_vocab_16e6.txt.gz`, MIT, from the `open-clip-torch` wheel) and is converted
here to the `vocab.json` + `merges.txt` pair that `transformers.CLIPTokenizer` reads, so nothing touches the network.
Why not `CLIPTokenizer.from_pretrained("openai/clip-vit-base-patch32")`: offline it does not fail but returns a
2-token tokenizer that maps every word to <|endoftext|>; `check_tokenizer` catches that (and any other wrong
tokenizer, e.g. one loaded from a Stable Diffusion folder).

The text encoder is a `transformers.CLIPTextModel` with CLIP's vocabulary and positions but a few small layers, so it
can be trained from scratch on a CPU together with a small UNet, and the pair plugs into a diffusers
`StableDiffusionPipeline` exactly where the real CLIP text model goes.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import warnings
from pathlib import Path

import torch

from ..files import cache_dir as files_cache_dir
from ..files import write_text_atomic
from ..params import ParameterError, check_int

_ROOT = Path(__file__).resolve().parents[2]  # the checkout (this file is replib/models/text.py)
BPE_FILE = _ROOT / "data" / "clip" / "bpe_simple_vocab_16e6.txt.gz"
BPE_ENV = "REPLIB_CLIP_BPE"

VOCAB_SIZE = 49408                      # 256 bytes + 256 end-of-word bytes + 48,894 merges + 2 special tokens
N_MERGES = 49152 - 256 - 2              # the merges CLIP uses: the file holds more, the first 48,894 count
MAX_LENGTH = 77                         # CLIP's context length (position embeddings)
START, END = "<|startoftext|>", "<|endoftext|>"
# "a photo of a cat" -> ids of openai/clip-vit-base-patch32 (and SD v1's tokenizer). 320 = "a</w>" follows from the
# byte order alone (byte 'a' is the 65th printable char, + 256 for its end-of-word form); the test suite re-derives
# the rest with a pure-Python copy of CLIP's BPE algorithm.
KNOWN_TEXT = "a photo of a cat"
KNOWN_IDS = [49406, 320, 1125, 539, 320, 2368, 49407]


def bpe_path() -> Path:
    """The CLIP BPE merge file: $REPLIB_CLIP_BPE if set, else the copy shipped in `data/clip/` next to the package
    (found from this file's location, so it works from any working directory)."""
    path = Path(os.environ[BPE_ENV]).expanduser() if os.environ.get(BPE_ENV) else BPE_FILE
    if not path.is_file():
        where = f"${BPE_ENV}={os.environ[BPE_ENV]}" if os.environ.get(BPE_ENV) else "the kit's data/clip/ folder"
        raise FileNotFoundError(
            f"CLIP BPE vocabulary not found at {path} ({where}). Get it with `pip download --no-deps "
            f"open-clip-torch==3.3.0 -d /tmp/oc` and unzip open_clip/bpe_simple_vocab_16e6.txt.gz from the wheel, "
            f"then put it in data/clip/ or point ${BPE_ENV} at it (see data/clip/README.md)")
    return path


def bytes_to_unicode() -> dict[int, str]:
    """CLIP's (and GPT-2's) map from the 256 byte values to printable characters: printable Latin-1 bytes map to
    themselves, the rest to chars from U+0100 on. Its order is the order of the first 256 vocabulary entries."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def read_bpe(bpe: Path | None = None) -> tuple[dict[str, int], list[str]]:
    """(vocab, merges) built from the gzipped merge file exactly as open_clip's `SimpleTokenizer` does: the 256 byte
    chars, their `</w>` (end-of-word) forms, the result of each of the first 48,894 merges, then <|startoftext|> and
    <|endoftext|> (open_clip names them <start_of_text>/<end_of_text>; the ids, 49406/49407, are the same).
    `merges` are the "left right" lines. Raises RuntimeError if the file does not give CLIP's vocabulary."""
    path = Path(bpe) if bpe is not None else bpe_path()
    try:
        lines = gzip.open(path).read().decode("utf-8").split("\n")
    except (OSError, UnicodeDecodeError, EOFError) as err:
        raise RuntimeError(f"cannot read the CLIP BPE file {path} ({type(err).__name__}: {err}); it must be the "
                           f"gzipped bpe_simple_vocab_16e6.txt.gz (see data/clip/README.md)") from err
    merges = lines[1:N_MERGES + 1]      # line 0 is a version header
    pairs = [m.split() for m in merges]
    if len(pairs) != N_MERGES or any(len(p) != 2 for p in pairs):
        raise RuntimeError(f"{path} is not CLIP's BPE file: expected {N_MERGES} merge lines of two symbols after the "
                           f"header, got {len(pairs)} lines (see data/clip/README.md)")
    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["".join(p) for p in pairs] + [START, END]
    vocab = {t: i for i, t in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE:
        raise RuntimeError(f"{path} gives {len(vocab)} distinct tokens, not CLIP's {VOCAB_SIZE}: wrong or damaged "
                           f"BPE file (see data/clip/README.md)")
    return vocab, [" ".join(p) for p in pairs]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_tokenizer_files(bpe: Path | None = None, cache_dir: Path | None = None) -> tuple[Path, Path]:
    """Convert the BPE file to `vocab.json` and `merges.txt` (with the "#version: 0.2" header of Hugging Face's CLIP
    tokenizers) in `cache_dir` (default: `replib.files.cache_dir() / "clip-tokenizer"`), unless files made from
    the same BPE file (same sha256) are already there. Returns (vocab_file, merges_file).

    Every file is written atomically and `source.json` (the BPE file's sha256) last, so an interrupted build is simply
    redone by the next call."""
    bpe = Path(bpe) if bpe is not None else bpe_path()
    if cache_dir is None:

        cache_dir = files_cache_dir() / "clip-tokenizer"
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    vocab_file, merges_file, source = cache_dir / "vocab.json", cache_dir / "merges.txt", cache_dir / "source.json"
    record = {"bpe_sha256": _sha256(bpe), "vocab_size": VOCAB_SIZE, "merges": N_MERGES}
    try:
        fresh = json.loads(source.read_text()) == record and vocab_file.is_file() and merges_file.is_file()
    except (OSError, ValueError):
        fresh = False
    if not fresh:
        vocab, merges = read_bpe(bpe)
        write_text_atomic(json.dumps(vocab, ensure_ascii=False), vocab_file)
        write_text_atomic("#version: 0.2\n" + "\n".join(merges) + "\n", merges_file)
        write_text_atomic(json.dumps(record, indent=1) + "\n", source)
    return vocab_file, merges_file


def clip_tokenizer(bpe: Path | None = None, cache_dir: Path | None = None):
    """CLIP's tokenizer as a `transformers.CLIPTokenizer`, built offline from the shipped BPE file (or `bpe`).

    49,408 tokens, `model_max_length` 77, padding with <|endoftext|> (as Stable Diffusion v1's tokenizer), checked
    with `check_tokenizer` before it is returned. The converted files are cached in `cache_dir` (see
    `write_tokenizer_files`); a cache that fails to load or check is rebuilt once, with a warning."""
    from transformers import CLIPTokenizer

    for attempt in (0, 1):
        vocab_file, merges_file = write_tokenizer_files(bpe, cache_dir)
        try:
            tok = CLIPTokenizer(str(vocab_file), str(merges_file), model_max_length=MAX_LENGTH, pad_token=END)
            return check_tokenizer(tok)
        except Exception as err:
            if attempt:
                raise
            warnings.warn(f"cached CLIP tokenizer files in {vocab_file.parent} are unusable "
                          f"({type(err).__name__}: {err}); rebuilding them")
            (vocab_file.parent / "source.json").unlink(missing_ok=True)
    raise AssertionError("unreachable")


def check_tokenizer(tokenizer, max_length: int | None = MAX_LENGTH):
    """Raise RuntimeError (saying what is wrong and what to do) unless `tokenizer` is CLIP's: 49,408 tokens, the
    known ids for "a photo of a cat", a pad token, and `model_max_length == max_length` (skip that with None).
    Works on any Hugging Face tokenizer, e.g. one loaded from a Stable Diffusion folder. Returns the tokenizer."""
    n = len(tokenizer)
    fix = "build it with replib.models.text.clip_tokenizer() (offline) or load it from a local folder that has the files"
    if n < 1000:
        raise RuntimeError(
            f"the tokenizer has only {n} tokens instead of CLIP's {VOCAB_SIZE}: it was most likely made by "
            f"CLIPTokenizer.from_pretrained(<hub id>) without network, which silently falls back to a tokenizer that "
            f"knows only its special tokens and maps every word to the same id. {fix}")
    if n != VOCAB_SIZE:
        raise RuntimeError(f"the tokenizer has {n} tokens, not CLIP's {VOCAB_SIZE}: it is not CLIP's tokenizer "
                           f"(a text encoder with vocab_size={VOCAB_SIZE} expects CLIP's ids). {fix}")
    ids = list(tokenizer(KNOWN_TEXT).input_ids)
    if ids != KNOWN_IDS:
        raise RuntimeError(f"the tokenizer encodes {KNOWN_TEXT!r} as {ids}, CLIP's tokenizer as {KNOWN_IDS}: wrong "
                           f"vocabulary or merges. {fix}")
    if tokenizer.pad_token is None:
        raise RuntimeError("the tokenizer has no pad token, so padding='max_length' (as Stable Diffusion pads) "
                           "fails; set tokenizer.pad_token = '<|endoftext|>'")
    if max_length is not None and tokenizer.model_max_length != max_length:
        raise RuntimeError(f"the tokenizer's model_max_length is {tokenizer.model_max_length}, not {max_length} "
                           f"(CLIP's text encoder has {MAX_LENGTH} positions, and Stable Diffusion pads to "
                           f"model_max_length): pass model_max_length={max_length} when loading it")
    return tokenizer


def small_text_encoder(hidden: int = 64, layers: int = 2, heads: int = 2, seed: int = 0):
    """A small `transformers.CLIPTextModel` with CLIP's vocabulary (49,408) and 77 positions, freshly initialised from
    `seed` (the caller's global torch RNG is left untouched). `hidden` must be divisible by `heads`; the MLP is
    4 x hidden wide, as in CLIP. Its `last_hidden_state` (B, L, hidden) is what a UNet cross-attends to, so the UNet's
    `cross_attention_dim` must equal `hidden`."""
    from transformers import CLIPTextConfig, CLIPTextModel

    hidden, layers, heads = check_int("hidden", hidden, 1), check_int("layers", layers, 1), check_int("heads", heads, 1)
    if hidden % heads:
        raise ParameterError(f"parameter hidden={hidden} is not allowed: hidden must be divisible by heads={heads}")
    config = CLIPTextConfig(vocab_size=VOCAB_SIZE, max_position_embeddings=MAX_LENGTH, hidden_size=hidden,
                            intermediate_size=4 * hidden, num_hidden_layers=layers, num_attention_heads=heads,
                            projection_dim=hidden, bos_token_id=KNOWN_IDS[0], eos_token_id=KNOWN_IDS[-1],
                            pad_token_id=KNOWN_IDS[-1])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CLIPTextModel(config)


def tokenize(tokenizer, prompts: list[str]) -> torch.Tensor:
    """Token ids (B, model_max_length) padded and truncated the way `StableDiffusionPipeline.encode_prompt` does."""
    return tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids
