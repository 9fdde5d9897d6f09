"""BiRD on PaddlePaddle: a slim PaddleMIX fork for biomedical refer-and-ground models.

Importing this package is cheap on purpose: models, paddle and paddlenlp are imported only by
the modules that need them (``paddlemix.models.qwen_vl``, ``paddlemix.tools.*``).
"""

__version__ = "0.1.0"
