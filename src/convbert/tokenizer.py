"""`ConvBertTokenizer`: BERT WordPiece tokenization, a thin layer over the `tokenizers` library.

Files and ids are interchangeable with transformers' `ConvBertTokenizer`/`BertTokenizerFast`:
`save_pretrained` writes tokenizer.json, vocab.txt, tokenizer_config.json and special_tokens_map.json.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Encoding, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece
from tokenizers.trainers import WordPieceTrainer

from .errors import InputError
from .fileio import atomic_write_json, atomic_write_text, utf8_error_line
from .settings import PositiveInt, add_command, validate, write_run_config
from .tokenizer_files import check_text_file, from_tokenizer_json, read_config, read_vocab

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)
TRUNCATION_STRATEGIES = ("longest_first", "only_first", "only_second")


def canonical_vocab(vocab: dict[str, int], special_tokens: Sequence[str]) -> dict[str, int]:
    """The trained vocab with ids in an order fixed by its tokens alone: the special tokens, single characters,
    `##` characters, then the rest, each sorted. `tokenizers` numbers tied pieces in hash order, which changes
    from process to process; WordPiece looks pieces up by text, so the order carries no meaning."""

    def rank(piece: str) -> tuple[int, str]:
        return (0 if len(piece) == 1 else 1 if len(piece) == 3 and piece.startswith("##") else 2), piece

    rest = sorted(set(vocab) - set(special_tokens), key=rank)
    return {p: i for i, p in enumerate([*special_tokens, *rest])}


class ConvBertTokenizer:
    """BERT WordPiece tokenizer: BertNormalizer, BertPreTokenizer, WordPiece (`##`, [UNK]),
    `[CLS] A [SEP] (B [SEP])` with type ids 0/1, WordPiece decoder."""

    def __init__(
        self,
        backend: Tokenizer,
        do_lower_case: bool = True,
        strip_accents: bool | None = None,
        model_max_length: int = 512,
        source: str = "<tokenizer>",
    ) -> None:
        """Wrap a WordPiece `backend` whose vocab holds the five BERT special tokens.

        The normalizer, post-processor and decoder are (re)set from the arguments; `source`
        names the file the tokenizer came from in error messages."""
        self.source = source
        missing = [t for t in SPECIAL_TOKENS if backend.token_to_id(t) is None]
        if missing:
            raise InputError(f"{source}: vocabulary lacks the special token(s) {', '.join(missing)}")
        backend.no_truncation()
        backend.no_padding()
        backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
        backend.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=strip_accents, lowercase=do_lower_case
        )
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        backend.post_processor = processors.TemplateProcessing(
            single=f"{CLS}:0 $A:0 {SEP}:0",
            pair=f"{CLS}:0 $A:0 {SEP}:0 $B:1 {SEP}:1",
            special_tokens=[(CLS, backend.token_to_id(CLS)), (SEP, backend.token_to_id(SEP))],
        )
        backend.decoder = decoders.WordPiece(prefix="##")
        self._backend = backend
        self.do_lower_case = do_lower_case
        self.strip_accents = strip_accents
        self.model_max_length = model_max_length

    # ---------------------------------------------------------------- loading
    @classmethod
    def from_vocab(cls, vocab: dict[str, int], **kwargs: Any) -> ConvBertTokenizer:
        """A tokenizer over a token -> id mapping (ids 0..n-1)."""
        return cls(Tokenizer(WordPiece(vocab, unk_token=UNK, continuing_subword_prefix="##")), **kwargs)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> ConvBertTokenizer:
        """Load from a model dir (tokenizer.json, else vocab.txt; tokenizer_config.json's
        `do_lower_case`, `strip_accents` and `model_max_length` are honoured), a vocab.txt file,
        a tokenizer.json file or a Hugging Face hub id (`org/name[@revision]`, see `hub.resolve_dir`)."""
        if not Path(path).exists():
            from .hub import TOKENIZER_FILES, resolve_dir  # here: torch is imported only to look up a hub id

            path = resolve_dir(path, TOKENIZER_FILES)
        path = Path(path)
        if path.is_dir():
            config = read_config(path / "tokenizer_config.json")
            if (path / "tokenizer.json").is_file():
                return from_tokenizer_json(cls, path / "tokenizer.json", config)
            if (path / "vocab.txt").is_file():
                return cls.from_vocab(read_vocab(path / "vocab.txt"), source=str(path / "vocab.txt"), **config)
            raise InputError(f"{path}: directory has neither tokenizer.json nor vocab.txt")
        if path.is_file():
            if path.suffix == ".json":
                return from_tokenizer_json(cls, path, {})
            return cls.from_vocab(read_vocab(path), source=str(path))
        raise InputError(f"{path}: no such tokenizer file or directory")

    @classmethod
    def train(
        cls,
        files: Sequence[str | Path],
        vocab_size: int,
        do_lower_case: bool = True,
        strip_accents: bool | None = None,
        min_frequency: int = 2,
        special_tokens: Sequence[str] = SPECIAL_TOKENS,
        limit_alphabet: int = 1000,
    ) -> ConvBertTokenizer:
        """Train a WordPiece vocab on UTF-8 text files; `special_tokens` take the first ids ([PAD] = 0)."""
        special_tokens = list(special_tokens)
        if not special_tokens or special_tokens[0] != PAD or not set(SPECIAL_TOKENS) <= set(special_tokens):
            raise InputError(f"special_tokens must start with {PAD} and contain {', '.join(SPECIAL_TOKENS)}")
        if vocab_size < len(special_tokens):
            raise InputError(f"vocab_size {vocab_size} is smaller than the {len(special_tokens)} special tokens")
        if not files:
            raise InputError("no training files given")
        for f in files:
            check_text_file(Path(f))
        backend = Tokenizer(WordPiece(unk_token=UNK, continuing_subword_prefix="##"))
        backend.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=strip_accents, lowercase=do_lower_case
        )
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        trainer = WordPieceTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=special_tokens,
            limit_alphabet=limit_alphabet,
            continuing_subword_prefix="##",
            show_progress=False,
        )
        try:
            backend.train([str(f) for f in files], trainer)
        except Exception as e:  # tokenizers reports unreadable input (e.g. not UTF-8) as a bare Exception
            for f in files:  # it names neither file nor line: find the bad byte's
                found = utf8_error_line(f)
                if found is not None:
                    raise InputError(f"{f}:{found[0]}: not valid UTF-8: {found[1]}") from None
            raise InputError(f"cannot train on {', '.join(map(str, files))}: {e}") from e
        backend.model = WordPiece(
            canonical_vocab(backend.get_vocab(), special_tokens), unk_token=UNK, continuing_subword_prefix="##"
        )
        return cls(
            backend,
            do_lower_case=do_lower_case,
            strip_accents=strip_accents,
            source=f"trained on {', '.join(map(str, files))}",
        )

    # ---------------------------------------------------------------- saving
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write tokenizer.json, vocab.txt, tokenizer_config.json and special_tokens_map.json into
        `directory` (created if needed; other files are kept), each atomically."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_text(directory / "tokenizer.json", self._backend.to_str(pretty=True))
        atomic_write_text(
            directory / "vocab.txt", "".join(t + "\n" for t in self.convert_ids_to_tokens(range(self.vocab_size)))
        )
        special = {"unk_token": UNK, "sep_token": SEP, "pad_token": PAD, "cls_token": CLS, "mask_token": MASK}
        atomic_write_json(
            directory / "tokenizer_config.json",
            {
                "tokenizer_class": "ConvBertTokenizer",
                "do_lower_case": self.do_lower_case,
                "strip_accents": self.strip_accents,
                "tokenize_chinese_chars": True,
                "model_max_length": self.model_max_length,
                **special,
            },
        )
        atomic_write_json(directory / "special_tokens_map.json", special)
        return directory

    # ---------------------------------------------------------------- vocabulary
    @property
    def backend(self) -> Tokenizer:
        """The underlying `tokenizers.Tokenizer`."""
        return self._backend

    @property
    def vocab_size(self) -> int:
        return self._backend.get_vocab_size(with_added_tokens=True)

    @property
    def pad_token_id(self) -> int:
        return self._id(PAD)

    @property
    def unk_token_id(self) -> int:
        return self._id(UNK)

    @property
    def cls_token_id(self) -> int:
        return self._id(CLS)

    @property
    def sep_token_id(self) -> int:
        return self._id(SEP)

    @property
    def mask_token_id(self) -> int:
        return self._id(MASK)

    @property
    def special_token_ids(self) -> set[int]:
        return {self._id(t) for t in SPECIAL_TOKENS}

    def _id(self, token: str) -> int:
        return self._backend.token_to_id(token)

    def token_to_id(self, token: str) -> int | None:
        return self._backend.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self._backend.id_to_token(token_id)

    def convert_ids_to_tokens(self, ids: Iterable[int]) -> list[str]:
        tokens = [self._backend.id_to_token(int(i)) for i in ids]
        if None in tokens:
            raise InputError(f"token id outside the vocabulary of size {self.vocab_size}")
        return tokens

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        return self._backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def check_vocab(self, config_vocab_size: int) -> None:
        """Raise InputError if the tokenizer has ids the model's embedding (config vocab_size) lacks."""
        if self.vocab_size > config_vocab_size:
            raise InputError(
                f"{self.source}: tokenizer vocab size {self.vocab_size} exceeds the model config's "
                f"vocab_size {config_vocab_size}"
            )

    # ---------------------------------------------------------------- encoding
    def encode(self, text: str, text_pair: str | None = None, max_length: int | None = None) -> list[int]:
        """Token ids with [CLS]/[SEP]; truncated (longest first) to `max_length` when given."""
        inputs = [text if text_pair is None else (text, text_pair)]
        return self._encode_batch(inputs, max_length, "longest_first", 0)[0].ids

    def __call__(
        self,
        texts: str | Sequence[str],
        text_pairs: str | Sequence[str] | None = None,
        max_length: int | None = None,
        padding: bool | str = True,
        truncation: bool | str = True,
        stride: int = 0,
        return_overflowing_tokens: bool = False,
        return_offsets: bool = False,
        return_tensors: str | None = "pt",
    ) -> dict[str, Any]:
        """Encode a batch (a single str is a batch of one) like transformers' fast tokenizers.

        padding: True/"longest" (to the longest row), "max_length", or False.
        truncation: True (= "longest_first"), "only_first", "only_second" or False; to `max_length`,
        default `model_max_length`. With `return_overflowing_tokens`, each truncated row continues in
        further rows that repeat `stride` tokens of the previous one, and `overflow_to_sample_mapping`
        gives each row's input index (for SQuAD-style doc-stride features use "only_second").
        Returns input_ids, token_type_ids, attention_mask, plus offset_mapping ((start, end) character
        offsets into that row's own text; (0, 0) for special and pad tokens) and sequence_ids (lists
        of 0/1/None, never a tensor) when `return_offsets`. return_tensors="pt" gives torch.long tensors.
        """
        inputs = _batch_inputs(texts, text_pairs)
        strategy = _truncation_strategy(truncation)
        if padding not in (True, False, "longest", "max_length"):
            raise ValueError(f"padding must be True, False, 'longest' or 'max_length', got {padding!r}")
        if return_tensors not in (None, "pt"):
            raise ValueError(f"return_tensors must be 'pt' or None, got {return_tensors!r}")
        max_length = self.model_max_length if max_length is None else max_length
        if return_overflowing_tokens and text_pairs is not None and strategy == "longest_first":
            raise ValueError("overflowing tokens of pairs need truncation='only_first' or 'only_second'")
        encodings = self._encode_batch(
            inputs,
            max_length if strategy else None,
            strategy or "longest_first",
            stride if return_overflowing_tokens else 0,
        )

        rows: list[Encoding] = []
        sample_mapping: list[int] = []
        for i, enc in enumerate(encodings):
            for row in [enc, *enc.overflowing] if return_overflowing_tokens else [enc]:
                rows.append(row)
                sample_mapping.append(i)
        width = _pad_width([len(row.ids) for row in rows], padding, max_length, return_tensors is not None)
        out = _padded_columns(rows, width, self.pad_token_id, return_offsets)
        if return_overflowing_tokens:
            out["overflow_to_sample_mapping"] = sample_mapping
        if return_tensors == "pt":
            import torch

            out = {k: v if k == "sequence_ids" else torch.tensor(v, dtype=torch.long) for k, v in out.items()}
        return out

    def _encode_batch(self, inputs: list[Any], max_length: int | None, strategy: str, stride: int) -> list[Encoding]:
        for item in inputs:
            if not all(isinstance(t, str) for t in (item if isinstance(item, tuple) else (item,))):
                raise TypeError(f"texts must be str, got {item!r}")
        if max_length is not None:
            n_special = 3 if inputs and isinstance(inputs[0], tuple) else 2
            if max_length < n_special:
                raise ValueError(f"max_length {max_length} leaves no room for the {n_special} special tokens")
            if stride:
                self._check_stride(inputs, max_length, strategy, stride)
            self._backend.enable_truncation(max_length, stride=stride, strategy=strategy)
        try:
            return self._backend.encode_batch(inputs)
        except Exception as e:  # tokenizers raises a bare Exception, e.g. when only_second cannot fit
            raise InputError(f"cannot truncate to max_length {max_length} ({strategy}): {e}") from e
        finally:
            self._backend.no_truncation()

    def _check_stride(self, inputs: list[Any], max_length: int, strategy: str, stride: int) -> None:
        """ValueError where a truncated sequence has no more than `stride` tokens of room
        (tokenizers would panic there)."""
        pairs = bool(inputs) and isinstance(inputs[0], tuple)
        columns = [list(c) for c in zip(*inputs)] if pairs else [inputs]
        lengths = [[len(e.ids) for e in self._backend.encode_batch(c, add_special_tokens=False)] for c in columns]
        n_special = 3 if pairs else 2
        if not pairs:
            kept = [0] * len(inputs)
        else:
            kept = lengths[0] if strategy == "only_second" else lengths[1]
        for i, total in enumerate(map(sum, zip(*lengths))):
            room = max_length - n_special - kept[i]
            if total + n_special > max_length and 0 < room <= stride:
                raise ValueError(
                    f"input {i}: stride {stride} must be smaller than the {room} tokens left "
                    f"for its truncated sequence at max_length {max_length}"
                )


# -------------------------------------------------------------------- batch encoding helpers
def _batch_inputs(texts: str | Sequence[str], text_pairs: str | Sequence[str] | None) -> list[Any]:
    """The texts, or (text, pair) tuples, as a list (a single str is a batch of one)."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    if text_pairs is None:
        return texts
    text_pairs = [text_pairs] if isinstance(text_pairs, str) else list(text_pairs)
    if len(text_pairs) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(text_pairs)} text_pairs")
    return list(zip(texts, text_pairs))


def _truncation_strategy(truncation: bool | str) -> str | None:
    """The tokenizers truncation strategy that `truncation` asks for; None for no truncation."""
    if truncation is True:
        truncation = "longest_first"
    if truncation and truncation not in TRUNCATION_STRATEGIES:
        raise ValueError(f"truncation must be a bool or one of {TRUNCATION_STRATEGIES}, got {truncation!r}")
    return truncation or None


def _pad_width(lengths: list[int], padding: bool | str, max_length: int, tensors: bool) -> int:
    """The length every row is padded to (0: none); rows of different lengths cannot make `tensors`."""
    if padding == "max_length":
        return max([max_length, *lengths])
    if padding:
        return max(lengths, default=0)
    if tensors and len(set(lengths)) > 1:
        raise ValueError("rows differ in length: use padding or return_tensors=None")
    return 0


def _padded_columns(rows: list[Encoding], width: int, pad_id: int, offsets: bool) -> dict[str, list[Any]]:
    """input_ids, token_type_ids and attention_mask (and offset_mapping, sequence_ids when `offsets`) of the
    rows, each padded to `width`."""

    def pad(values: list[Any], fill: Any) -> list[Any]:
        return values + [fill] * (width - len(values))

    out: dict[str, Any] = {
        "input_ids": [pad(r.ids, pad_id) for r in rows],
        "token_type_ids": [pad(r.type_ids, 0) for r in rows],
        "attention_mask": [pad(r.attention_mask, 0) for r in rows],
    }
    if offsets:
        out["offset_mapping"] = [pad(r.offsets, (0, 0)) for r in rows]
        out["sequence_ids"] = [pad(r.sequence_ids, None) for r in rows]
    return out


# -------------------------------------------------------------------- CLI
@dataclass
class TokenizerTrainConfig:
    input: list[str]  # UTF-8 text files
    vocab_size: PositiveInt  # WordPiece vocabulary size, special tokens included
    out: str  # directory to write the tokenizer files to
    lower_case: bool = True  # lowercase the text
    strip_accents: bool | None = None  # strip accents (default: same as lower_case)
    min_frequency: PositiveInt = 2  # a pair merges only if it occurs this often

    def __post_init__(self) -> None:
        validate(self)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `tokenizer train` to the CLI."""
    parser = subparsers.add_parser("tokenizer", help="WordPiece tokenizer tools")
    sub = parser.add_subparsers(dest="tokenizer_command", required=True)
    add_command(
        sub,
        "train",
        TokenizerTrainConfig,
        _train_command,
        help="train a WordPiece vocab on text files and save it",
        aliases={"out": ["--output_dir"]},
        metavars={"input": "FILE", "out": "DIR"},
    )


def _train_command(cfg: TokenizerTrainConfig) -> int:
    tokenizer = ConvBertTokenizer.train(
        cfg.input,
        vocab_size=cfg.vocab_size,
        do_lower_case=cfg.lower_case,
        strip_accents=cfg.strip_accents,
        min_frequency=cfg.min_frequency,
    )
    out = tokenizer.save_pretrained(cfg.out)
    write_run_config(out, cfg)
    print(f"wrote a {tokenizer.vocab_size}-token WordPiece tokenizer to {out}")
    return 0
