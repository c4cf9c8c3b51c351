"""orchestrator.text_stream: stop strings are never released; multi-byte characters come out whole."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from orchestrator.text_stream import TextStream
from tests.tiny_models import char_tokenizer

CHARS = "abcdefghijklmnopqrstuvwxyz .!"
SAMPLE = "héllo wörld 😀 日本語"


@pytest.fixture(scope="module")
def chars():
    return char_tokenizer(CHARS)


@pytest.fixture(scope="module")
def bpe():
    """A byte-level BPE trained on a few lines; the non-ASCII characters span several tokens."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=275, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    backend.train_from_iterator([SAMPLE, "hello world", "the world says hello"], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend)


def stream_text(tokenizer, text: str, stop: tuple[str, ...] = (), prompt: str = "") -> tuple[list[str], TextStream]:
    """Pushes `text` token by token; returns each push's release (and the stream)."""
    stream = TextStream(tokenizer, tokenizer.encode(prompt) if prompt else [], stop)
    releases = []
    for token_id in tokenizer.encode(text):
        releases.append(stream.push(token_id))
        if stream.stopped:
            break
    return releases, stream


def test_text_before_a_stop_is_released_and_the_stop_never_is(chars):
    releases, stream = stream_text(chars, "hello world. more", stop=("world",))
    assert stream.stopped
    assert "".join(releases) == "hello "
    assert all("w" not in r for r in releases)  # not even a partial stop string leaks


def test_partial_match_is_held_back_then_released_when_it_diverges(chars):
    releases, stream = stream_text(chars, "ab abx", stop=("abc",))
    assert releases == ["", "", "ab ", "", "", "abx"]
    assert not stream.stopped and stream.flush() == ""


def test_flush_releases_the_held_back_tail_when_generation_ends(chars):
    releases, stream = stream_text(chars, "say ab", stop=("abc",))
    assert "".join(releases) == "say "
    assert not stream.stopped
    assert stream.flush() == "ab"
    assert stream.flush() == ""


def test_earliest_of_several_stop_strings_wins(chars):
    releases, stream = stream_text(chars, "one two three", stop=("three", "two", "e t"))
    assert stream.stopped and "".join(releases) == "on"
    releases, stream = stream_text(chars, "one two three", stop=("three", "two"))
    assert stream.stopped and "".join(releases) == "one "


def test_stop_string_found_mid_token_releases_only_the_text_before_it(bpe):
    # "hello" is one token here: the stop "ll" starts inside it.
    assert "hello" in bpe.convert_ids_to_tokens(bpe.encode("world hello world"))
    releases, stream = stream_text(bpe, "world hello world", stop=("ll",))
    assert stream.stopped and "".join(releases) == "world he"


def test_multibyte_characters_are_released_whole(bpe):
    ids = bpe.encode(SAMPLE)
    assert any("\ufffd" in bpe.decode([i]) for i in ids), "the test needs characters split across tokens"
    stream = TextStream(bpe, [], ())
    released = [stream.push(token_id) for token_id in ids]
    assert all("\ufffd" not in r for r in released)
    assert "".join(released) + stream.flush() == bpe.decode(ids) == SAMPLE


@pytest.mark.parametrize("prompt", ["héllo", "日本語", "hello 😀"])  # the context window may start mid-character
def test_leading_space_after_a_prompt_survives(bpe, prompt):
    prompt_ids, ids = bpe.encode(prompt), bpe.encode(" wörld 😀 日本語")
    stream = TextStream(bpe, prompt_ids, ())
    released = [stream.push(token_id) for token_id in ids]
    assert all("\ufffd" not in r for r in released)
    assert "".join(released) + stream.flush() == bpe.decode(ids) == " wörld 😀 日本語"


def test_stop_string_made_of_multibyte_characters(bpe):
    releases, stream = stream_text(bpe, SAMPLE, stop=("日本",), prompt="wörld")
    assert stream.stopped and "".join(releases) == "héllo wörld 😀 "
    assert all("\ufffd" not in r for r in releases)
