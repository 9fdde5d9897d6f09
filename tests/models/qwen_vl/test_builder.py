"""The one build/load home: seeded presets, checkpoint loading, and which tokenizer a directory gives."""

import numpy as np
import pytest

from paddlemix.models.qwen_vl.builder import build_model, load_config, load_model, load_tokenizer


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny checkpoint with tokenizer files of span 64 and one without tokenizer files."""
    root = tmp_path_factory.mktemp("builder")
    model = build_model(preset="tiny", seed=3)
    with_tok, bare = str(root / "with_tokenizer"), str(root / "bare")
    model.save_pretrained(with_tok)
    model.save_pretrained(bare)
    load_tokenizer(None, 64).save_pretrained(with_tok)
    return model, with_tok, bare


def state(model):
    return {k: v.numpy() for k, v in model.state_dict().items()}


def test_a_preset_is_the_seeds_random_start():
    a, b, c = build_model(preset="tiny", seed=5), build_model(preset="tiny", seed=5), build_model(preset="tiny", seed=6)
    sa, sb, sc = state(a), state(b), state(c)
    assert all(np.array_equal(sa[k], sb[k]) for k in sa)
    assert not np.array_equal(sa["lm_head.weight"], sc["lm_head.weight"])


def test_a_checkpoint_loads_its_weights_and_tokenizer(saved):
    model, with_tok, bare = saved
    loaded, tokenizer, processor = load_model(with_tok)
    assert not loaded.training
    want = state(model)
    got = state(loaded)
    assert all(np.array_equal(got[k], want[k]) for k in want)
    # Which tokenizer a directory gives (its own or the default) is told apart in the test below,
    # with a default span the saved one does not have; here both would say 64.
    assert tokenizer.image_span == loaded.config.image_span and processor.image_size == 224
    assert load_config(checkpoint=bare).visual == model.config.visual


def test_the_tokenizer_comes_from_the_first_directory_that_has_one(saved, tmp_path):
    _, with_tok, bare = saved
    assert load_tokenizer([bare, with_tok], 7).image_span == 64  # with_tok's saved span, not 7
    assert load_tokenizer(bare, 7).image_span == 7  # no tokenizer files: the default vocabulary
    assert load_tokenizer(None, 9).image_span == 9


def test_bad_sources_are_refused(saved, tmp_path):
    _, with_tok, _ = saved
    with pytest.raises(ValueError, match="exactly one"):
        build_model(preset="tiny", checkpoint=with_tok)
    with pytest.raises(ValueError, match="exactly one"):
        load_config()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        build_model(checkpoint=str(tmp_path))
    with pytest.raises(ValueError, match="keeps its own weights"):
        build_model(checkpoint=with_tok, resampler_init="spatial")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_model(str(tmp_path / "nowhere"))
