"""Neural models: autoencoder-based collective and multimodal representation learning."""

__all__ = []
