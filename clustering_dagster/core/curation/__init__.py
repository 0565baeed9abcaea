"""Curation: people's edits of a partition's tree (rename, merge, move, move texts, split, tag,
flag, undo), kept as rows apart from the machine's results and applied over them on every read,
again after every re-clustering (stable cluster ids carry them), with the edits that no longer
fit listed as needing attention."""
