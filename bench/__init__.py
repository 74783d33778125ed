"""Benchmarks of facenet_ray (run as modules: `python -m bench.accuracy --dataset DIR`)."""
