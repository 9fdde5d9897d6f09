"""BiRD's task logic: boxes in text, the four tasks, data construction, metrics, reports.

It also holds the data contracts every layer above shares: the Med-GRIT image tag
(:mod:`~paddlemix.bird.image_tag`), the SA-Med2D layout (:mod:`~paddlemix.bird.samed2d`), image → RGB
(:mod:`~paddlemix.bird.images`), prediction records (:mod:`~paddlemix.bird.predictions`) and atomic
JSON writing (:mod:`~paddlemix.bird.jsonio`). Nothing under this package imports paddle, paddlenlp or
a higher layer of paddlemix (processors, datasets, models, serving, tools), so evaluation runs with
numpy alone.
"""
