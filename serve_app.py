"""The gateway as a Serve application: `serve run serve_app:app` (the service's actors must be
running: `facenet-ray up` starts them). Settings come from `FACENET_*` environment variables,
or from a Serve config's `args`, which `facenet_ray.gateway.build_app` takes as overrides."""

from facenet_ray.gateway import build_app

app = build_app({})
