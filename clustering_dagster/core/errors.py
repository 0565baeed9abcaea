class InputError(ValueError):
    """Bad user input (a dataset file or a run configuration), with a message that names the culprit."""
