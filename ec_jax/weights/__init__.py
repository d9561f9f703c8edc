"""Weight readers (GGUF, Hugging Face safetensors, Orbax) and the embedded-model registry."""
