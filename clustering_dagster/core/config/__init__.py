"""Where things live, the run configurations and the operations settings, validated."""
