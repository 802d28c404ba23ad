"""The application layer: use cases over the adapters, driven by the web layer."""
