"""The Med-GRIT image tag: read, repoint and add ``Picture N: <img>path</img>``."""

from paddlemix.bird.image_tag import image_prefix, split_image_prefix, with_image


def test_the_tag_is_split_off_the_question():
    assert split_image_prefix("Picture 1: <img>a/b.png</img>\nWhere is it?") == ("a/b.png", "Where is it?")
    assert split_image_prefix("  Picture 2:<img>x y.png</img>Where?") == ("x y.png", "Where?")
    assert split_image_prefix("Where? Picture 1: <img>a.png</img>") == (None, "Where? Picture 1: <img>a.png</img>")


def test_with_image_repoints_or_adds_the_tag():
    assert image_prefix("p.png", 3) == "Picture 3: <img>p.png</img>\n"
    assert with_image("Picture 1: <img>/old/a.png</img>\nWhere?", "a.png") == "Picture 1: <img>a.png</img>\nWhere?"
    assert with_image("Where?", "a.png") == "Picture 1: <img>a.png</img>\nWhere?"
