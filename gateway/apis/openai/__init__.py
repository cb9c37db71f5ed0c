"""OpenAI's chat/completions, completions, models and embeddings."""
