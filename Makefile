# Two commands for a newcomer: `make run` (set up + start on the built-in defaults) and
# `make test` (set up + run the whole suite). Everything else here serves those two.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
GALLERY ?= tests/data/faces

.PHONY: setup run test lint bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	# face_recognition pins the source-only `dlib` (15+ min compile); dlib-bin provides it.
	$(BIN)/python -m pip install -q --no-deps face_recognition==1.3.0
	touch $(STAMP)

setup: $(STAMP)

# The sample gallery is copied first: the service's source gallery is its system of record
# (photos added through the API land there), and the repository's test data must stay as is.
run: setup
	mkdir -p facenet-data
	test -d facenet-data/sample-gallery || cp -r $(GALLERY) facenet-data/sample-gallery
	$(BIN)/facenet-ray up --gallery facenet-data/sample-gallery \
		--try $(GALLERY)/Joseph_Biden/biden.jpg

test: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: setup
	$(BIN)/ruff check facenet_ray tests bench serve_app.py

# The peers (deepface) and the plot come with the `bench` extra, never with the product.
$(VENV)/.bench-stamp: $(STAMP)
	$(BIN)/python -m pip install -q -e ".[dev,bench]"
	touch $@

bench: $(VENV)/.bench-stamp
	$(BIN)/python -m bench all --dataset $(or $(DATASET),../shared/datasets/lfw-dev)

clean:
	rm -rf $(VENV) facenet-data
