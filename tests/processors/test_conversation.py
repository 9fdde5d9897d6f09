"""Label masking and truncation, checked against a rendering written out by hand in the test."""

import pytest

from paddlemix.models.qwen_vl.tokenizer import QWenVLTokenizer
from paddlemix.bird.image_tag import image_prefix
from paddlemix.processors.conversation import SampleTooLong, encode_conversation, encode_prompt

IGNORE = -100


@pytest.fixture(scope="module")
def tok():
    return QWenVLTokenizer(image_span=16)


def hand_rendered(tok, turns):
    """(ids, labels) built from literal ChatML strings, not through the code under test."""
    ids, labels = [], []

    def add(text, trained):
        piece = tok(text)["input_ids"]
        ids.extend(piece)
        labels.extend(piece if trained else [IGNORE] * len(piece))

    add("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n", False)
    for user, answer in turns:
        add("<|im_start|>user\n" + user + "<|im_end|>\n<|im_start|>assistant\n", False)
        add(answer, True)
        ids.append(151645)  # <|im_end|> is trained
        labels.append(151645)
        add("\n", False)
    return ids, labels


TURNS = [
    ("Picture 1: <img>img/a.png</img>\nWhere is the liver?", "<ref>liver</ref><box>(100,200),(400,650)</box>"),
    ("What is in <box>(10,10),(90,90)</box>?", "left kidney"),
    ("Describe the region <box>(1,2),(3,4)</box>.", "A small structure in the upper left of the CT image."),
]


def test_multi_turn_labels_train_exactly_the_answers(tok):
    enc = encode_conversation(tok, TURNS)
    want_ids, want_labels = hand_rendered(tok, TURNS)
    assert enc.input_ids == want_ids
    assert enc.labels == want_labels
    # The trained tokens decode to the three answers, each followed by <|im_end|>.
    trained = [t for t in enc.labels if t != IGNORE]
    assert tok.decode(trained) == "".join(a + "<|im_end|>" for _, a in TURNS)
    assert enc.image_paths == ["img/a.png"]


def test_truncation_drops_whole_turns(tok):
    full = encode_conversation(tok, TURNS)
    two = encode_conversation(tok, TURNS[:2])
    enc = encode_conversation(tok, TURNS, max_length=len(full.input_ids) - 1)
    assert enc.input_ids == two.input_ids and enc.labels == two.labels
    assert (enc.n_turns, enc.n_turns_dropped) == (2, 1)
    assert enc.input_ids[-1] == tok("\n")["input_ids"][0]


def test_truncation_never_splits_an_image_span(tok):
    one = encode_conversation(tok, TURNS[:1])
    start = one.input_ids.index(tok.img_start_id)
    with pytest.raises(SampleTooLong, match="first turn needs"):
        encode_conversation(tok, TURNS, max_length=start + 5)
    with pytest.raises(SampleTooLong):
        encode_conversation(tok, TURNS, max_length=len(one.input_ids) - 1)
    assert encode_conversation(tok, TURNS, max_length=len(one.input_ids)).n_trained > 0


def test_prompt_is_the_training_context(tok):
    question = image_prefix("img/b.png") + "Where is the spleen?"
    prompt = encode_prompt(tok, question)
    train = encode_conversation(tok, [(question, "<ref>spleen</ref><box>(1,1),(5,5)</box>")])
    first_label = next(i for i, t in enumerate(train.labels) if t != IGNORE)
    assert train.input_ids[:first_label] == prompt
    assert tok.decode(prompt).endswith("<|im_start|>assistant\n")


def test_an_open_last_turn_is_cut_as_a_whole(tok):
    one_ids, one_labels = hand_rendered(tok, TURNS[:1])
    turns = TURNS[:1] + [("And the spleen?", None)]
    enc = encode_conversation(tok, turns, max_length=len(one_ids) + 5)  # the open turn needs more than 5
    assert (enc.input_ids, enc.labels) == (one_ids, one_labels)
    assert (enc.n_turns, enc.n_turns_dropped) == (1, 1)
    open_turn = tok("<|im_start|>user\nAnd the spleen?<|im_end|>\n<|im_start|>assistant\n")["input_ids"]
    assert encode_conversation(tok, turns).input_ids == one_ids + open_turn
