"""Tokenizers: attach one to a HookedTransformer, and train a small byte-level BPE offline.

Conventions (the same for every model this package loads):
- `model.tokenizer` is a `transformers.PreTrainedTokenizerFast` with a pad token and
  `padding_side == "right"`; project code tokenizes with it directly.
- Whether BOS is prepended is the tokenizer's own behaviour (`model.tokenizer(text)`), and
  `model.cfg.default_prepend_bos == model.cfg.tokenizer_prepends_bos` mirrors it, so
  `model.to_tokens(text)` gives the same ids as `model.tokenizer(text).input_ids`.
  The tiny model's tokenizer prepends BOS; SmolLM2's (as on the hub) does not.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from circuit_transfer.models.backend import Model, TransformerBridge

BOS, EOS, PAD, UNK = "<|bos|>", "<|eos|>", "<|pad|>", "<|unk|>"
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK]  # ids 0..3 in this order

# Each extra word is shown to the BPE trainer this many times, so that its merges are learnt first.
_EXTRA_WORD_REPEATS = 1000


def tokenizer_prepends_bos(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether encoding a plain string with `tokenizer` puts BOS first."""
    if tokenizer.bos_token_id is None:
        return False
    ids = tokenizer("a")["input_ids"]
    return len(ids) > 0 and ids[0] == tokenizer.bos_token_id


def attach_tokenizer(model: Model, tokenizer: PreTrainedTokenizerBase) -> Model:
    """Attach `tokenizer` to `model` as is (pad token set, right padding) and sync the BOS flags.

    Unlike `HookedTransformer.set_tokenizer`, this never reloads the tokenizer by name (which
    would need the hub and could change whether BOS is added).
    """
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
    tokenizer.padding_side = "right"
    if isinstance(model, TransformerBridge):
        # the bridge's `tokenizer` setter swaps in a copy with add_bos_token=True: keep the
        # tokenizer's own behaviour, as on the hooked backend (SmolLM2's adds no BOS)
        model._tokenizer = tokenizer
    else:
        model.tokenizer = tokenizer
    prepends = tokenizer_prepends_bos(tokenizer)
    model.cfg.tokenizer_prepends_bos = prepends
    model.cfg.default_prepend_bos = prepends
    return model


def single_token_id(tokenizer: PreTrainedTokenizerBase, word: str) -> int | None:
    """The id of `word` if it encodes (without special tokens) to exactly one token, else None."""
    ids = tokenizer(word, add_special_tokens=False)["input_ids"]
    return ids[0] if len(ids) == 1 else None


def train_bpe_tokenizer(
    texts: Sequence[str], vocab_size: int, extra_words: Sequence[str] = ()
) -> PreTrainedTokenizerFast:
    """Train a GPT-2-style byte-level BPE tokenizer on `texts`, offline and deterministically.

    Words are split GPT-2 style, so a word after a space carries the space (" positive" is one
    token-with-space, "positive" another). Encoding prepends `<|bos|>`. Every string in
    `extra_words` becomes a single token: it is shown to the trainer many times so that BPE
    learns it as an ordinary token; any that still is not one is added as an `AddedToken`.
    """
    extra_words = list(dict.fromkeys(extra_words))  # dedupe, keep order
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )

    def corpus() -> Iterator[str]:
        yield from texts
        for word in extra_words:
            for _ in range(_EXTRA_WORD_REPEATS // 100):
                yield "\n".join([word] * 100)  # newlines keep each copy a separate pre-token

    bpe.train_from_iterator(corpus(), trainer=trainer)
    bos_id = bpe.token_to_id(BOS)
    bpe.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{BOS} $A", pair=f"{BOS} $A $B:1", special_tokens=[(BOS, bos_id)]
            ),
        ]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )
    missing = [w for w in extra_words if single_token_id(tokenizer, w) is None]
    if missing:
        tokenizer.add_tokens([AddedToken(w, normalized=False, single_word=False) for w in missing])
    still = [w for w in extra_words if single_token_id(tokenizer, w) is None]
    if still:
        raise ValueError(f"could not make these extra words single tokens: {still!r}")
    return tokenizer
