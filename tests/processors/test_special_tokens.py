"""The special tokens' one definition against the real Qwen vocabulary and Qwen-VL's published ids."""

import pytest

from paddlemix.models.qwen_vl.tokenizer import QWenVLTokenizer, default_vocab_file
from paddlemix.processors import special_tokens as st

# Ids as published with Qwen-VL (tokenization_qwen.py and config.json of Qwen/Qwen-VL-Chat).
PUBLISHED = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645, "<|extra_204|>": 151850,
             "<ref>": 151851, "<box>": 151853, "<img>": 151857, "</img>": 151858, "<imgpad>": 151859}


def test_ids_follow_the_real_vocabulary():
    with open(default_vocab_file(), "rb") as f:
        ranks = sum(1 for line in f if line.strip())
    assert st.BPE_RANKS == ranks == 151643
    assert {t: st.SPECIAL_TOKEN_IDS[t] for t in PUBLISHED} == PUBLISHED
    assert len(st.SPECIAL_TOKEN_IDS) == 3 + 205 + 9  # ChatML, <|extra_*|>, ref/box/quad/img tags
    assert (st.ENDOFTEXT_ID, st.IMG_START_ID) == (151643, 151857)
    assert st.CHAT_STOP_IDS == (151645, 151644, 151643)  # <|im_end|>, <|im_start|>, <|endoftext|>


def test_the_tokenizer_uses_them():
    tok = QWenVLTokenizer()
    for token, want in PUBLISHED.items():
        if token not in ("<img>", "</img>"):  # image tags are encoded only as a pair around a path
            assert tok.encode_text(token) == [want]
    assert (tok.eod_id, tok.im_start_id, tok.im_end_id, tok.img_start_id) == (151643, 151644, 151645, 151857)


def test_a_vocabulary_of_another_size_is_refused(tmp_path):
    short = tmp_path / "short.tiktoken"
    with open(default_vocab_file(), "rb") as f:
        short.write_bytes(b"".join(f.readlines()[:1000]))
    with pytest.raises(ValueError, match=r"short\.tiktoken: 1000 BPE ranks, expected Qwen's 151643"):
        QWenVLTokenizer(vocab_file=str(short))
