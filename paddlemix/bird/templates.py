"""Question and answer phrasings for the four tasks, and the words that fill them.

Every template is a ``str.format`` pattern. Slots: ``{phrase}`` a structure's name, ``{box}`` a
``<box>(x1,y1),(x2,y2)</box>`` region, ``{modality}`` the imaging modality in words, ``{position}``
and ``{size}`` from :func:`position_words` / :func:`size_words`, ``{percent}`` the region's share of
the image, ``{kind}`` "image" or "slice", ``{count}`` and ``{items}`` the MII listing. No template
puts an article before ``{modality}``: "a" or "an" would depend on how an acronym is spoken.

The RO answer is always the bare name (the RO metric wants every word of the reference inside the
response, so padding words would be scored too) and the VG answer is always the ``<ref>``/``<box>``
markup alone; only GC and MII answers have several phrasings.
"""

VG_QUESTIONS = (
    "Where is the {phrase} in this image?",
    "Locate the {phrase} in the image.",
    "Find the {phrase} and give its bounding box.",
    "Can you show me where the {phrase} is?",
    "Please ground the {phrase} in this {modality} {kind}.",
    "Which region contains the {phrase}? Answer with boxes.",
    "Give the location of every {phrase} visible here.",
    "Mark the {phrase} on this {modality} {kind}.",
)

RO_QUESTIONS = (
    "What is the structure in {box}?",
    "What does the region {box} show?",
    "Name the object inside {box}.",
    "Identify the anatomy or finding at {box}.",
    "What is located at {box} in this {modality} {kind}?",
    "Which structure occupies {box}? Answer with its name.",
    "Tell me what {box} contains.",
)

GC_QUESTIONS = (
    "Describe the region {box}.",
    "Give a short description of {box}.",
    "What can you tell me about the area {box}?",
    "Write one sentence about the region {box} in this {modality} {kind}.",
    "Please caption the region {box}.",
    "Explain what is shown in {box}.",
)

GC_ANSWERS = (
    "The region shows the {phrase}, a {size} structure in the {position} part of this {modality} {kind}, "
    "covering about {percent} of the image.",
    "This is the {phrase}. It lies in the {position} part of the {modality} {kind} and is {size}, "
    "about {percent} of the image area.",
    "In this {modality} {kind}, the marked area is the {phrase}: {size}, located in the {position} part, "
    "roughly {percent} of the image.",
    "The {phrase} appears here as a {size} region in the {position} part of the {kind} ({modality}), "
    "taking up about {percent} of the image.",
)

MII_QUESTIONS = (
    "Please analyse this image.",
    "What structures can you see in this {modality} {kind}? Give their locations.",
    "Describe this medical image and locate what it shows.",
    "Give a detailed analysis of this image with the position of each structure.",
    "What does this image contain? Please point out each finding.",
    "Analyse this {modality} {kind} and mark the visible structures.",
)

# ``{count}`` is "one structure", "3 structures" or "23 structures, of which the 10 largest are".
MII_SUMMARIES = (
    "This {modality} {kind} shows {count}: {items}.",
    "The {modality} {kind} contains {count}: {items}.",
    "In this {modality} {kind} we can see {count}: {items}.",
    "Annotated in this {modality} {kind} are {count}: {items}.",
)

MII_LARGEST = (
    "The largest is the {phrase}, in the {position} part of the image.",
    "The {phrase} is the most prominent, occupying the {position} part of the image.",
    "Most of the annotated area belongs to the {phrase}, which lies in the {position} part.",
)

MII_SINGLE = (
    "It lies in the {position} part of the image and covers about {percent} of it.",
    "The {phrase} is {size} and sits in the {position} part of the image.",
)

# Added to MII answers for slices cut from a 3D volume (names not ending in ``2d_none``).
MII_SLICE_NOTE = "The image is a 2D slice of a 3D {modality} volume."

# Modality prefixes of SA-Med2D names, in words.
MODALITY_WORDS = {
    "ct": "CT",
    "mr": "MR",
    "x": "X-ray",
    "pet": "PET",
    "endoscopy": "endoscopy",
    "dermoscopy": "dermoscopy",
    "fundus": "fundus",
    "ultrasound": "ultrasound",
}

# Thresholds on the share of the image a structure covers: below 2% small, below 10% medium.
SIZE_THRESHOLDS = ((0.02, "small"), (0.10, "medium-sized"))
LARGE = "large"

_VERTICAL = ("upper", "middle", "lower")
_HORIZONTAL = ("left", "middle", "right")


def modality_words(modality_sub: str) -> str:
    """``ct_00`` → ``CT``, ``mr_t1`` → ``T1 MR``, ``x_ray`` → ``X-ray``; other prefixes as written.

    Only MR carries its sequence in the second part of the name; elsewhere the suffix is an index
    or a repeat of the modality (``x_ray``) and is dropped.
    """
    base, _, sub = modality_sub.lower().partition("_")
    words = MODALITY_WORDS.get(base, base)
    if base == "mr" and sub and not sub.isdigit():
        return f"{sub.upper()} MR"
    return words


def position_words(center_x: float, center_y: float) -> str:
    """Where a point lies in the image, in thirds: ``upper left`` … ``centre`` … ``lower right``.

    ``center_x`` / ``center_y`` are fractions of width and height. These are image directions,
    not anatomical ones (radiological images show the patient's right on the image's left).
    """
    v = _VERTICAL[min(2, int(center_y * 3))]
    h = _HORIZONTAL[min(2, int(center_x * 3))]
    if v == "middle":
        return "central" if h == "middle" else f"middle {h}"
    if h == "middle":
        return f"{v} middle"
    return f"{v} {h}"


def size_words(fraction: float) -> str:
    """A structure's share of the image area in words (see ``SIZE_THRESHOLDS``)."""
    for limit, word in SIZE_THRESHOLDS:
        if fraction < limit:
            return word
    return LARGE


def percent_words(fraction: float) -> str:
    """``0.1234`` → ``12%``, ``0.0163`` → ``1.6%``; one decimal below 10% (so a "small" 1.6% never
    reads as "2%", the small/medium threshold) and never ``0%``."""
    pct = fraction * 100
    if pct < 10:
        return f"{max(pct, 0.1):.1f}%"
    return f"{round(pct)}%"


def count_words(shown: int, total: int) -> str:
    """The ``{count}`` slot of ``MII_SUMMARIES``."""
    if shown < total:
        return f"{total} structures, of which the {shown} largest are"
    return "one structure" if total == 1 else f"{total} structures"

