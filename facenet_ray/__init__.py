"""facenet_ray: distributed face search over person folders, on Ray."""

__version__ = "0.1.0"
