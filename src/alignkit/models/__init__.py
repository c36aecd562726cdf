"""Model loading: the embedded default (GGUF -> cached plain checkpoint), any local/hub model, LoRA."""
