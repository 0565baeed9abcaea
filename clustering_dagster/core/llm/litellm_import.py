"""Import litellm without its start-up download of the model price map (there is no network)."""

import os


def import_litellm():
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    return litellm
