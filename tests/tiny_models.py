"""Tiny random-initialised causal LMs and a character tokenizer, built on the fly for tests."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase, PreTrainedTokenizerFast

EOS = "<eos>"
CHAT_TEMPLATE = "{% for m in messages %}{{ m['role'][0] }}{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}a{% endif %}"


def char_tokenizer(chars: str) -> PreTrainedTokenizerFast:
    """One token per character (ids 1..len(chars)) plus <eos> = 0; decodes losslessly."""
    vocab = {EOS: 0, **{c: i + 1 for i, c in enumerate(chars)}}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=EOS))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=EOS, pad_token=EOS)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def save_tiny_lm(
    out_dir: Path,
    tokenizer: PreTrainedTokenizerBase,
    seed: int,
    *,
    init_range: float = 0.3,
    hidden: int = 16,
    layers: int = 1,
    max_context: int = 256,
) -> Path:
    """A random Llama over the tokenizer's vocabulary. A large init_range makes its
    distributions peaked, so two such models differ clearly (the statistical tests need that)."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=max_context,
        initializer_range=init_range,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    LlamaForCausalLM(config).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def random_eagle_head(target: LlamaForCausalLM, target_name: str, slice_ids: list[int], seed: int):
    """An EAGLE head for `target` with random weights of a useful scale (norms included), attached to
    the target's tables; q is zero outside `slice_ids`."""
    from specdec.runtime.eagle_head import EagleConfig, EagleHead

    torch.manual_seed(seed)
    head = EagleHead(EagleConfig.for_target(target_name, target, len(slice_ids)))
    for parameter in head.parameters():
        torch.nn.init.normal_(parameter, std=0.3 if parameter.dim() > 1 else 1.0)
    head.slice_ids = torch.tensor(sorted(slice_ids))
    head.attach_target(target)
    return head.eval()


def save_tiny_eagle(out_dir: Path, target_dir: Path, seed: int, slice_ids: list[int]) -> Path:
    """A random EAGLE head for the tiny target in target_dir, saved as `specdec distill --method eagle` does."""
    from transformers import AutoTokenizer

    from specdec.runtime.eagle_head import save_head

    head = random_eagle_head(LlamaForCausalLM.from_pretrained(target_dir), str(target_dir), slice_ids, seed)
    save_head(head, out_dir, torch.float32)
    AutoTokenizer.from_pretrained(target_dir).save_pretrained(out_dir)
    return out_dir
