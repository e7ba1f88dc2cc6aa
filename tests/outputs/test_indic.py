"""The nine Indic scripts on the screen (docs/scripts.md): each drawn with its Debian font,
found by the font chain without being configured; shaped by raqm (conjuncts, reph, vowel
signs drawn before their consonant) with no missing-glyph boxes and no dotted circles;
fitted into the caption row (nothing clipped); and rendered through the HDMI output into a
real framebuffer-format file, compared with the reference PNGs in docs/images
(EDGECAP_UPDATE_IMAGES=1 writes them again). A script whose font package is not installed
is skipped with the package to install."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from edgecap.captions.events import CaptionLine
from edgecap.outputs import fonts as fontmod
from edgecap.outputs.fonts import ROOM, SCRIPTS, FontChain, Script, find_font, fit, script_fonts
from edgecap.outputs.framebuffer import read_geometry, screenshot
from edgecap.outputs.hdmi import BASELINE, LINE_HEIGHT, HdmiOutput
from tests.conftest import REPO
from tests.outputs.test_framebuffer import fake_fb

IMAGES = REPO / "docs" / "images"
LATIN = "DejaVuSans.ttf"
CONFIGURED = (LATIN, "Lohit-Devanagari.ttf")  # as [hdmi] fonts names them; the rest is found
SIZE = 48
BY_NAME = {s.name: s for s in SCRIPTS}

needs_raqm = pytest.mark.skipif(not fontmod.HAVE_RAQM, reason="Pillow without raqm: no shaping")
pytestmark = pytest.mark.skipif(
    find_font(LATIN) is None, reason=f"{LATIN} missing (fonts-dejavu-core): the chain's first font"
)


class Case(NamedTuple):
    script: str
    text: str  # a caption in the script
    conjuncts: tuple[str, ...]  # consonant + virama + consonant that join into one form
    prebase: str  # consonant + a vowel sign drawn before it ("" when the script has none)


CASES = (
    Case("Devanagari", "नमस्ते, कार्यक्रम में स्वागत है।", ("क्ष", "र्क", "द्व", "श्र"), "कि"),
    Case("Bengali", "সবাইকে শুভ সকাল, স্বাগতম।", ("ক্ষ", "র্ক", "স্ব"), "কে"),
    Case("Gurmukhi", "ਸਭ ਨੂੰ ਸਤ ਸ੍ਰੀ ਅਕਾਲ, ਜੀ ਆਇਆਂ ਨੂੰ।", ("ਪ੍ਰ", "ਸ੍ਵ"), "ਕਿ"),
    Case("Gujarati", "સૌને નમસ્તે, સભામાં સ્વાગત છે.", ("ક્ષ", "ર્ક", "સ્વ"), "કિ"),
    Case("Odia", "ସମସ୍ତଙ୍କୁ ନମସ୍କାର, ସ୍ୱାଗତ।", ("କ୍ଷ", "ସ୍ତ", "ପ୍ର"), "କେ"),
    Case("Tamil", "அனைவருக்கும் வணக்கம், வரவேற்கிறோம்.", ("க்ஷ",), "கெ"),
    Case("Telugu", "అందరికీ నమస్కారం, స్వాగతం.", ("క్క", "స్వ", "ప్ర"), ""),
    Case("Kannada", "ಎಲ್ಲರಿಗೂ ನಮಸ್ಕಾರ, ಸ್ವಾಗತ.", ("ಕ್ಕ", "ಸ್ವ", "ಪ್ರ"), ""),
    Case("Malayalam", "എല്ലാവർക്കും നമസ്കാരം, സ്വാഗതം.", ("ക്ക", "ന്ന", "സ്വ"), "കെ"),
)
IDS = [c.script for c in CASES]


def script_font_or_skip(script: Script) -> Path:
    path = {s.name: p for s, p in script_fonts()}[script.name]
    if path is None:
        pytest.skip(f"{script.name}: no font ({script.package} not installed)")
    return path


def indic(text: str) -> str:
    return "".join(ch for ch in text if fontmod.script_of(ch) is not None)


def draw_mask(chain: FontChain, text: str, size: int = SIZE) -> np.ndarray:
    """``text`` drawn by the chain, white on black, as booleans (ink)."""
    width = max(8, chain.width(text) + 2 * size)
    img = Image.new("L", (width, 3 * size))
    chain.draw(ImageDraw.Draw(img), size, 2 * size, text, 255)
    return np.asarray(img) > 127


def glyph_mask(font: ImageFont.FreeTypeFont, text: str) -> np.ndarray:
    """``text`` in one font, cropped to its ink."""
    img = Image.new("L", (int(font.getlength(text)) + 4 * font.size, 3 * font.size))
    ImageDraw.Draw(img).text((font.size, 2 * font.size), text, font=font, fill=255, anchor="ls")
    ink = np.asarray(img) > 127
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    return ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def joined(font: ImageFont.FreeTypeFont, cluster: str, virama: str) -> bool:
    """``cluster`` (consonant, virama, consonant) is drawn otherwise than its consonant
    with a visible virama followed by the next one: a conjunct (or a ligature) formed."""
    head, tail = cluster.split(virama, 1)
    size = font.size
    whole = Image.new(
        "L", (int(font.getlength(cluster) + font.getlength(tail)) + 4 * size, 3 * size)
    )
    apart = whole.copy()
    ImageDraw.Draw(whole).text((size, 2 * size), cluster, font=font, fill=255, anchor="ls")
    draw = ImageDraw.Draw(apart)
    draw.text((size, 2 * size), head + virama, font=font, fill=255, anchor="ls")
    x = size + font.getlength(head + virama)
    draw.text((x, 2 * size), tail, font=font, fill=255, anchor="ls")
    a, b = np.asarray(whole) > 127, np.asarray(apart) > 127
    return (a != b).sum() > 0.1 * max(a.sum(), b.sum())


def find(template: np.ndarray, image: np.ndarray, ink: float = 0.8, clear: float = 0.9) -> list:
    """Where ``template`` appears in ``image``: (y, x) of every placement where at least
    ``ink`` of its ink pixels are ink and ``clear`` of its empty pixels empty."""
    h, w = template.shape
    if image.shape[0] < h or image.shape[1] < w:
        return []
    out_h, out_w = image.shape[0] - h + 1, image.shape[1] - w + 1
    hits, blanks = np.zeros((out_h, out_w), np.int32), np.zeros((out_h, out_w), np.int32)
    for y, x in zip(*np.nonzero(template), strict=True):
        hits += image[y : y + out_h, x : x + out_w]
    for y, x in zip(*np.nonzero(~template), strict=True):
        blanks += ~image[y : y + out_h, x : x + out_w]
    ok = (hits >= ink * template.sum()) & (blanks >= clear * (~template).sum())
    return list(zip(*np.nonzero(ok), strict=True))


# --- the font chain -----------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_each_script_is_drawn_with_its_debian_font_unconfigured(case):
    script = BY_NAME[case.script]
    path = script_font_or_skip(script)
    chain = FontChain((LATIN,), SIZE)
    used = {chain.paths[chain.font_for(ch)] for ch in indic(case.text)}
    assert used == {path}, f"{case.script} drawn with {used}, not {path.name}"
    assert path.name == script.files[0]  # Lohit, what `make deps` / `make install` bring
    assert chain.missing == [] and chain.font_for("A") == 0  # Latin stays in DejaVu


def test_a_font_of_the_chain_that_has_the_script_comes_first(tmp_path):
    tamil = BY_NAME["Tamil"]
    path = script_font_or_skip(tamil)
    chain = FontChain((LATIN, str(path)), SIZE)
    assert chain.font_for("க") == 1 and len(chain.fonts) == 2  # nothing added
    # without script fonts (or none installed) Tamil has no font: a box from the first
    bare = FontChain((LATIN,), SIZE, script_fonts=False)
    assert bare.font_for("க") == 0 and len(bare.fonts) == 1
    elsewhere = FontChain((str(find_font(LATIN)),), SIZE, dirs=[tmp_path])
    assert elsewhere.font_for("க") == 0 and elsewhere.script_font(tamil) is None
    assert all(p is None for _s, p in script_fonts([tmp_path]))


def test_dandas_stay_with_their_script_and_a_sliver_of_a_space_is_not_used():
    for name in ("Bengali", "Odia"):
        script_font_or_skip(BY_NAME[name])
    chain = FontChain(CONFIGURED, SIZE)
    bengali = chain.font_for("স")
    assert chain.runs("সকাল। আজ") == [(bengali, "সকাল। আজ")]  # not Devanagari's danda
    assert chain.runs("। আজ")[0] == (1, "। ")  # a line's first danda: the chain's first
    odia = chain.line("ସମସ୍ତଙ୍କୁ ନମସ୍କାର। ସ୍ୱାଗତ")
    assert chain.fonts[chain.font_for("ସ")].getlength(" ") < 0.2 * SIZE  # Lohit Odia's
    spaces = [p for p in odia.pieces if p.text == " "]
    assert len(spaces) == 2 and {p.font for p in spaces} == {0}  # DejaVu's space
    words = [p.text for p in odia.pieces if p.text != " "]
    assert words == ["ସମସ୍ତଙ୍କୁ", "ନମସ୍କାର।", "ସ୍ୱାଗତ"]
    gap = odia.pieces[1].width
    assert gap > 0.25 * SIZE


# --- shaping ------------------------------------------------------------------------------


@needs_raqm
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_no_missing_glyphs_and_no_dotted_circles(case):
    script_font_or_skip(BY_NAME[case.script])
    chain = FontChain((LATIN,), SIZE)
    index = chain.font_for(indic(case.text)[0])
    font = chain.fonts[index]
    notdef = glyph_mask(font, "\U0010fffd")  # a code point no font has: its box
    for ch in sorted(set(indic(case.text))):
        if ch.isprintable() and not ch.isspace():
            assert not np.array_equal(glyph_mask(font, ch), notdef), f"{ch!r} is a box"
    drawn = draw_mask(chain, case.text)
    assert drawn.sum() > 500
    assert not find(glyph_mask(font, "\u25cc"), drawn), "a dotted circle: a broken cluster"


@needs_raqm
def test_the_dotted_circle_finder_finds_one():
    """The check above can fail: a vowel sign with no consonant before it is a broken
    cluster, which HarfBuzz draws on a dotted circle."""
    script_font_or_skip(BY_NAME["Devanagari"])
    chain = FontChain(CONFIGURED, SIZE)
    circle = glyph_mask(chain.fonts[chain.font_for("क")], "\u25cc")
    assert len(find(circle, draw_mask(chain, "नमस्ते ि नमस्ते"))) >= 1
    assert not find(circle, draw_mask(chain, "नमस्ते कि नमस्ते"))


@needs_raqm
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_raqm_shapes_conjuncts_and_reorders_vowel_signs(case, monkeypatch):
    script = BY_NAME[case.script]
    script_font_or_skip(script)
    chain = FontChain((LATIN,), SIZE)
    font = chain.fonts[chain.font_for(case.conjuncts[0][0])]
    virama = chr(script.first + 0x4D)
    for cluster in case.conjuncts:  # not the first consonant with its virama, then the next
        assert joined(font, cluster, virama), f"{cluster} is not a conjunct"
    if case.script == "Tamil":  # Tamil writes most clusters with a visible virama
        assert not joined(font, "க்க", virama)
    if case.prebase:
        assert prebase_shift(chain, font, case.prebase) > 0.15 * SIZE, (
            f"the vowel sign of {case.prebase} is not before its consonant"
        )
    # without raqm: other pixels, and the checks above fail
    monkeypatch.setattr(fontmod, "RAQM", ImageFont.Layout.BASIC)
    basic = FontChain((LATIN,), SIZE)
    shaped, unshaped = draw_mask(chain, case.text), draw_mask(basic, case.text)
    width = min(shaped.shape[1], unshaped.shape[1])
    assert (shaped[:, :width] != unshaped[:, :width]).sum() > 300
    flat = basic.fonts[basic.font_for(case.conjuncts[0][0])]
    assert not any(joined(flat, cluster, virama) for cluster in case.conjuncts)
    if case.prebase:
        assert prebase_shift(basic, flat, case.prebase) < 0.15 * SIZE


def prebase_shift(chain: FontChain, font: ImageFont.FreeTypeFont, syllable: str) -> int:
    """How far right of the syllable's left edge its consonant is drawn: the width of a
    vowel sign drawn before it, or about 0."""
    drawn = draw_mask(chain, syllable)
    where = find(glyph_mask(font, syllable[0]), drawn, ink=0.95, clear=0.0)
    assert where, f"{syllable[0]} not found in {syllable}"
    return min(x for _y, x in where) - np.flatnonzero(drawn.any(axis=0))[0]


# --- fitted into a caption row ------------------------------------------------------------


def test_fit_raises_then_shrinks():
    assert fit((0.9, 0.3), ROOM) == (1.0, 0.0)
    scale, lift = fit((0.8, 0.45), ROOM)  # deep: raised, not shrunk
    assert scale == 1.0 and 0.07 <= lift <= 0.12
    scale, lift = fit((0.78, 0.6), ROOM)  # deeper than a raise can fix
    assert 0.8 <= scale < 0.9 and lift == pytest.approx(0.12, abs=0.01)
    scale, lift = fit((1.15, 0.1), ROOM)  # tall: lowered
    assert scale == 1.0 and lift < 0
    assert (BASELINE, pytest.approx(LINE_HEIGHT - BASELINE)) == ROOM  # the HDMI slot


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_the_tallest_forms_fit_the_caption_row(case):
    script = BY_NAME[case.script]
    script_font_or_skip(script)
    size = 40
    chain = FontChain(CONFIGURED, size)
    top, slot = round(size * BASELINE), round(size * LINE_HEIGHT)
    text = script.tall + " " + case.text
    img = Image.new("L", (chain.width(text) + 20, 3 * slot))
    chain.draw(ImageDraw.Draw(img), 10, slot + top, text, 255)
    rows = np.flatnonzero((np.asarray(img) > 60).any(axis=1))
    assert rows.min() >= slot and rows.max() < 2 * slot, f"{case.script} leaves its row"
    index = chain.font_for(script.tall[0])
    if case.script in ("Devanagari", "Bengali", "Tamil"):  # they fit as they are
        assert chain.fonts[index].size == size and chain.raise_px[index] == 0
    if case.script == "Kannada":  # Lohit Kannada's conjuncts hang deep: raised, smaller
        assert chain.fonts[index].size < size and chain.raise_px[index] > 0


# --- reference images from the framebuffer ------------------------------------------------

NINE = (
    ("hi", "Hindi: नमस्ते, बैठक में आपका स्वागत है।"),
    ("bn", "Bengali: সবাইকে শুভ সকাল, স্বাগতম।"),
    ("pa", "Punjabi: ਸਭ ਨੂੰ ਸਤ ਸ੍ਰੀ ਅਕਾਲ, ਜੀ ਆਇਆਂ ਨੂੰ।"),
    ("gu", "Gujarati: સૌને નમસ્તે, સભામાં સ્વાગત છે."),
    ("or", "Odia: ସମସ୍ତଙ୍କୁ ନମସ୍କାର, ସ୍ୱାଗତ।"),
    ("ta", "Tamil: அனைவருக்கும் வணக்கம், வரவேற்கிறோம்."),
    ("te", "Telugu: అందరికీ నమస్కారం, స్వాగతం."),
    ("kn", "Kannada: ಎಲ್ಲರಿಗೂ ನಮಸ್ಕಾರ, ಸ್ವಾಗತ."),
    ("ml", "Malayalam: എല്ലാവർക്കും നമസ്കാരം, സ്വാഗതം."),
)
REFERENCES = {
    # name: (script names, captions, font size; 0 = the screen's own)
    "hdmi-indic-nine-scripts-1280x720.png": (tuple(s.name for s in SCRIPTS), NINE, 0),
    "hdmi-indic-devanagari-1280x720.png": (
        ("Devanagari",),
        (
            ("hi", "नमस्ते, आज की बैठक में स्वागत है।"),
            ("hi", "कार्यक्रम में क्षेत्र के विकास पर चर्चा होगी।"),
            ("hi", "अध्यक्ष श्री कृष्ण द्विवेदी बोलेंगे।"),
            ("hi", "बैठक 2 बजे, Soniox से अनुवाद"),
        ),
        60,
    ),
    "hdmi-indic-bengali-1280x720.png": (
        ("Bengali",),
        (
            ("bn", "সবাইকে শুভ সকাল।"),
            ("bn", "আজকের সভায় আপনাদের স্বাগতম।"),
            ("bn", "কর্মসূচিতে শিক্ষা ও স্বাস্থ্য নিয়ে আলোচনা হবে।"),
            ("bn", "সভা শুরু 2টায়, Sarvam অনুবাদ"),
        ),
        60,
    ),
    "hdmi-indic-tamil-1280x720.png": (
        ("Tamil",),
        (
            ("ta", "அனைவருக்கும் வணக்கம்."),
            ("ta", "இன்றைய கூட்டத்திற்கு வரவேற்கிறோம்."),
            ("ta", "கல்வி மற்றும் சுகாதாரம் பற்றி பேசுவோம்."),
            ("ta", "2 மணிக்கு, Sarvam மொழிபெயர்ப்பு"),
        ),
        60,
    ),
}


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_reference_image_from_the_framebuffer(name, tmp_path):
    scripts, captions, font_size = REFERENCES[name]
    for script in scripts:
        script_font_or_skip(BY_NAME[script])
    dev = fake_fb(tmp_path, 1280, 720, 32)
    clock = [1000.0]
    out = HdmiOutput(
        dev,
        tmp_path / "sys",
        fonts=CONFIGURED,
        show="original",
        lines=len(captions),
        font_size=font_size,
        clock=lambda: clock[0],
    )
    out.open()
    try:
        for seq, (lang, text) in enumerate(captions, 1):
            out.handle(CaptionLine(seq, text, None, lang, None, None, True, True))
        clock[0] += 1
        out.idle(0)
        assert out.rows == len(captions)
        for caption in captions:  # one row each: nothing wrapped away
            assert out.fonts.width(caption[1]) <= out.text_width
        img = screenshot(read_geometry(dev, tmp_path / "sys"))
    finally:
        out.close()
    compare(img, name, tmp_path)


def compare(img: np.ndarray, name: str, tmp_path: Path) -> None:
    """At most 0.5 % of the text pixels may differ from docs/images/<name> (another
    FreeType's antialiasing; no room for a glyph or a position that changed)."""
    path = IMAGES / name
    if os.environ.get("EDGECAP_UPDATE_IMAGES") == "1":
        grey = (img == img[..., :1]).all()  # white on black: one channel says it all
        Image.fromarray(img[..., 0] if grey else img).save(path, optimize=True)
        return
    assert path.exists(), f"{path} missing: run with EDGECAP_UPDATE_IMAGES=1 and look at it"
    ref = np.asarray(Image.open(path).convert("RGB"))
    assert ref.shape == img.shape, f"{name}: {img.shape} rendered, {ref.shape} in the reference"
    ink = (ref.max(axis=-1) > 40) | (img.max(axis=-1) > 40)
    differ = np.abs(ref.astype(int) - img.astype(int)).max(axis=-1) > 48
    assert ink.sum() > 5000
    share = differ.sum() / ink.sum()
    if share > 0.005:
        Image.fromarray(img).save(tmp_path / name)
    assert share <= 0.005, f"{name}: {share:.1%} of text pixels differ; see {tmp_path / name}"
