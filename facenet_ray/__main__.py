"""`python -m facenet_ray` is the `facenet-ray` command."""

import sys

from facenet_ray.cli import main

sys.exit(main())
