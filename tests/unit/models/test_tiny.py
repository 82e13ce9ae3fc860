"""`ecr model tiny`: an ordinary HF folder that the normal loading path reads."""

from __future__ import annotations

from transformers import AutoProcessor, Qwen2_5OmniProcessor, Qwen2_5OmniThinkerForConditionalGeneration

from ecr.fixtures.tiny_models import FORMAT_TOKENS, OMNI_SPECIAL_TOKENS, count_parameters
from ecr.prompts import DEFAULT_INSTRUCTION, format_target


def test_tiny_folder_loads_with_the_standard_classes(tiny_omni):
    processor = AutoProcessor.from_pretrained(tiny_omni, local_files_only=True)
    assert isinstance(processor, Qwen2_5OmniProcessor)
    model = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(tiny_omni, local_files_only=True)
    n = sum(p.numel() for p in model.parameters())
    assert 300_000 < n < 3_000_000 and n == count_parameters(tiny_omni)
    tok = processor.tokenizer
    assert model.config.video_token_id == tok.video_token_id and model.config.audio_token_id == tok.audio_token_id
    assert model.config.text_config.vocab_size == len(tok)
    assert processor.feature_extractor.feature_size == 128


def test_tiny_tokenizer_knows_the_format_and_special_tokens(tiny_omni):
    tok = AutoProcessor.from_pretrained(tiny_omni, local_files_only=True).tokenizer
    for t in (*FORMAT_TOKENS, *OMNI_SPECIAL_TOKENS):
        assert len(tok(t, add_special_tokens=False)["input_ids"]) == 1, t
    target = format_target("The person smiles broadly.", "happy")
    ids = tok(target, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids, skip_special_tokens=True) == target  # format tags survive decoding
    assert len(tok(DEFAULT_INSTRUCTION)["input_ids"]) < len(DEFAULT_INSTRUCTION) / 2.5  # BPE merges learned on it
