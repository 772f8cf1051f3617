"""Tiny models and tokenizers built locally: for tests, the demo and benchmarks (no download).

A character-level BPE tokenizer (optionally with merges, so tokens can merge across the
prompt/completion boundary as real BPE does), a chat template, and tiny GPT-2 / Llama configs.
"""

from __future__ import annotations

import string

import torch
from tokenizers import Tokenizer, decoders, models
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<pad>", "<eos>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
DEFAULT_ALPHABET = string.ascii_letters + string.digits + string.punctuation + " \n"


def build_tokenizer(
    alphabet: str = DEFAULT_ALPHABET,
    merges: list[tuple[str, str]] | None = None,
    chat_template: str | None = CHAT_TEMPLATE,
) -> PreTrainedTokenizerFast:
    """A character-level BPE tokenizer over `alphabet`, plus `merges` (pairs of existing tokens).

    There is no unknown token: characters outside the alphabet are dropped by BPE, so callers keep
    their text inside it. Special tokens come first (ids 0..5); `<eos>` is id 1, `<pad>` id 0.
    """
    merges = list(merges or [])
    vocab: dict[str, int] = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in dict.fromkeys(alphabet):
        vocab.setdefault(ch, len(vocab))
    for a, b in merges:
        if a not in vocab or b not in vocab:
            raise ValueError(f"merge ({a!r}, {b!r}) uses a token not in the vocabulary")
        vocab.setdefault(a + b, len(vocab))
    bpe = models.BPE(vocab=vocab, merges=merges, ignore_merges=False)
    tok = Tokenizer(bpe)
    # No pre-tokenizer, so merges may cross spaces; Fuse joins pieces back without separators.
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(SPECIAL_TOKENS)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>", bos_token=None, unk_token=None
    )
    if chat_template is not None:
        fast.chat_template = chat_template
    return fast


def tiny_gpt2(vocab_size: int, n_layer: int = 2, n_embd: int = 32, n_head: int = 2, n_positions: int = 256,
              seed: int = 0) -> GPT2LMHeadModel:
    """A randomly initialised GPT-2 (deterministic from `seed`), eval mode, float32."""
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=vocab_size, n_layer=n_layer, n_embd=n_embd, n_head=n_head,
                     n_positions=n_positions, bos_token_id=1, eos_token_id=1, pad_token_id=0)
    return GPT2LMHeadModel(cfg).eval()


def tiny_llama(vocab_size: int, n_layer: int = 2, hidden: int = 32, n_head: int = 4, n_kv_head: int = 2,
               seed: int = 0, tie: bool = True) -> LlamaForCausalLM:
    """A randomly initialised Llama (RoPE, GQA, tied head like SmolLM2), eval mode, float32."""
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=hidden * 2,
                      num_hidden_layers=n_layer, num_attention_heads=n_head, num_key_value_heads=n_kv_head,
                      max_position_embeddings=512, tie_word_embeddings=tie, bos_token_id=1, eos_token_id=1,
                      pad_token_id=0)
    return LlamaForCausalLM(cfg).eval()
