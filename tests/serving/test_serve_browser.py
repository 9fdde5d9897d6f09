"""The web page in headless Chromium: upload a demo image, ask a VG question, find the answer and the
drawn box; draw a region with the mouse and see it become the RO question. Saves a screenshot."""

import math
import os
import shutil

import pytest
from tests.serving.serve_helpers import SCRIPTED_ANSWER, Server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.slow,  # a server and a headless browser
              pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")]

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
BOX_COLOR = (0xFF, 0x2D, 0x55)  # the page's first box colour


@pytest.fixture(scope="module")
def demo_images(tmp_path_factory):
    from paddlemix.bird.demo_data import build_demo_set

    out = tmp_path_factory.mktemp("demo_sa")
    build_demo_set(str(out / "sa"), max_images=4, seed=0, progress=False)
    return str(out / "sa" / "images")


@pytest.fixture(scope="module")
def server(checkpoints, demo_images):
    server = Server(checkpoints["scripted"], "--examples_dir", demo_images)
    yield server
    server.close()


@pytest.fixture
def page(tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # Debian's Chromium, never a downloaded one; a fresh profile per test.
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
            viewport={"width": 1280, "height": 900},
        )
        yield browser.new_page()
        browser.close()


def test_vg_question_shows_the_answer_and_draws_the_box(server, page, demo_images, tmp_path):
    from PIL import Image

    page.goto(server.url + "/")
    names = sorted(os.listdir(demo_images))
    page.wait_for_function(f"document.querySelectorAll('#examples img').length === {len(names)}")
    image_path = os.path.join(demo_images, names[0])
    width, height = Image.open(image_path).size
    page.set_input_files("#file", image_path)
    page.wait_for_function("document.getElementById('canvas').dataset.ready === '1'")
    page.select_option("#task", "VG")
    page.fill("#phrase", "liver")
    assert page.input_value("#question") == "Where is the liver in this image?"
    page.click("#ask")
    page.wait_for_function("document.getElementById('answer').dataset.done === '1'", timeout=120_000)
    assert page.inner_text("#answer") == SCRIPTED_ANSWER
    items = page.locator("#boxes li.box").all_inner_texts()
    assert len(items) == 1 and items[0].startswith("liver: [")

    # The box's left edge, at half its height, is painted in the box colour: grid 12 and 34..890.
    canvas_width = page.evaluate("document.getElementById('canvas').width")
    scale = canvas_width / width
    x = int(12 / 1000 * width * scale)
    y = int((34 + 890) / 2 / 1000 * height * scale)
    pixel = page.evaluate(f"Array.from(document.getElementById('canvas').getContext('2d').getImageData({x}, {y}, 1, 1).data)")
    assert all(abs(a - b) <= 40 for a, b in zip(pixel[:3], BOX_COLOR)), pixel
    shot = tmp_path / "serve_page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    target = os.environ.get("SERVE_SCREENSHOT")
    if target:
        shutil.copyfile(shot, target)


def test_a_region_drawn_with_the_mouse_becomes_the_ro_question(server, page, demo_images):
    from PIL import Image

    page.goto(server.url + "/")
    image_path = os.path.join(demo_images, sorted(os.listdir(demo_images))[0])
    width, height = Image.open(image_path).size
    page.set_input_files("#file", image_path)
    page.wait_for_function("document.getElementById('canvas').dataset.ready === '1'")
    left, top, shown = page.evaluate(
        "(() => { const c = document.getElementById('canvas'), r = c.getBoundingClientRect();"
        " return [r.left + c.clientLeft, r.top + c.clientTop, c.clientWidth]; })()")
    assert (width, height, shown) == (256, 256, 256)  # a demo image, shown at its own size
    # Drag between whole CSS pixels (the canvas itself may sit at a fractional offset) from about
    # (64, 26) to (128, 153) over (90, 80); the page must send floor(v / 256 * 1000) of each corner.
    x1, y1, x2, y2 = math.ceil(left) + 64, math.ceil(top) + 26, math.ceil(left) + 128, math.ceil(top) + 153
    page.mouse.move(x1, y1)
    page.mouse.down()
    page.mouse.move(math.ceil(left) + 90, math.ceil(top) + 80, steps=3)
    page.mouse.move(x2, y2, steps=3)
    page.mouse.up()
    assert page.input_value("#task") == "RO"
    question = page.input_value("#question")
    grid = [math.floor((v - origin) / 256 * 1000) for v, origin in ((x1, left), (y1, top), (x2, left), (y2, top))]
    assert question == "What is the structure in <box>({},{}),({},{})</box>?".format(*grid)
    page.click("#ask")
    page.wait_for_function("document.getElementById('answer').dataset.done === '1'", timeout=120_000)
    assert page.inner_text("#answer") == SCRIPTED_ANSWER
