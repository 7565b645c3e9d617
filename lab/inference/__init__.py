"""Running models: loading, the shared session manager, streaming generation, adapters, the Arena and the Runtime."""
