"""Med-GRIT construction: SA-Med2D image–mask pairs → VG / RO / GC / MII conversations.

Input is the SA-Med2D-20M layout (docs/ARCHITECTURE.md, "SA-Med2D layout"): ``images/<name>.png``,
``masks/<name>--<class>_<instance>.png``, the image → masks JSON and the class-id mapping JSON.
For every image the masks JSON lists:

1. each mask's tight bounding box (foreground = value > 0, pixel-exact, continuous corners as in
   :mod:`paddlemix.bird.boxes`) goes onto the [0, 1000) grid; its label comes from the class
   mapping (underscores read as spaces), its modality from the image name;
2. the image's regions become turns: VG (phrase → every box of that label), RO (box → name),
   GC (box → a sentence with name, position in the image, relative size and modality) and MII
   (whole image → the structures present with their boxes, largest first, at most
   ``max_mii_regions`` of them);
3. cases — ``(dataset, case)`` from the name — are split into train and test per modality, so no
   case is in both and every modality with at least two cases appears in test.

Outputs in ``out_dir``: ``train.json`` (one record per image and task, multi-turn: at most
``max_turns`` turns, a seeded random subset when the image offers more — or, for the tasks in
``split_tasks``, every turn, in as many records of at most ``max_turns`` turns as needed; one task
per record keeps ``task`` a canonical id and makes single-task subsets a filter away),
``test_{VG,RO,GC,MII}.json`` (single-turn records — seeded random phrases or regions —, by default
one per image and task so that ``id`` is the image stem as the release format and upstream
inference expect; ``test_questions`` > 1 asks up to that many different questions per image), and
``stats.json``. The k-th record of an image and task (k > 1) has the id ``<stem>--q<k>``. Records are
``{"id": stem, "image": "<stem>.png", "task", "conversations"}``; images are relative to
``<sa_root>/images``, so that folder is the ``image_root`` for the loader and for inference.

Every choice (template, turn order, which region a test record asks about, the split) comes from
``random.Random`` seeded with a SHA-256 of the seed and the image name or modality, so output does
not depend on processing order or ``PYTHONHASHSEED``.

Problems with the input are of two kinds. Structural errors (bad file names, a mask listed under
the wrong image, unknown class ids, missing or unreadable files, a mask whose size differs from
its image) raise :class:`ConstructionError` naming the file in strict mode and are skipped and
counted otherwise. Filters (empty masks, masks under ``min_mask_area`` pixels, a box shared by two
labels — RO/GC would have two right answers —, an image left without regions) are always
skipped and counted. ``stats.json`` lists every count and the first few messages per reason.

The optional rewrite step paraphrases GC and MII answers through an OpenAI-compatible
chat-completions endpoint and keeps a paraphrase only if its ``<ref>``/``<box>`` markup is
exactly the original's (in order); rewriting makes the output only as deterministic as the
endpoint.

One module per step: :mod:`~paddlemix.bird.construct.regions` (an image and its masks → regions,
and the skip log), :mod:`~paddlemix.bird.construct.split` (cases → train / test, and the seeded
RNG), :mod:`~paddlemix.bird.construct.conversations` (regions → turns → records),
:mod:`~paddlemix.bird.construct.paraphrase` (the rewrite client) and
:mod:`~paddlemix.bird.construct.build` (:func:`~paddlemix.bird.construct.build.build_medgrit`, the
whole run). The SA-Med2D names, indexes and masks themselves are :mod:`paddlemix.bird.samed2d`.
"""
