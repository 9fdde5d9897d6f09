"""The four BiRD tasks and the SA-Med2D naming facts every stage agrees on."""

import os

# Task ids as the upstream test files name them.
VG = "VG"  # visual grounding: phrase -> box(es)
RO = "RO"  # referring object classification: box -> name
GC = "GC"  # grounded (referring) captioning: box -> sentence
MII = "MII"  # medical image analysis: whole image -> analysis
TASKS = (VG, RO, GC, MII)  # the Med-GRIT tasks: what data construction and loading know
QA = "QA"  # free-text answers on LLaVA-Med's QA set: scored like MII, not a Med-GRIT task
SCORED_TASKS = TASKS + (QA,)  # what the evaluator scores

# SA-Med2D modality prefixes; any other prefix is kept as its own modality.
KNOWN_MODALITIES = ("ct", "mr", "x", "pet", "endoscopy", "dermoscopy", "fundus", "ultrasound")


def modality_of(image: str) -> str:
    """The modality of an SA-Med2D image path: the file name's prefix before the first ``_``.

    ``.../ct_00--AbdomenCT1K--Case_0001--z_0044.png`` → ``ct``. A name without ``_`` is its own
    modality (its stem), so nothing is dropped.
    """
    name = os.path.basename(str(image))
    stem = name.split("_", 1)[0] if "_" in name else os.path.splitext(name)[0]
    return stem.lower()


def check_task(task: str, where: str = "", allowed=SCORED_TASKS) -> str:
    """Return the canonical task id or raise naming where the bad value came from."""
    canonical = str(task).upper()
    if canonical not in allowed:
        prefix = f"{where}: " if where else ""
        raise ValueError(f"{prefix}unknown task {task!r}; expected one of {', '.join(allowed)}")
    return canonical
