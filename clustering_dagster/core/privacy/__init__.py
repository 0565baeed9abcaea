"""Privacy: personal data scrubbed from texts (`scrub`) and small clusters kept out of view."""
