"""The LLM client: litellm with a cache, limits, retries and structured-output negotiation."""
